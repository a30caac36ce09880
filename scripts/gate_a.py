"""Gate A of the socioseg-mini curriculum: does the policy read a square's place off its images?

Trains an untrained socioseg-mini policy (``position_probe.build_policy``: mini sizes and
tokenizer, ``--text-layers``, RoPE base and ``mrope_section`` as asked) on 1-4 coloured squares
(``position_probe.squares_sample``; the number drawn per question), with the warm-up's loss
(:func:`socioseg.train.sft.supervised_losses`): the answer NLL plus ``--aux-position`` x the
position labels of :mod:`socioseg.train.aux_labels` (each map token predicts its column
digit, each satellite token its row digit, through the LM head, read after decoder layer
``--aux-layer``) plus ``--aux-attention`` x the answer's attention label (head 0 of
``--attention-layer`` looks at the asked-for square while the coordinates are written).
Every ``--every`` steps it answers held-out 3-square questions greedily and measures the
target IoU of each answer (its boxes, filled, against the asked-for square, in the VLM frame).
The gate passes when IoU > 0.5 on at least half of them; the run stops there.

    python scripts/gate_a.py runs/gate-a --steps 1600 --every 100 --aux-layer 2 \
        --aux-attention 1 --attention-layer 4

(the mini's architecture: 6 decoder layers, RoPE base 10, ``mrope_section`` 6:5:5; the
flags change it for a variation.)

Resumable: ``OUT`` holds the settings (``run.json``; a resumed run must ask for the same), the
latest checkpoint (``vlm/``, ``state.pt``: optimiser, schedule, random states) and the curves
(``metrics.csv``: step, losses, seconds; ``gate.csv``: step, IoU share, mean IoU, and
the answer's attention on the asked-for square, ``position_probe.target_attention``'s best
layer, beside uniform attention's share). Run again
with the same arguments to continue after a kill (``--stop-after N`` ends a session after N
steps, with a checkpoint). ``OUT`` must be new, empty or such a run's folder (anything else,
or other settings, exits 2 with nothing written). Exit status 0 when the gate passed, 1 when
the steps ran out first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from socioseg.answers import parse_answer
from socioseg.engine import Prompt
from socioseg.metrics import mask_iou
from socioseg.train import aux_labels
from socioseg.train.checkpoint import safe_load
from socioseg.train.runlog import RunLog

GATE_IOU = 0.5
GATE_SHARE = 0.5
GATE_SQUARES = 3
MAX_NEW_TOKENS = 96
ATTENTION_QUESTIONS = 16  # held-out questions whose answer attention is measured


def _probe():
    """scripts/position_probe.py (its squares and policy builder), loaded once."""
    if "position_probe" not in sys.modules:
        path = Path(__file__).with_name("position_probe.py")
        spec = importlib.util.spec_from_file_location("position_probe", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["position_probe"] = module
        spec.loader.exec_module(module)
    return sys.modules["position_probe"]


def position_targets(policy, frame: int) -> np.ndarray:
    """Position label ids of one example's images (map columns, then satellite rows)."""
    tokens = aux_labels.LabelTokens.of(policy.processor.tokenizer)
    side = frame // policy.family.factor
    return np.concatenate(
        [aux_labels.position_labels((side, side), tokens, a) for a in ("column", "row")]
    )


def square_tokens(box: list[int], policy, frame: int) -> np.ndarray:
    """The look labels of one question: its two images' tokens that the asked-for square
    (``box``, tile pixels) covers at all, map then satellite."""
    side = frame // policy.family.factor
    return np.tile(_probe().square_coverage(box, frame, side) > 0, 2)


def train_loss(policy, batch: list[tuple[Prompt, str, list[int]]], aux, frame: int):
    """The warm-up's loss (:func:`socioseg.train.sft.supervised_losses`) with position labels
    and the answer's attention label (``aux``: an ``AuxSettings``; no entity labels); returns
    (loss, parts)."""
    from socioseg.train.sft import supervised_losses

    position = position_targets(policy, frame)
    entity = np.full_like(position, aux_labels.IGNORE)
    side = frame // policy.family.factor
    labels = [
        aux_labels.TokenLabels(
            position, entity, square_tokens(box, policy, frame), (side, side), (side / frame,) * 2
        )
        for _, _, box in batch
    ]
    loss, parts = supervised_losses(policy, [(p, a) for p, a, _ in batch], labels, aux)
    parts.pop("aux_entity", None)
    return loss, parts


def answer_iou(text: str, box: list[int], frame: int) -> float:
    """IoU of an answer's boxes (filled, VLM frame) with the square ``box`` (252 px tile)."""
    probe = _probe()
    parsed = parse_answer(text, (frame, frame))
    truth = np.zeros((frame, frame), bool)
    x1, y1, x2, y2 = (round(v * frame / probe.TILE) for v in box)
    truth[y1:y2, x1:x2] = True
    answer = np.zeros_like(truth)
    for target in parsed.targets:
        b = target.box
        cols = slice(max(round(b.x1), 0), max(round(b.x2), 0))
        rows = slice(max(round(b.y1), 0), max(round(b.y2), 0))
        answer[rows, cols] = True
    return float(mask_iou(answer, truth))


def gate(policy, held_out, frame: int, chunk: int = 16) -> tuple[float, float]:
    """(share of held-out questions with target IoU > 0.5, mean IoU), greedy answers."""
    from socioseg.models.vlm import SamplingSettings

    sampling = SamplingSettings(greedy=True, max_new_tokens=MAX_NEW_TOKENS)
    policy.model.eval()
    ious = []
    for start in range(0, len(held_out), chunk):
        part = held_out[start : start + chunk]
        inputs = policy.encode([p.text for p, _, _ in part], [list(p.images) for p, _, _ in part])
        for (_, _, box), answer in zip(part, policy.generate(inputs, sampling), strict=True):
            ious.append(answer_iou(answer.text, box, frame))
    policy.model.train()
    ious = np.asarray(ious)
    return float((ious > GATE_IOU).mean()), float(ious.mean())


def _save(out: Path, policy, updates, rng, step: int, elapsed: float) -> None:
    """The checkpoint, written beside and renamed into place."""
    import torch

    tmp = out / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp / "vlm")
    policy.processor.save_pretrained(tmp / "vlm")
    torch.save(
        {
            "optimizer": updates.optimizer.state_dict(),
            "scheduler": updates.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "state.pt",
    )
    (tmp / "progress.json").write_text(
        json.dumps({"step": step, "elapsed_s": elapsed, "rng": rng.bit_generator.state})
    )
    old = out / "checkpoint"
    if old.exists():
        old.rename(out / "checkpoint.old")
    tmp.rename(old)
    shutil.rmtree(out / "checkpoint.old", ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="run folder (created, or resumed)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--aux-position", type=float, default=1.0)
    parser.add_argument("--rope-theta", type=float, default=None, help="RoPE base (mini's: 10)")
    parser.add_argument(
        "--mrope-section", default=None, help="time,height,width e.g. 2,7,7 (mini's: 6,5,5)"
    )
    parser.add_argument(
        "--aux-attention", type=float, default=0.0, help="weight of the answer's attention label"
    )
    parser.add_argument("--attention-layer", type=int, default=None, help="its layer (last)")
    parser.add_argument("--text-layers", type=int, default=None, help="decoder layers (mini: 6)")
    parser.add_argument(
        "--aux-layer", type=int, default=None, help="position labels after this layer (last)"
    )
    parser.add_argument("--frame", type=int, default=252)
    parser.add_argument("--held-out", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (not part of the run)")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="end this session after N steps (resumable)"
    )
    return parser


def _claim(out: Path, settings: dict) -> None:
    """Make ``out`` this run's folder: a new or empty folder gets ``run.json``; one with
    ``run.json`` is resumed when the settings match. Anything else exits 2 naming why: the
    run never writes into a folder it did not make."""
    record = out / "run.json"
    if out.exists() and not out.is_dir():
        _refuse(f"{out}: not a folder; give a new or empty folder as OUT")
    if record.is_file():
        try:
            same = json.loads(record.read_text()) == settings
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            _refuse(f"{record}: unreadable ({exc}); give a new or empty folder as OUT")
        if not same:
            _refuse(f"{record}: a run with other settings; resume it with them or use another OUT")
        return
    if out.is_dir() and any(out.iterdir()):
        _refuse(f"{out}: not empty and not a gate-A run (no run.json); give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=1))


def _refuse(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from socioseg.models.vlm import VisionLanguageModel
    from socioseg.train.config import AdamWSettings, AuxSettings, SupervisedConfig
    from socioseg.train.optim import SupervisedUpdates

    args = _parser().parse_args(argv)
    probe = _probe()
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "stop_after", "device")}
    out = args.out
    _claim(out, settings)
    checkpoint = out / "checkpoint"
    mrope = [int(v) for v in args.mrope_section.split(",")] if args.mrope_section else None
    torch.manual_seed(args.seed)
    if checkpoint.exists():
        policy = VisionLanguageModel.from_pretrained(
            str(checkpoint / "vlm"), args.device, "float32"
        )
        progress = json.loads((checkpoint / "progress.json").read_text())
    else:
        policy = probe.build_policy(
            out / "initial",
            args.frame,
            args.rope_theta,
            args.seed,
            mrope,
            args.text_layers,
            args.device,
        )
        progress = {"step": 0, "elapsed_s": 0.0, "rng": None}
    config = SupervisedConfig(
        steps=args.steps, batch_size=args.batch_size, optim=AdamWSettings(lr=args.lr)
    )
    updates = SupervisedUpdates(policy.model.parameters(), config)
    aux = AuxSettings(
        position=args.aux_position,
        layer=args.aux_layer,
        attention=args.aux_attention,
        attention_layer=args.attention_layer,
    )
    rng = np.random.default_rng(args.seed)
    if progress["rng"] is not None:
        state = safe_load(checkpoint / "state.pt")
        updates.optimizer.load_state_dict(state["optimizer"])
        updates.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = progress["rng"]
    held_out = [
        probe.squares_sample(
            np.random.default_rng([probe.HELD_OUT_SEED, i]), GATE_SQUARES, args.frame
        )
        for i in range(args.held_out)
    ]
    step, result = progress["step"], {"passed": False}
    log = RunLog(out, step)  # rows past the checkpoint (a killed session's) are dropped
    started = time.perf_counter() - progress["elapsed_s"]
    policy.model.train()
    while step < args.steps:
        step += 1
        counts = rng.integers(1, len(probe.COLORS) + 1, args.batch_size)
        batch = [probe.squares_sample(rng, int(n), args.frame) for n in counts]
        loss, parts = train_loss(policy, batch, aux, args.frame)
        updates.step(loss)
        log.log(step, {**parts, "elapsed_s": time.perf_counter() - started}, ("elapsed_s",))
        if step % args.every == 0 or step == args.steps:
            share, mean = gate(policy, held_out, args.frame)
            looks = probe.target_attention(policy, held_out[:ATTENTION_QUESTIONS], args.frame)
            elapsed = time.perf_counter() - started
            result = {
                "iou_share": share,
                "mean_iou": mean,
                "attention_on_target": max(on for on, _ in looks),
                "attention_uniform": looks[0][1],
                "elapsed_s": elapsed,
            }
            log.log(step, result, ("elapsed_s",), table="gate")
            result["step"] = step
            passed = share >= GATE_SHARE
            print(
                f"step {step}: loss {parts}; held-out {GATE_SQUARES}-square questions with IoU >"
                f" {GATE_IOU}: {share:.1%} (mean IoU {mean:.3f}); attention on the square"
                f" {result['attention_on_target']:.3f} (uniform {result['attention_uniform']:.3f});"
                " gate A"
                f" {'passed' if passed else 'not yet'} ({elapsed:.0f} s)",
                flush=True,
            )
            _save(out, policy, updates, rng, step, elapsed)
            result["passed"] = passed
            if passed:
                break
        elif step - progress["step"] == args.stop_after:
            _save(out, policy, updates, rng, step, time.perf_counter() - started)
        if step - progress["step"] == args.stop_after:
            break
    log.close()
    return result


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:])["passed"] else 1)
