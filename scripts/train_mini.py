"""Reproduce socioseg-mini from scratch with socioseg's own commands (``make mini``).

Steps (each skipped when its output is already there, so an interrupted run continues;
``--fresh`` starts over):

1. ``socioseg synth``: training cities (seed S) and held-out test cities (seed S + 1000,
   never used for training), 256 px tiles;
2. the untrained models (:mod:`socioseg.models.builders`): a ~4M-parameter Qwen2.5-VL and a
   ~2M SAM2;
3. ``socioseg train-sam`` (configs/mini_sam.yaml), in a second process (log in
   ``<out>/sam.log``) while
4. ``socioseg sft`` (configs/mini_sft.yaml), the warm-up on teacher answers, runs here: the two
   are independent, one core each;
5. ``socioseg train`` (configs/mini_grpo.yaml): GRPO on both stages, in ``--grpo-procs``
   processes (``torchrun``, gloo: the batch is split over the cores);
6. the policy to ship is chosen on the validation split of the training cities (150 samples,
   two-stage, greedy): the warm-up or its last GRPO checkpoint, whichever has the higher final
   gIoU; it and the SAM folder are exported to ``--ship`` (by default the package's
   ``socioseg/assets/mini``), weights only;
7. ``socioseg eval`` on the held-out test split: two-stage, stage 1 only and single-stage for
   both policies (warm-up, warm-up + GRPO); the tables go to ``<out>/results.md``.

Every step takes the seed, so a run is deterministic for a seed on a given machine.
See docs/mini.md for the time budget.

    python scripts/train_mini.py --out runs/mini --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from socioseg.cli import main as socioseg
from socioseg.models.builders import build_mini_sam, build_mini_vlm
from socioseg.models.sources import MINI_DIR

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TEST_SEED_OFFSET = 1000
SELECT_SAMPLES = 150  # validation samples that choose the shipped policy
# Checkpoint files that are training state, not the model.
_NOT_SHIPPED = (
    "optimizer.pt",
    "trainer_state.json",
    "complete.json",
    "config.yaml",
    "training.json",
    "metrics.csv",
    "validation.csv",
)


def run(*argv: str) -> None:
    print("$ socioseg " + " ".join(argv), flush=True)
    started = time.perf_counter()
    code = socioseg(list(argv))
    if code:
        sys.exit(f"socioseg {argv[0]} failed with exit code {code}")
    print(f"  ({time.perf_counter() - started:.0f}s)", flush=True)


def launch(argv: list[str], log: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` (a command line) in its own process, one thread, output to ``log``."""
    print("$ " + " ".join(argv) + (f" > {log}" if log else ""), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = open(log, "w") if log else None  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT if log else None, env=env)


def wait(job: subprocess.Popen | None, what: str) -> None:
    if job is not None and job.wait():
        sys.exit(f"{what} failed with exit code {job.returncode}")


def export(checkpoint: Path, dest: Path) -> None:
    """Copy the model files of ``checkpoint`` (no optimizer or RNG state) to ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for file in checkpoint.iterdir():
        if file.is_file() and file.name not in _NOT_SHIPPED and not file.name.startswith("rng-"):
            shutil.copy2(file, dest / file.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/mini"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=400, help="30%% become the test split")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grpo-procs", type=int, default=2, help="GRPO processes (cores)")
    parser.add_argument("--ship", type=Path, default=MINI_DIR, help="where the models go")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument("overrides", nargs="*", help="step:field=value, e.g. sft:steps=50")
    args = parser.parse_args()
    out, seed = args.out, str(args.seed)
    import torch

    torch.set_num_threads(1)  # the warm-up here, SAM2 in its own process: one core each
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    extra = {"sam": [], "sft": [], "grpo": []}
    for item in args.overrides:
        step, _, override = item.partition(":")
        extra[step].append(override)
    started = time.perf_counter()
    data, test = out / "data" / "train", out / "data" / "test"
    size = ["--size", "256", "--workers", str(args.workers)]
    if not (data / "levels.json").is_file():
        run("synth", str(data), "--n", str(args.train_samples), "--seed", seed, *size)
    if not (test / "levels.json").is_file():
        test_seed = str(args.seed + TEST_SEED_OFFSET)
        run("synth", str(test), "--n", str(args.test_samples), "--seed", test_seed, *size)
    base = out / "base"
    if not (base / "sam" / "config.json").is_file():
        build_mini_vlm(base / "vlm", seed=args.seed)
        build_mini_sam(base / "sam", seed=args.seed)
    sam, sft, grpo = out / "sam", out / "sft", out / "grpo"
    common = [f"data={data}", f"seed={seed}"]
    cli = [sys.executable, "-m", "socioseg.cli"]
    sam_job = None
    if not (sam / "config.json").is_file():
        sam_job = launch([*cli, "train-sam", "--config", str(CONFIGS / "mini_sam.yaml"),
                          "--out", str(sam), "--overwrite", f"sam={base / 'sam'}", *common,
                          *extra["sam"]], out / "sam.log")  # fmt: skip
    if not (sft / "config.json").is_file():
        run("sft", "--config", str(CONFIGS / "mini_sft.yaml"), "--out", str(sft), "--overwrite",
            f"vlm={base / 'vlm'}", *common, *extra["sft"])  # fmt: skip
    wait(sam_job, "socioseg train-sam")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    procs = [*torchrun, f"--nproc-per-node={args.grpo_procs}", "-m", "socioseg.cli"]
    grpo_job = launch([*(procs if args.grpo_procs > 1 else cli), "train", "--config",
                       str(CONFIGS / "mini_grpo.yaml"), "--out", str(grpo), "--resume",
                       f"model.vlm={sft}", f"model.sam={sam}", f"data.train={data}",
                       f"data.val={data}", f"seed={seed}", *extra["grpo"]])  # fmt: skip
    wait(grpo_job, "socioseg train")
    last = max(grpo.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    # Which policy ships: the warm-up or warm-up + GRPO, whichever scores the higher final gIoU
    # on the validation split of the training cities (never the test cities of the tables).
    policies = {"warmup": sft, "grpo": last}
    validation = {}
    for name, vlm in policies.items():
        folder = out / "select" / name
        run("eval", "--data", str(data), "--split", "val", "--limit", str(SELECT_SAMPLES),
            "--out", str(folder), "--vlm", str(vlm), "--sam", str(sam), "--greedy")  # fmt: skip
        metrics = json.loads((folder / "metrics.json").read_text())
        validation[name] = metrics["metrics"]["final"]["all"]["gIoU"]
    chosen = max(validation, key=lambda name: validation[name])  # a tie keeps the warm-up
    print(f"validation gIoU: {validation}; shipping the {chosen} policy", flush=True)
    export(policies[chosen], args.ship / "vlm")
    export(sam, args.ship / "sam")
    results = []
    for name, vlm in policies.items():
        for mode in ("two-stage", "stage1", "single-stage"):
            folder = out / "eval" / f"{name}-{mode}"
            run("eval", "--data", str(test), "--split", "test", "--out", str(folder),
                "--vlm", str(vlm), "--sam", str(args.ship / "sam"), "--mode", mode,
                "--greedy")  # fmt: skip
            metrics = json.loads((folder / "metrics.json").read_text())
            results.append((f"{name}-{mode}", metrics))
    write_results(out / "results.md", results, validation, chosen)
    print(f"done in {(time.perf_counter() - started) / 60:.0f} min", flush=True)


def write_results(
    path: Path, results: list[tuple[str, dict]], validation: dict[str, float], chosen: str
) -> None:
    from socioseg.eval.report import results_table

    parts = [
        "# socioseg-mini on held-out synthetic cities\n",
        f"Shipped policy: {chosen} (validation final gIoU "
        + ", ".join(f"{k} {100 * v:.1f}" for k, v in validation.items())
        + ").\n",
    ]
    for name, metrics in results:
        parts += [f"## {name}\n", results_table(metrics), ""]
    path.write_text("\n".join(parts) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
