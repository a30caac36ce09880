"""Can a policy's map tokens learn to read the names on the map? A training probe.

Names are the questions socioseg-mini gets wrong most (docs/mini.md, "Names"): a name is
printed on the map as a label of 8 px type, and when two entities of one class share a tile
only the label tells them apart. This script asks the narrowest form of that question: one
label, at each map token that holds at least ``COVER`` of an entity label's first word (the
place, "Heping" in "Heping University", where the synthetic painter drew it:
:func:`socioseg.data.synth.tile_labels`), asks for that word among the catalogue's places.
Three readers can learn it:

- the policy (``--vlm``) whole: its LM head read after decoder layer ``--layer``, as
  ``aux.name`` of ``socioseg sft`` reads its name label;
- ``--vision-only``: the policy's vision tower alone, read by a new linear layer; the
  language model is left out (whether the vision tower can learn to read at all, at a
  fraction of the cost);
- ``--pixels``: no policy (``--vlm`` gives only the frame and the tokenizer), a small CNN on
  a grey ``CROP`` of the map at each first word, in the frame the policy sees, its corner
  off by up to ``JITTER`` px: what the images allow a reader built for them.

Training tiles are drawn fresh each step from ``--seed``. Every ``--every`` steps the labels
of ``--held-out`` tiles of seed ``--test-seed`` are read, and the script prints the share
that names the right place (for the policy's readers per token and per label, a label's
tokens voting; chance is one in the number of places).

    python scripts/name_reading.py --vlm src/socioseg/assets/mini/vlm --steps 300 --lr 3e-4
    python scripts/name_reading.py --vlm src/socioseg/assets/mini/vlm --pixels --steps 1000 \
        --batch-size 8 --lr 1e-3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from socioseg.data.synth import generate_tile, tile_labels
from socioseg.data.synth.catalog import PLACES
from socioseg.engine import vlm_image
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frames
from socioseg.train import aux_labels
from socioseg.train.sft import TeacherBatch
from socioseg.train.teacher import teacher_examples
from socioseg.types import Box

SIZE = 256
COVER = 0.3  # a token holds the word when it covers this share of the word's box
CROP = (11, 40)  # rows x columns of a --pixels crop, at the first word's top left corner
JITTER = 2


def word_tokens(
    boxes: list[tuple[float, float, float, float]], frames: Frames, grid: tuple[int, int]
) -> np.ndarray:
    """For each map token (row-major over ``grid``), the index of the first of ``boxes``
    (image pixels) whose area it covers at least ``COVER`` of, else -1."""
    rows, cols = grid
    width, height = frames.vlm_size
    cell_w, cell_h = width / cols, height / rows
    out = np.full(rows * cols, -1)
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = frames.box(Box(*box), "image", "vlm").as_list()
        area = max((x1 - x0) * (y1 - y0), 1e-9)
        for r in range(rows):
            for c in range(cols):
                w = min(x1, (c + 1) * cell_w) - max(x0, c * cell_w)
                h = min(y1, (r + 1) * cell_h) - max(y0, r * cell_h)
                if w > 0 and h > 0 and w * h >= COVER * area and out[r * cols + c] < 0:
                    out[r * cols + c] = k
    return out


def tile_example(policy, seed: int, index: int, frames: Frames, low: int, high: int):
    """The stage-1 teacher example of tile ``index`` of ``seed`` and its map tokens' word
    labels: (example, per-token label index, each label's name token)."""
    tokenizer = policy.processor.tokenizer
    sample = generate_tile(seed, index, SIZE, 1, placement="random")[0]
    names = [p for p in tile_labels(seed, index, SIZE, placement="random") if p.label.major]
    rows, cols = (
        frames.vlm_size[1] // policy.family.factor,
        frames.vlm_size[0] // policy.family.factor,
    )
    where = word_tokens([p.first_word for p in names], frames, (rows, cols))
    wanted = [aux_labels.LabelTokens.of_name(tokenizer, p.label.text) for p in names]
    example = teacher_examples(sample, low, high, family=policy.family)[0]
    return example, where, wanted


def word_crops(
    seed: int, index: int, frames: Frames, rng: np.random.Generator, jitter: int = JITTER
) -> tuple[np.ndarray, list[str]]:
    """Grey crops (N x ``CROP``, 0-1) of tile ``index``'s map in the VLM frame, one at each
    entity label's first word (its top left corner moved by up to ``jitter`` px each way),
    and the labels' texts."""
    sample = generate_tile(seed, index, SIZE, 1, placement="random")[0]
    grey = np.asarray(vlm_image(sample.map, frames).convert("L"), dtype=np.float32) / 255
    pad = max(CROP) + jitter
    grey = np.pad(grey, pad, constant_values=1.0)
    crops, texts = [], []
    for placed in tile_labels(seed, index, SIZE, placement="random"):
        if not placed.label.major:
            continue
        box = frames.box(Box(*placed.first_word), "image", "vlm")
        dx, dy = rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0)
        x, y = round(box.x1) + pad + int(dx), round(box.y1) + pad + int(dy)
        crops.append(grey[y : y + CROP[0], x : x + CROP[1]])
        texts.append(placed.label.text)
    return np.asarray(crops, dtype=np.float32).reshape(-1, *CROP), texts


def crop_reader(places: int):
    """The ``--pixels`` reader: three 3 x 3 convolutions, pooled to 1 x 4, then linear."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d((1, 4)),
        nn.Flatten(),
        nn.Linear(256, places),
    )


def read_pixels(args, places_of: dict[str, int], frames: Frames) -> int:
    """``--pixels``: train :func:`crop_reader` on fresh tiles, score the held-out labels."""
    import torch

    rng = np.random.default_rng(args.seed)
    test = [word_crops(args.test_seed, i, frames, rng) for i in range(args.held_out)]
    test_x = torch.from_numpy(np.concatenate([x for x, _ in test]))[:, None]
    test_y = torch.tensor([places_of[t.split()[0]] for _, texts in test for t in texts])
    reader = crop_reader(len(set(places_of.values())))
    optimizer = torch.optim.Adam(reader.parameters(), lr=args.lr)
    losses, seen = [], 0
    for step in range(1, args.steps + 1):
        tiles = [
            word_crops(args.seed, int(i), frames, rng)
            for i in rng.integers(0, 100_000, args.batch_size)
        ]
        x = torch.from_numpy(np.concatenate([c for c, _ in tiles]))[:, None]
        y = torch.tensor([places_of[t.split()[0]] for _, texts in tiles for t in texts])
        loss = torch.nn.functional.cross_entropy(reader(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        seen += len(y)
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                right = float((reader(test_x).argmax(-1) == test_y).float().mean())
            print(
                f"step {step}: train loss {np.mean(losses[-args.every :]):.3f} | {seen} labels "
                f"seen | held-out labels right {right:.1%} of {len(test_y)}",
                flush=True,
            )
    return 0


def map_logits(policy, examples, layer: int, places, head=None):
    """Each example's map tokens' logits over ``places`` (list, one each): the LM head's after
    decoder ``layer``, or with ``head`` that layer on the vision tower's merged tokens."""
    if head is not None:
        inputs = policy.encode([p.text for p, _ in examples], [list(p.images) for p, _ in examples])
        features = policy.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"]
        ).pooler_output
        return [head(f) for f in features[0::2]]  # each prompt shows the map first
    batch = TeacherBatch.of(policy, examples)
    readout = policy.logprobs_and_image_logits(batch.inputs, batch.ids, batch.mask, (layer,))
    logits, out, start = readout[1][0], [], 0
    for row in range(len(examples)):
        n = len(batch.image_tokens(row))
        out.append(logits[start : start + n // 2, places])  # the map's tokens come first
        start += n
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", required=True, help="policy folder or 'mini'")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--layer", type=int, default=1, help="decoder layer the label is read after"
    )
    parser.add_argument("--vision-only", action="store_true", help="train the vision tower alone")
    parser.add_argument("--pixels", action="store_true", help="a small CNN on word crops instead")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=1000)
    parser.add_argument("--held-out", type=int, default=30, help="held-out tiles")
    args = parser.parse_args(argv)
    import torch

    from socioseg.models.vlm import VisionLanguageModel

    torch.manual_seed(args.seed)
    policy = VisionLanguageModel.from_pretrained(args.vlm, "cpu", "float32")
    tokenizer = policy.processor.tokenizer
    defaults = policy.processor.defaults
    low = defaults.min_pixels or DEFAULT_MIN_PIXELS
    high = defaults.max_pixels or DEFAULT_MAX_PIXELS
    frames = Frames.for_image((SIZE, SIZE), low, high, policy.family.factor)
    places = np.unique([aux_labels.LabelTokens.of_name(tokenizer, p) for p in PLACES])
    if args.pixels:
        first = {p.split()[0]: aux_labels.LabelTokens.of_name(tokenizer, p) for p in PLACES}
        column = {int(token): k for k, token in enumerate(places)}
        return read_pixels(args, {word: column[int(t)] for word, t in first.items()}, frames)
    test = [
        tile_example(policy, args.test_seed, i, frames, low, high) for i in range(args.held_out)
    ]
    head, trained = None, list(policy.model.parameters())
    if args.vision_only:
        head = torch.nn.Linear(policy.model.config.text_config.hidden_size, len(places))
        trained = [*policy.model.model.visual.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    index = {int(token): k for k, token in enumerate(places)}
    rng = np.random.default_rng(args.seed)

    def evaluate(step: int, loss: float) -> None:
        policy.model.eval()
        tokens_right = tokens = labels_right = labels = 0
        with torch.no_grad():
            for example, where, wanted in test:
                logits = map_logits(policy, [example], args.layer, places, head)[0]
                said = places[logits.argmax(-1).numpy()]
                for k, token in enumerate(wanted):
                    mine = said[where == k]
                    if len(mine) == 0:
                        continue
                    tokens += len(mine)
                    tokens_right += int((mine == token).sum())
                    votes, counts = np.unique(mine, return_counts=True)
                    labels += 1
                    labels_right += int(votes[counts.argmax()] == token)
        print(
            f"step {step}: train loss {loss:.3f} | held-out tokens right "
            f"{tokens_right / max(tokens, 1):.1%} "
            f"of {tokens}, labels right {labels_right / max(labels, 1):.1%} of {labels} "
            f"(chance {1 / len(places):.1%})",
            flush=True,
        )
        policy.model.train()

    evaluate(0, float("nan"))
    started, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        batch = [
            tile_example(policy, args.seed, int(i), frames, low, high)
            for i in rng.integers(0, 100_000, args.batch_size)
        ]
        examples = [example for example, _, _ in batch]
        logits = map_logits(policy, examples, args.layer, places, head)
        kept, labels = [], []
        for row, (_, where, wanted) in enumerate(batch):
            for k, token in enumerate(wanted):
                at = np.nonzero(where == k)[0]
                kept.append(logits[row][torch.from_numpy(at)])
                labels += [index[token]] * len(at)
        if not labels:
            continue
        loss = torch.nn.functional.cross_entropy(torch.cat(kept), torch.tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % args.every == 0 or step == args.steps:
            evaluate(step, float(np.mean(losses[-args.every :])))
            print(f"  {time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
