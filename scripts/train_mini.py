"""Reproduce socioseg-mini from scratch with socioseg's own commands (``make mini``).

A gated curriculum (docs/mini.md). Each step is skipped when its output is already there, and
each long one continues where a kill stopped it: run the same command again (``--fresh``
starts over). A gate that fails stops the run with its numbers.

1. data (``socioseg synth``, 256 px tiles): training tiles whose entities sit on random blocks,
   five questions each (seed S; the same tiles with their own question only for GRPO), and
   held-out test tiles (seed S + 1000, never trained on), randomly placed and with the
   default placement;
2. SAM2 (``socioseg train-sam``, configs/mini_sam.yaml) from the untrained mini SAM2, on the
   satellite image in the policy's VLM frame, in a second process (log ``<out>/sam.log``)
   while phase A runs: the two are independent, one core each;
3. phase A (``scripts/gate_a.py``): the untrained mini policy on 1-4 coloured squares with the
   position and attention labels, until gate A (greedy target IoU > 0.5 on at least half of 48
   held-out 3-square questions);
4. phase B (``socioseg sft``, configs/mini_phase_b.yaml): stage 1 on the training tiles (class
   and function queries, names with a kind word), with the image-token labels; then phase B2
   (configs/mini_phase_b2.yaml): the same at a lower learning rate, with the labels at the
   answer's first coordinate digit; gate B: ``scripts/policy_boxes.py`` on 90 such questions
   of held-out tiles, split among the levels as phase B draws them, mean target IoU > 0.3
   with more than 40 distinct answers (``--phase-b checkpoints/mini-phase-b`` starts here);
5. phase C (``socioseg sft``, configs/mini_sft.yaml): the full warm-up, stage 1, stage 2 and
   single-stage answers;
6. phase D (``socioseg train``, configs/mini_grpo.yaml): GRPO on both stages, in
   ``--grpo-procs`` processes (``torchrun``, gloo) on CPU;
7. the policy to ship is chosen on the validation split of the training tiles (150 samples,
   two-stage, greedy): the warm-up (phase C) or its last GRPO checkpoint, whichever has the
   higher final gIoU; it and the SAM folder are exported to ``--ship`` (by default the
   package's ``socioseg/assets/mini``), weights only;
8. ``socioseg eval`` on the held-out test tiles: two-stage, stage 1 only and single-stage for
   both policies on the randomly placed ones, two-stage on the default placement; the tables
   go to ``<out>/results.md``.

Every step takes the seed, so a run is deterministic for a seed on a given machine.
``--device cuda`` runs every step on the GPU. See docs/mini.md for the time budget.

    python scripts/train_mini.py --out runs/mini --seed 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from socioseg.cli import main as socioseg
from socioseg.models.builders import build_mini_sam
from socioseg.models.sources import MINI_DIR
from socioseg.train.config import load_config
from socioseg.train.sft import SftConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIGS, SCRIPTS = ROOT / "configs", ROOT / "scripts"
TEST_SEED_OFFSET = 1000
SELECT_SAMPLES = 150  # validation samples that choose the shipped policy
# Phase A (scripts/gate_a.py) as docs/mini.md measured it; the mini's architecture.
PHASE_A = ["--aux-layer", "2", "--aux-attention", "1", "--attention-layer", "4"]
GATE_A_EVERY = 100
GATE_A_SHARE = 0.5
GATE_B = "0.3,40"  # mean target IoU, distinct answers (scripts/policy_boxes.py --gate)
GATE_B_QUESTIONS = 90
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


def launch(argv: list[str], log: Path | None = None, threads: int | None = 1) -> subprocess.Popen:
    """Start ``argv`` (a command line) in its own process with ``threads`` threads (None: as
    this one), output appended to ``log`` (None: this console)."""
    print("$ " + " ".join(argv) + (f" >> {log}" if log else ""), flush=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    output = open(log, "a") if log else None  # noqa: SIM115 (closed with the process)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/mini"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every step runs")
    parser.add_argument("--train-tiles", type=int, default=5000)
    parser.add_argument("--test-tiles", type=int, default=400, help="30%% become the test split")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grpo-procs", type=int, default=2, help="GRPO processes (CPU cores)")
    parser.add_argument(
        "--phase-a", type=Path, default=None, help="a phase-A policy folder: skip phase A"
    )
    parser.add_argument("--phase-a-steps", type=int, default=1600, help="at most this many")
    parser.add_argument(
        "--phase-b",
        type=Path,
        default=None,
        help="a phase-B2 policy folder (checkpoints/mini-phase-b): skip phases A, B and B2",
    )
    parser.add_argument(
        "--ungated", action="store_true", help="print the gates, never stop (machinery checks)"
    )
    parser.add_argument("--ship", type=Path, default=MINI_DIR, help="where the models go")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="step:field=value, e.g. phase-b:steps=50 (sam, phase-b, phase-b2, sft, grpo)",
    )
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # phase A and SAM2 run side by side: one core each
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    extra = {"sam": [], "phase-b": [], "phase-b2": [], "sft": [], "grpo": []}
    for item in args.overrides:
        step, _, override = item.partition(":")
        if step not in extra:
            parser.error(f"{item}: the step must be one of {', '.join(extra)}")
        extra[step].append(override)
    started = time.perf_counter()
    data = make_data(args.out, args)
    sam, sam_job = args.out / "sam", None
    if not (sam / "config.json").is_file():
        sam_job = start_sam(sam, data["train"], args, extra["sam"])
    phase_a = args.phase_a or args.phase_b or run_phase_a(args.out / "phase-a", args)
    wait(sam_job, "socioseg train-sam")
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # alone from here on
    warmup = run_warmups(args.out, data, phase_a, sam, args, extra)
    last = run_grpo(args.out / "grpo", warmup, sam, data, args, extra["grpo"])
    ship_and_report(args.out, data, {"warmup": warmup, "grpo": last}, sam, args)
    print(f"done in {(time.perf_counter() - started) / 60:.0f} min", flush=True)


def start_sam(sam: Path, train: Path, args: argparse.Namespace, extra: list[str]):
    """``socioseg train-sam`` from the untrained mini SAM2, in a process of its own."""
    base = args.out / "base" / "sam"
    if not (base / "config.json").is_file():
        build_mini_sam(base, seed=args.seed)
    return launch([*CLI, "train-sam", "--config", str(CONFIGS / "mini_sam.yaml"), "--out",
                   str(sam), "--resume", f"sam={base}", f"data={train}", f"seed={args.seed}",
                   f"device={args.device}", *extra], args.out / "sam.log")  # fmt: skip


def run_warmups(
    out: Path, data: dict[str, Path], phase_a: Path, sam: Path, args, extra: dict
) -> Path:
    """Phase B, B2 and gate B, then phase C (all ``socioseg sft``); returns phase C's policy.
    With ``--phase-b`` that policy stands for phases A, B and B2 (gate B is still measured)."""
    phase_b, sft = out / "phase-b", out / "sft"
    common = [f"data={data['train']}", f"seed={args.seed}", f"device={args.device}"]
    phase_b2 = args.phase_b or out / "phase-b2"
    if args.phase_b is None:
        if not (phase_b / "config.json").is_file():
            run("sft", "--config", str(CONFIGS / "mini_phase_b.yaml"), "--out", str(phase_b),
                "--resume", f"vlm={phase_a}", *common, *extra["phase-b"])  # fmt: skip
        if not (phase_b2 / "config.json").is_file():
            run("sft", "--config", str(CONFIGS / "mini_phase_b2.yaml"), "--out", str(phase_b2),
                "--resume", f"vlm={phase_b}", *common, *extra["phase-b2"])  # fmt: skip
    gate_b(phase_b2, sam, args.seed + TEST_SEED_OFFSET, out / "gate-b.txt", args.ungated)
    if not (sft / "config.json").is_file():
        run("sft", "--config", str(CONFIGS / "mini_sft.yaml"), "--out", str(sft), "--resume",
            f"vlm={phase_b2}", *common, *extra["sft"])  # fmt: skip
    return sft


def run_grpo(grpo: Path, warmup: Path, sam: Path, data: dict[str, Path], args, extra) -> Path:
    """Phase D: ``socioseg train`` (GRPO), resumable; returns its last checkpoint."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    procs = [*torchrun, f"--nproc-per-node={args.grpo_procs}", "-m", "socioseg.cli"]
    several = args.grpo_procs > 1 and args.device == "cpu"
    job = launch([*(procs if several else CLI), "train", "--config",
                  str(CONFIGS / "mini_grpo.yaml"), "--out", str(grpo), "--resume",
                  f"model.vlm={warmup}", f"model.sam={sam}", f"data.train={data['grpo']}",
                  f"data.val={data['grpo']}", f"seed={args.seed}", *extra],
                 threads=1 if several else None)  # fmt: skip
    wait(job, "socioseg train")
    return max(grpo.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def ship_and_report(
    out: Path, data: dict[str, Path], policies: dict[str, Path], sam: Path, args
) -> None:
    """Choose the policy to ship on validation tiles, export it with the SAM2, and write the
    held-out tables to ``out/results.md``."""
    # Which policy ships: the warm-up or warm-up + GRPO, whichever scores the higher final gIoU
    # on the validation split of the training tiles (never the test tiles of the tables).
    validation = {}
    for name, vlm in policies.items():
        metrics = evaluate(out / "select" / name, data["grpo"], "val", vlm, sam, "two-stage",
                           args.device, limit=SELECT_SAMPLES)  # fmt: skip
        validation[name] = metrics["metrics"]["final"]["all"]["gIoU"]
    chosen = max(validation, key=lambda name: validation[name])  # a tie keeps the warm-up
    print(f"validation gIoU: {validation}; shipping the {chosen} policy", flush=True)
    export(policies[chosen], args.ship / "vlm")
    export(sam, args.ship / "sam")
    results = []
    for name, vlm in policies.items():
        for mode in ("two-stage", "stage1", "single-stage"):
            folder = out / "eval" / f"{name}-{mode}"
            metrics = evaluate(folder, data["test"], "test", vlm, args.ship / "sam", mode,
                               args.device)  # fmt: skip
            results.append((f"{name}, {mode}, random placement", metrics))
    metrics = evaluate(out / "eval" / "shipped-default-placement", data["test-default"], "test",
                       args.ship / "vlm", args.ship / "sam", "two-stage", args.device)  # fmt: skip
    results.append(("shipped, two-stage, default placement", metrics))
    write_results(out / "results.md", results, validation, chosen)


CLI = [sys.executable, "-m", "socioseg.cli"]


def make_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The synthetic tiles of every step (``socioseg synth``), made once."""
    folders = {name: out / "data" / name for name in ("train", "grpo", "test", "test-default")}
    test_seed = args.seed + TEST_SEED_OFFSET
    size = ["--size", "256", "--workers", str(args.workers)]
    tiles = {
        "train": [str(args.train_tiles), str(args.seed), "--queries", "5", "--placement", "random"],
        "grpo": [str(args.train_tiles), str(args.seed), "--placement", "random"],
        "test": [str(args.test_tiles), str(test_seed), "--placement", "random"],
        "test-default": [str(args.test_tiles), str(test_seed)],
    }
    for name, (n, seed, *rest) in tiles.items():
        if not (folders[name] / "levels.json").is_file():
            run("synth", str(folders[name]), "--n", n, "--seed", seed, *size, *rest)
    return folders


def run_phase_a(folder: Path, args: argparse.Namespace) -> Path:
    """Phase A (``scripts/gate_a.py``, resumable from ``folder``) until its gate passes;
    returns the policy folder. A run whose steps end before the gate stops everything."""
    gate = folder / "gate.csv"
    if not _gate_a_passed(gate):
        steps = args.phase_a_steps
        job = launch([sys.executable, str(SCRIPTS / "gate_a.py"), str(folder), *PHASE_A,
                      "--steps", str(steps), "--every", str(min(GATE_A_EVERY, steps)),
                      "--seed", str(args.seed), "--device", args.device])  # fmt: skip
        if (job.wait() or not _gate_a_passed(gate)) and not args.ungated:
            sys.exit(f"gate A failed (exit code {job.returncode}): its numbers are in {gate}")
    return folder / "checkpoint" / "vlm"


def _gate_a_passed(gate: Path) -> bool:
    if not gate.is_file():
        return False
    with gate.open() as f:
        rows = list(csv.DictReader(f))
    return bool(rows) and float(rows[-1]["iou_share"]) >= GATE_A_SHARE


def gate_b(policy: Path, sam: Path, seed: int, record: Path, ungated: bool = False) -> None:
    """Gate B (``scripts/policy_boxes.py --gate``) on held-out tiles of ``seed``, the questions
    split among levels as phase B draws them (its config's ``level_shares``); its table goes
    to ``record`` and the console; a failed gate stops everything (unless ``ungated``)."""
    config = load_config(CONFIGS / "mini_phase_b.yaml", cls=SftConfig)
    shares = ",".join(f"{level}={share}" for level, share in config.level_shares.items())
    argv = [sys.executable, str(SCRIPTS / "policy_boxes.py"), "--vlm", str(policy), "--sam",
            str(sam), "--seed", str(seed), "--questions", str(GATE_B_QUESTIONS),
            "--kind-word-names", "--level-shares", shares, "--gate", GATE_B]  # fmt: skip
    print("$ " + " ".join(argv), flush=True)
    done = subprocess.run(argv, capture_output=True, text=True)
    record.write_text(done.stdout + done.stderr)
    print(done.stdout + done.stderr, end="", flush=True)
    if done.returncode and not ungated:
        sys.exit(f"gate B failed: see {record}")


def evaluate(
    folder: Path,
    data: Path,
    split: str,
    vlm: Path,
    sam: Path,
    mode: str,
    device: str,
    limit: int | None = None,
) -> dict:
    """``socioseg eval`` (greedy) into ``folder``; its metrics."""
    argv = ["eval", "--data", str(data), "--split", split, "--out", str(folder)]
    argv += ["--vlm", str(vlm), "--sam", str(sam), "--mode", mode, "--greedy", "--device", device]
    run(*argv, *(["--limit", str(limit)] if limit else []))
    return json.loads((folder / "metrics.json").read_text())


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
