"""Learning check: does GRPO raise the rewards and the IoU of a small model on synthetic data?

Runs on CPU in well under an hour:

1. a synthetic SocioSeg-like dataset (256 x 256 tiles);
2. a ~1M-parameter random Qwen2.5-VL, briefly supervised on the answer format
   (socioseg.train.sft) so that rollouts can earn reward at all;
3. GRPO with the project's trainer (released rewards and rollout strategy).

SAM2 at random weights ignores its prompts, so here a box-filling segmenter stands in for it:
the masks are the union of the predicted boxes, and IoU measures localisation. Writes
``curve.csv`` (one row per GRPO step) and prints averages over windows of steps.

    python scripts/learning_check.py --out runs/learning-check
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from socioseg.data import load_socioseg
from socioseg.data.synth import write_dataset
from socioseg.geometry import Frames
from socioseg.models.builders import build_tiny_sam, build_tiny_vlm
from socioseg.models.vlm import VisionLanguageModel
from socioseg.train.config import load_config
from socioseg.train.grpo import Trainer
from socioseg.train.sft import supervised_loss
from socioseg.train.teacher import teacher_examples

MIN_PIXELS, MAX_PIXELS = 3136, 256 * 256


class BoxSegmenter:
    """Stand-in for SAM2: the mask of a set of targets is the union of their boxes."""

    encoder_calls = 0

    def embed(self, image):
        self.encoder_calls += 1
        return Frames(image.size, image.size)

    def segment(self, frames, targets):
        width, height = frames.image_size
        mask = np.zeros((height, width), dtype=bool)
        for t in targets:
            x1, y1 = max(0, int(t.box.x1)), max(0, int(t.box.y1))
            mask[y1 : max(y1, int(np.ceil(t.box.y2))), x1 : max(x1, int(np.ceil(t.box.x2)))] = True
        return mask


def warm_up(vlm_dir: Path, data: Path, steps: int, out: Path) -> Path:
    policy = VisionLanguageModel.from_pretrained(str(vlm_dir), device="cpu")
    dataset = load_socioseg(data, "train")
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    policy.model.train()
    for step in range(1, steps + 1):
        batch = [dataset[int(i)] for i in rng.integers(0, len(dataset), 4)]
        examples = [ex for s in batch for ex in teacher_examples(s, MIN_PIXELS, MAX_PIXELS)]
        loss = supervised_loss(policy, examples)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 25 == 0 or step == 1:
            print(f"warm-up {step}/{steps}: nll {loss.item():.3f}", flush=True)
    policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/learning-check"))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--rl-steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = args.out / "data"
    if not data.exists():
        write_dataset(data, n=args.samples, seed=0, size=256)
    vlm = build_tiny_vlm(args.out / "base", text_hidden=128, text_layers=4, vision_hidden=64)
    sam = build_tiny_sam(args.out / "sam")
    started = time.perf_counter()
    warmed = warm_up(vlm, data, args.sft_steps, args.out / "warm")
    print(f"warm-up took {time.perf_counter() - started:.0f}s", flush=True)

    config = load_config(
        None,
        [
            f"model.vlm={warmed}",
            f"model.sam={sam}",
            f"model.min_pixels={MIN_PIXELS}",
            f"model.max_pixels={MAX_PIXELS}",
            f"data.train={data}",
            "rollout.group_size=4",
            "rollout.max_response_tokens=96",
            "rollout.max_prompt_tokens=2048",
            "rollout.temperature=1.0",
            "optim.lr=2e-5",
            "optim.kl_beta=0.005",
            "optim.micro_batch_size=16",
            "batch_size=4",
            f"steps={args.rl_steps}",
            f"save_every={args.rl_steps}",
        ],
    )
    trainer = Trainer(config, args.out / "grpo", overwrite=True)  # the script rebuilds all
    trainer.segmenter = BoxSegmenter()
    keys = [
        "stage1/reward_total",
        "stage2/reward_total",
        "stage1/iou",
        "stage2/iou",
        "stage1/reward_format",
        "stage2/reward_format",
        "train/kl",
        "time/step_s",
    ]
    rows = []

    def log(step, metrics):
        rows.append({"step": step, **{k: metrics[k] for k in keys}})
        if step % args.window == 0:
            window = rows[-args.window :]
            means = {k: np.mean([r[k] for r in window]) for k in keys}
            print(
                f"steps {step - args.window + 1}-{step}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in means.items()),
                flush=True,
            )

    trainer.train(on_log=log)
    with open(args.out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", *keys])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'curve.csv'}; total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
