"""Does a policy read the image? Its stage-1 boxes on tiles whose entities sit at random.

On synthetic tiles with ``--placement random`` (where an entity lies says nothing about
whether a query means it), every question of a tile (its own query, then the names of its
other entities) is answered by stage 1 of the policy, greedy. Each box is filled in as a mask
and compared with the entity the question asks about and with the tile's other entities:

- distinct answers: how many different box sets the policy gave (one box for every tile
  means it does not look at the image);
- target IoU: the boxes against the asked-for entities' mask (the policy localises and picks);
- best entity IoU: each box against the entity on the tile it covers best, asked for or not
  (the policy finds entities even where it picks the wrong one);
- the share of boxes above 0.5 for both;
- answer NLL, own vs other images: the token NLL of each question's stage-1 teacher answer
  (the warm-up's) with the tile's own map and satellite image and with another tile's; equal
  values mean the policy answers from the text alone.

``--levels`` and ``--kind-word-names`` keep the questions a curriculum phase trains on (as
``socioseg sft``'s ``level_shares`` and ``kind_word_names`` draw them); ``--questions`` stops
once that many are asked, and ``--level-shares`` splits them among the levels as a phase
draws them (a tile asks one question of its own, class, function or name, and the names of
its other entities: in tile order most questions are names). The table's last line gives
the target IoU per level. ``--gate IOU,DISTINCT`` checks gate B of docs/mini.md (mean target
IoU above IOU and more than DISTINCT different answers) and exits 1 when it fails.

    python scripts/policy_boxes.py --vlm mini --tiles 20
    python scripts/policy_boxes.py --vlm runs/mini/phase-b --questions 90 --kind-word-names \
        --level-shares socio-class=0.35,socio-function=0.35,socio-name=0.3 --gate 0.3,40
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import cv2
import numpy as np

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.data.synth.generate import split_counts
from socioseg.engine import Prompt
from socioseg.metrics import mask_iou
from socioseg.socioreasoner import SocioReasoner
from socioseg.train.sft import answer_nll, has_kind_word
from socioseg.train.teacher import teacher_examples
from socioseg.types import LEVELS

TILES = 20  # tiles asked by default
MAX_TILES = 1000  # with --questions: tiles tried before the table is made of fewer questions


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """The image-frame box ``(x0, y0, x1, y1)`` filled in, on pixel centres."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    x0, y0, x1, y1 = box
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def asked(sample, levels: tuple[str, ...], kind_word_names: bool) -> bool:
    """Whether a curriculum phase of ``levels`` (names only with a kind word when
    ``kind_word_names``) trains on questions like ``sample``."""
    if sample.level not in levels:
        return False
    named = kind_word_names and sample.level == "socio-name"
    return not named or has_kind_word(sample.query, sample.socio_class)


def tile_scores(
    reasoner: SocioReasoner, tile: list, questions: list
) -> tuple[list, list[float], list[float]]:
    """Stage-1 boxes (image frame) of each of ``questions`` (samples of ``tile``), the IoU of
    each answer's boxes with its entity, and of each box with the entity on the tile it covers
    best."""
    # The tile's own query may ask for several entities (its mask's pieces); the others
    # ask for one entity each.
    count, pieces = cv2.connectedComponents(np.asarray(tile[0].mask, np.uint8))
    entities = [pieces == k for k in range(1, count)]
    entities += [np.asarray(s.mask, bool) for s in tile[1:]]
    predictions = reasoner.segment_batch(
        [(s.sat, s.map, s.query) for s in questions], mode="stage1"
    )
    answers, target, best = [], [], []
    for sample, prediction in zip(questions, predictions, strict=True):
        boxes = [t.box.as_list() for t in prediction.stage1.targets_image]
        answers.append(tuple(tuple(round(v) for v in box) for box in boxes))
        shape = np.asarray(sample.mask).shape
        union = np.zeros(shape, bool)
        for box in boxes:
            filled = box_mask(box, shape)
            union |= filled
            best.append(max(mask_iou(filled, entity) for entity in entities))
        target.append(mask_iou(union, np.asarray(sample.mask, bool)))
    return answers, target, best


def image_reliance(reasoner: SocioReasoner, tiles: list[list]) -> tuple[float, float]:
    """Stage-1 teacher answer NLL of every question of ``tiles`` (lists of samples of one
    tile each) with its tile's images and with the next tile's (the last tile's questions get
    the first tile's images)."""
    low, high = reasoner.config.min_pixels, reasoner.config.max_pixels
    stage1 = [[teacher_examples(sample, low, high)[0] for sample in tile] for tile in tiles]
    own = [example for examples in stage1 for example in examples]
    other = [
        (Prompt(prompt.text, stage1[(index + 1) % len(tiles)][0][0].images), answer)
        for index, examples in enumerate(stage1)
        for prompt, answer in examples
    ]
    return answer_nll(reasoner.vlm, own), answer_nll(reasoner.vlm, other)


def greedy_reasoner(vlm: str, sam: str) -> SocioReasoner:
    """The pipeline of ``vlm`` and ``sam`` on the CPU, answering greedily."""
    reasoner = SocioReasoner.from_pretrained(vlm=vlm, sam=sam, device="cpu")
    sampling = replace(reasoner.config.sampling, greedy=True)
    reasoner.config = replace(reasoner.config, sampling=sampling)
    return reasoner


def ask(
    reasoner: SocioReasoner,
    seed: int,
    size: int,
    levels: tuple[str, ...],
    kind_word_names: bool,
    wanted: int,
    tiles: int,
    shares: dict[str, float] | None = None,
) -> tuple[list, list[float], list[float], list[list]]:
    """The questions of randomly placed tiles of ``seed`` (:func:`asked` keeps them), tile by
    tile until ``wanted`` are asked or ``tiles`` tiles are used: :func:`tile_scores`' answers,
    target and best-entity IoUs over all of them, and the questions asked per tile.
    ``shares`` ({level: share}): ``wanted`` split among those levels by their shares (largest
    remainders), each level asked until its own count is reached (as ``socioseg sft``'s
    ``level_shares`` draws them); None: the questions in tile order."""
    quota = None
    if shares:
        quota = dict(zip(shares, split_counts(wanted, tuple(shares.values())), strict=True))
    answers, target, best, asked_tiles = [], [], [], []
    for index in range(tiles):
        tile = generate_tile(seed, index, size, MAX_QUERIES, placement="random")
        questions = []
        for sample in tile:
            if not asked(sample, levels, kind_word_names):
                continue
            if quota is None and len(answers) + len(questions) == wanted:
                break
            if quota is not None:
                if quota.get(sample.level, 0) == 0:
                    continue
                quota[sample.level] -= 1
            questions.append(sample)
        if not questions:
            continue
        asked_tiles.append(questions)
        scores = tile_scores(reasoner, tile, questions)
        for into, values in zip((answers, target, best), scores, strict=True):
            into.extend(values)
        if len(answers) == wanted:
            break
    return answers, target, best, asked_tiles


def level_shares(text: str) -> dict[str, float]:
    """``socio-class=0.35,socio-function=0.35,socio-name=0.3`` as a dict (levels checked)."""
    shares = {}
    for item in text.split(","):
        level, _, share = item.partition("=")
        if level not in LEVELS or not share:
            raise ValueError(f"{item!r}: give LEVEL=SHARE, LEVEL one of {', '.join(LEVELS)}")
        shares[level] = float(share)
        if shares[level] < 0:
            raise ValueError(f"{item!r}: a share is >= 0")
    if sum(shares.values()) <= 0:
        raise ValueError(f"{text!r}: the shares add up to 0")
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", default="mini", help="policy folder, Hub id or 'mini'")
    parser.add_argument("--sam", default="mini", help="SAM2 (loaded, not used for the boxes)")
    parser.add_argument(
        "--tiles",
        type=int,
        default=None,
        help=f"at most this many tiles (default: {TILES}; with --questions, as many as it takes)",
    )
    parser.add_argument("--questions", type=int, default=None, help="stop after this many")
    parser.add_argument("--seed", type=int, default=1000, help="synthetic seed (held out: 1000)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--levels", default=",".join(LEVELS), help="query levels to ask")
    parser.add_argument(
        "--kind-word-names", action="store_true", help="names only with a word of their class"
    )
    parser.add_argument(
        "--level-shares",
        default=None,
        help="LEVEL=SHARE,...: the questions split among levels so (needs --questions)",
    )
    parser.add_argument("--gate", default=None, help="IOU,DISTINCT: exit 1 unless both beaten")
    args = parser.parse_args(argv)
    levels = tuple(args.levels.split(","))
    if not set(levels) <= set(LEVELS):
        parser.error(f"--levels: pick from {', '.join(LEVELS)}, got {args.levels}")
    shares = None
    if args.level_shares is not None:
        if args.questions is None:
            parser.error("--level-shares needs --questions (how many to split)")
        try:
            shares = level_shares(args.level_shares)
        except ValueError as error:
            parser.error(f"--level-shares: {error}")
    reasoner = greedy_reasoner(args.vlm, args.sam)
    tiles = args.tiles or (TILES if args.questions is None else MAX_TILES)
    wanted = args.questions or tiles * MAX_QUERIES
    answers, target, best, asked_tiles = ask(
        reasoner, args.seed, args.size, levels, args.kind_word_names, wanted, tiles, shares
    )
    if args.questions is not None and len(answers) < args.questions:
        print(
            f"--questions {args.questions}: only {len(answers)} such questions on {tiles} tiles;"
            " the table is over those (raise --tiles for more)",
            file=sys.stderr,
        )
    own, other = image_reliance(reasoner, asked_tiles)
    target, best = np.array(target), np.array(best)
    boxes = sum(len(answer) for answer in answers) / len(answers)
    best_text = f"{best.mean():.3f} ({(best > 0.5).mean():.0%})" if len(best) else "no boxes"
    print(f"{args.vlm}: {len(target)} questions on {len(asked_tiles)} tiles (seed {args.seed})")
    print(
        "| distinct answers | boxes per answer | target IoU (> 0.5) | best entity IoU (> 0.5) "
        "| answer NLL, own vs other images |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {len(set(answers))} of {len(answers)} | {boxes:.2f} "
        f"| {target.mean():.3f} ({(target > 0.5).mean():.0%}) | {best_text} "
        f"| {own:.4f} vs {other:.4f} |"
    )
    asked_levels = np.array([sample.level for questions in asked_tiles for sample in questions])
    print(
        "by level: "
        + ", ".join(
            f"{level} {target[asked_levels == level].mean():.3f} ({(asked_levels == level).sum()})"
            for level in LEVELS
            if (asked_levels == level).any()
        )
    )
    if args.gate is None:
        return 0
    iou, distinct = (float(v) for v in args.gate.split(","))
    passed = target.mean() > iou and len(set(answers)) > distinct
    print(
        f"gate {'passed' if passed else 'failed'}: target IoU {target.mean():.3f} (needs > {iou}),"
        f" {len(set(answers))} distinct answers of {len(answers)} (needs > {distinct:g})"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
