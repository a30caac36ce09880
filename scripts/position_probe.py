"""Can a policy architecture learn to read a position off its images? A probe on squares.

Trains an untrained socioseg-mini policy (``socioseg.models.builders`` sizes and tokenizer;
the RoPE base and the VLM frame can be changed) with the warm-up's loss on the plainest
localisation task:
``--squares`` squares of distinct colours on grey (the map; the satellite image is the same
with noise), the stage-1 prompt asks for one colour, the answer is that square's box in the
VLM frame, after the warm-up's teacher reasoning. Every ``--every`` steps it prints the answer
NLL on held-out questions with each question's own images and with another question's: a
policy that reads its images has the lower NLL with its own (gap > 0); one that answers from
the text alone has gap 0.

    python scripts/position_probe.py --rope-theta 10 --squares 1 --steps 600

``--filler N`` puts 0..N place names after the colour, so that the distance between the images
and the answer changes from question to question, as it does with real queries.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from socioseg import prompts
from socioseg.data.synth.catalog import PLACES
from socioseg.engine import Prompt
from socioseg.train.sft import answer_nll, supervised_loss
from socioseg.train.teacher import teacher_think

TILE = 252  # the squares are drawn on 252 px images, then resized to the frame
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
}
GREY = 128
HELD_OUT = 48
HELD_OUT_SEED = 10_000


def squares_sample(
    rng: np.random.Generator, squares: int, frame: int, filler: int = 0
) -> tuple[Prompt, str, list[int]]:
    """One question: (prompt, teacher answer, the asked-for square's box in tile pixels)."""
    image = np.full((TILE, TILE, 3), GREY, np.uint8)
    names = [str(name) for name in rng.permutation(list(COLORS))[:squares]]
    boxes: list[list[int]] = []
    for name in names:
        while True:  # squares do not overlap
            side = int(rng.integers(30, 80))
            x, y = (int(v) for v in rng.integers(0, TILE - side, 2))
            box = [x, y, x + side, y + side]
            if not any(_overlap(box, b) for b in boxes):
                break
        boxes.append(box)
        image[box[1] : box[3], box[0] : box[2]] = COLORS[name]
    noise = rng.integers(-20, 21, image.shape)
    satellite = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    fillers = [str(rng.choice(PLACES)) for _ in range(rng.integers(0, filler + 1))]
    query = " ".join([names[0], *fillers])
    answer_box = [round(v * frame / TILE) for v in boxes[0]]
    answer = f"{teacher_think(query)}<answer>{json.dumps([{'bbox_2d': answer_box}])}</answer>"
    images = (Image.fromarray(image), Image.fromarray(satellite))
    return Prompt(prompts.stage1_text(query), images), answer, boxes[0]


def _overlap(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def build_policy(
    out: Path,
    frame: int,
    rope_theta: float | None,
    seed: int,
    mrope_section: list[int] | None = None,
    text_layers: int | None = None,
    device: str = "cpu",
):
    """An untrained mini-sized policy seeing a ``frame`` x ``frame`` VLM frame: the mini's
    architecture (``MINI_VLM``) except where ``rope_theta`` (the text RoPE base),
    ``mrope_section`` (its (time, height, width) frequencies) or ``text_layers`` (decoder
    layers) say otherwise (None: the mini's)."""
    from socioseg.models.builders import (
        MINI_MAX_NEW_TOKENS,
        MINI_VLM,
        build_mini_tokenizer,
        build_tiny_vlm,
    )
    from socioseg.models.defaults import ModelDefaults
    from socioseg.models.vlm import VisionLanguageModel

    asked = {"rope_theta": rope_theta, "mrope_section": mrope_section, "text_layers": text_layers}
    path = build_tiny_vlm(
        out,
        seed=seed,
        tokenizer=build_mini_tokenizer(),
        min_pixels=frame * frame,
        max_pixels=frame * frame,
        random_weights_flag=False,
        **{**MINI_VLM, **{k: v for k, v in asked.items() if v is not None}},
    )
    # its frame and the mini's answer lengths, for the phases that go on from it
    ModelDefaults(frame * frame, frame * frame, dict(MINI_MAX_NEW_TOKENS)).write(path)
    return VisionLanguageModel.from_pretrained(str(path), device, "float32")


def image_gap(policy, held_out: list[tuple[Prompt, str, list[int]]]) -> tuple[float, float]:
    """Answer NLL on ``held_out`` with its own images and with another question's images."""
    shift = len(held_out) // 2 + 1
    own = [(p, a) for p, a, _ in held_out]
    other = [
        (Prompt(p.text, own[(i + shift) % len(own)][0].images), a) for i, (p, a) in enumerate(own)
    ]
    policy.model.eval()
    nll_own, nll_other = answer_nll(policy, own), answer_nll(policy, other)
    policy.model.train()
    return nll_own, nll_other


def square_coverage(box: list[int], frame: int, side: int) -> np.ndarray:
    """Share of each merged token (``side`` x ``side`` over the ``frame`` px VLM frame,
    row-major) that the square ``box`` (tile pixels) covers."""
    from socioseg.geometry import Frames
    from socioseg.train.aux_labels import token_coverage

    square = np.zeros((TILE, TILE), bool)
    square[box[1] : box[3], box[0] : box[2]] = True
    frames = Frames((TILE, TILE), (frame, frame))
    return token_coverage(square, frames, (side, side)).reshape(-1)


def target_attention(policy, held_out, frame: int) -> list[tuple[float, float]]:
    """Per decoder layer: how much of the attention that the answer pays to the images, at the
    position that writes its first coordinate digit (teacher-forced, heads averaged), lands on
    the asked-for square's tokens (mean over ``held_out``), beside the share of image tokens
    that square covers (what uniform attention would give). Link (b) of docs/mini.md: an
    answer that reads the image looks at the square it is asked for."""
    import torch

    tokenizer = policy.processor.tokenizer
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    model, image_id = policy.model, policy.model.config.image_token_id
    side = frame // policy.family.factor
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # attention weights are returned by eager only
    model.eval()
    on_target, uniform = [], []
    try:
        for prompt, answer, box in held_out:
            inputs = policy.encode([prompt.text], [list(prompt.images)])
            answer_ids = tokenizer(answer).input_ids  # no digit before the first coordinate
            first = next(i for i, t in enumerate(answer_ids) if t in digits)
            ids = torch.tensor([answer_ids])
            length = inputs["input_ids"].shape[1]
            with torch.no_grad():
                out = model.model(
                    input_ids=torch.cat([inputs["input_ids"], ids], 1),
                    attention_mask=torch.ones(1, length + ids.shape[1], dtype=torch.long),
                    pixel_values=inputs["pixel_values"],
                    image_grid_thw=inputs["image_grid_thw"],
                    mm_token_type_ids=torch.cat(
                        [inputs["mm_token_type_ids"], torch.zeros_like(ids, dtype=torch.int32)], 1
                    ),
                    output_attentions=True,
                    use_cache=False,
                )
            # map tokens, then satellite tokens
            target = np.tile(square_coverage(box, frame, side) > 0.5, 2)
            is_image = (inputs["input_ids"][0] == image_id).numpy()
            query = length + first - 1  # the position that predicts the digit
            rows = []
            for layer in out.attentions:
                weights = layer[0, :, query, :length].mean(0).numpy()[is_image]
                rows.append(float(weights[target].sum() / weights.sum()))
            on_target.append(rows)
            uniform.append(float(target.mean()))
    finally:
        model.set_attn_implementation(previous)
        model.train()
    means = np.mean(on_target, axis=0)
    return [(float(m), float(np.mean(uniform))) for m in means]


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    import torch

    from socioseg.train.config import AdamWSettings, SupervisedConfig
    from socioseg.train.optim import SupervisedUpdates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squares", type=int, default=1, choices=range(1, len(COLORS) + 1))
    parser.add_argument("--rope-theta", type=float, default=None, help="RoPE base (mini's: 10)")
    parser.add_argument("--frame", type=int, default=252, help="VLM frame side (multiple of 28)")
    parser.add_argument("--filler", type=int, default=0, help="0..N place names after the colour")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=HELD_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.frame % 28:
        parser.error(f"--frame {args.frame}: must be a multiple of 28 (one merged patch)")
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        policy = build_policy(Path(tmp) / "vlm", args.frame, args.rope_theta, args.seed)
    config = SupervisedConfig(
        steps=args.steps, batch_size=args.batch_size, optim=AdamWSettings(lr=args.lr)
    )
    updates = SupervisedUpdates(policy.model.parameters(), config)
    rng = np.random.default_rng(args.seed)
    draw = (args.squares, args.frame, args.filler)
    held_out = [
        squares_sample(np.random.default_rng([HELD_OUT_SEED, i]), *draw)
        for i in range(args.held_out)
    ]
    rows, started = [], time.perf_counter()
    policy.model.train()
    for step in range(1, args.steps + 1):
        batch = [squares_sample(rng, *draw)[:2] for _ in range(args.batch_size)]
        loss = supervised_loss(policy, batch)
        updates.step(loss)
        if step % args.every == 0 or step == args.steps:
            own, other = image_gap(policy, held_out)
            rows.append({"step": step, "nll": loss.item(), "own": own, "other": other})
            print(
                f"step {step}: training NLL {loss.item():.3f}; held-out answer NLL with own images"
                f" {own:.4f}, with another question's {other:.4f}, gap {other - own:+.4f}"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
