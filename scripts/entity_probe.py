"""What a policy's image tokens know about entities, and where its first coordinate looks.

For phase B of the mini curriculum (docs/mini.md): on synthetic tiles with ``--placement
random``, every question of a tile (its entities' names and its own query) is shown to the
policy with its stage-1 teacher answer, one forward each, and two things are read:

- entity tokens: the LM head's entity label (``aux.entity`` of ``socioseg sft``) at each image
  token, read after decoder layer ``--entity-layer``, its argmax over "none" and the first
  tokens of every socio-class of the synthetic catalogue. Tokens an entity covers more than
  half of: the share labelled with its class, with "none", with another class; tokens on no
  entity: the share labelled "none".
- asked class: at the position that writes the answer's first x coordinate, the class the LM
  head names after ``--query-layer`` (``aux.query`` of ``socioseg sft``), against the asked-for
  entity's.
- name tokens (a policy trained with ``aux.name``): the name label at each token a named
  entity covers more than half of, read after ``--name-layer``, its argmax over the first
  tokens of the catalogue's places: the share naming the entity's own place, another place
  of the same tile, another place.
- first look: while the answer's first x coordinate is written, head 0 of decoder layer
  ``--attention-layer`` (the attention label's head) puts some mass on the map tokens of the
  asked-for entity and some on those of the tile's other entities; a question is "picked"
  when the target gets more than each other entity alone. Name questions and the others are
  also counted apart.

The layers default to the ones the policy was trained with (``training.json`` of a
``socioseg sft`` folder).

    python scripts/entity_probe.py --vlm runs/mini/phase-b --tiles 6
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.data.synth.catalog import KINDS, PLACES
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frames
from socioseg.train import aux_labels
from socioseg.train.sft import TeacherBatch, sample_aux_labels
from socioseg.train.teacher import teacher_examples

VERDICTS = ("own class", "none", "other class")
NAME_VERDICTS = ("own name", "a tile neighbour's", "other name")


def token_verdicts(predicted: np.ndarray, labels: np.ndarray, none: int) -> Counter:
    """Counts of the entity labels ``predicted`` at tokens whose label is ``labels`` (token
    ids; ``IGNORE`` left out): on-entity tokens as ``VERDICTS``, "none" tokens as "none ok"
    and "none wrong"."""
    counts: Counter = Counter()
    kept = labels != aux_labels.IGNORE
    for got, want in zip(predicted[kept], labels[kept], strict=True):
        if want == none:
            counts["none ok" if got == none else "none wrong"] += 1
        else:
            counts[VERDICTS[0] if got == want else VERDICTS[1] if got == none else VERDICTS[2]] += 1
    return counts


def first_look(
    mass: np.ndarray, target: np.ndarray, others: list[np.ndarray]
) -> tuple[float, float, bool]:
    """(mass on ``target``'s tokens, mass on the ``others``' tokens, whether the target got
    more than each other entity alone) for one attention row ``mass`` over the image tokens;
    ``target`` and each of ``others`` are bool over the same tokens."""
    on_target = float(mass[target].sum())
    each = [float(mass[other & ~target].sum()) for other in others]
    union = np.zeros_like(target)
    for other in others:
        union |= other
    on_others = float(mass[union & ~target].sum())
    return on_target, on_others, all(on_target > value for value in each)


def name_verdicts(predicted: np.ndarray, labels: np.ndarray, on_tile: set[int]) -> Counter:
    """Counts of the name labels ``predicted`` at tokens whose name label is ``labels`` (token
    ids; ``IGNORE`` left out) as ``NAME_VERDICTS``; ``on_tile``: the tile's names' labels."""
    counts: Counter = Counter()
    kept = labels != aux_labels.IGNORE
    for got, want in zip(predicted[kept], labels[kept], strict=True):
        counts[NAME_VERDICTS[0 if got == want else 1 if got in on_tile else 2]] += 1
    return counts


def trained_layers(vlm: str) -> tuple[int | None, int | None, int | None, int | None]:
    """The entity, attention, query and name layers a ``socioseg sft`` folder was trained
    with (the name layer None where it had no name label)."""
    record = Path(vlm) / "training.json"
    if not record.is_file():
        return None, None, None, None
    aux = json.loads(record.read_text()).get("config", {}).get("aux", {})
    entity = aux.get("entity_layer") or aux.get("layer")
    name = (aux.get("name_layer") or 0) if aux.get("name") else None
    return entity, aux.get("attention_layer"), aux.get("query_layer") or entity, name


def probe_tile(
    policy,
    tile: list,
    entity_layer: int,
    attention_layer: int,
    query_layer: int,
    classes,
    name_layer: int | None = None,
    places=None,
):
    """:func:`token_verdicts` summed over the questions of ``tile`` (with "query right" /
    "query wrong": the class read after ``query_layer`` where the first digit is written;
    with ``name_layer``, :func:`name_verdicts` over ``places``, 0 meaning the last layer)
    and one (name question, :func:`first_look`) per question (stage-1 teacher answers, the
    policy's frame)."""
    import torch

    tokenizer = policy.processor.tokenizer
    tokens = aux_labels.LabelTokens.of(tokenizer)
    defaults = policy.processor.defaults
    low = defaults.min_pixels or DEFAULT_MIN_PIXELS
    high = defaults.max_pixels or DEFAULT_MAX_PIXELS
    frames = Frames.for_image(tile[0].sat.size, low, high, policy.family.factor)  # one tile
    every = [
        sample_aux_labels(sample, frames, policy.family, tokenizer, tile[:k] + tile[k + 1 :])
        for k, sample in enumerate(tile)
    ]
    on_tile = {int(tokens.of_name(tokenizer, s.query)) for s in tile if s.level == "socio-name"}
    layers = (entity_layer,) if name_layer is None else (entity_layer, name_layer or None)
    counts, looks = Counter(), []
    for k, (sample, labels) in enumerate(zip(tile, every, strict=True)):
        example = teacher_examples(sample, low, high, family=policy.family)[0]
        batch = TeacherBatch.of(policy, [example])
        found = aux_labels.coordinate_positions(tokenizer, batch.answers[0])
        first = batch.predicted_at([found[0][0]]) if found else None
        with torch.no_grad():
            _, logits, weights, asked = policy.logprobs_and_image_logits(
                batch.inputs,
                batch.ids,
                batch.mask,
                layers,
                attention_layer,
                None if first is None else torch.stack([torch.zeros_like(first), first], 1),
                query_layer,
            )
        predicted = classes[logits[0][:, classes].argmax(-1).numpy()]
        counts += token_verdicts(predicted, labels.entity, tokens.none)
        if name_layer is not None:
            said = places[logits[1][:, places].argmax(-1).numpy()]
            counts += name_verdicts(said, labels.name, on_tile)
        if first is None:
            continue
        named = classes[int(asked[0, classes].argmax())]
        counts["query right" if named == labels.target else "query wrong"] += 1
        image = batch.image_tokens(0)
        row = weights[0, 0, first[0], image].float().numpy()
        size = labels.grid[0] * labels.grid[1]
        on_map = np.arange(len(image)) < size  # an x coordinate: the map's tokens
        other_looks = [other.look & on_map for j, other in enumerate(every) if j != k]
        named = sample.level == "socio-name"
        looks.append((named, *first_look(row, labels.look & on_map, other_looks)))
    return counts, looks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", required=True, help="policy folder")
    parser.add_argument("--tiles", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1000, help="synthetic seed (held out: 1000)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--entity-layer", type=int, default=None, help="default: as trained")
    parser.add_argument("--attention-layer", type=int, default=None, help="default: as trained")
    parser.add_argument(
        "--query-layer", type=int, default=None, help="default: as trained, else the entity layer"
    )
    parser.add_argument("--name-layer", type=int, default=None, help="default: as trained")
    args = parser.parse_args(argv)
    from socioseg.models.vlm import VisionLanguageModel

    trained = trained_layers(args.vlm)
    entity_layer = args.entity_layer or trained[0]
    attention_layer = args.attention_layer or trained[1]
    query_layer = args.query_layer or trained[2] or entity_layer
    name_layer = args.name_layer if args.name_layer is not None else trained[3]
    if entity_layer is None or attention_layer is None:
        parser.error(
            f"{args.vlm}: no training.json with aux layers; give --entity-layer and "
            "--attention-layer"
        )
    policy = VisionLanguageModel.from_pretrained(args.vlm, "cpu", "float32")
    policy.model.eval()
    tokenizer = policy.processor.tokenizer
    names = ["none", *(kind.socio_class for kind in KINDS)]
    classes = np.unique([tokenizer(name).input_ids[0] for name in names])
    places = np.unique([aux_labels.LabelTokens.of_name(tokenizer, place) for place in PLACES])
    counts, looks = Counter(), []
    for index in range(args.tiles):
        tile = generate_tile(args.seed, index, args.size, MAX_QUERIES, placement="random")
        tile_counts, tile_looks = probe_tile(
            policy, tile, entity_layer, attention_layer, query_layer, classes, name_layer, places
        )
        counts += tile_counts
        looks += tile_looks
    on_entity = sum(counts[v] for v in VERDICTS)
    on_none = counts["none ok"] + counts["none wrong"]
    shares = " / ".join(f"{counts[v] / max(on_entity, 1):.2f}" for v in VERDICTS)
    look = np.asarray(looks, dtype=float).reshape(-1, 4)
    names = look[:, 0] > 0
    asked = counts["query right"] / max(counts["query right"] + counts["query wrong"], 1)
    print(
        f"{args.vlm}: {len(looks)} questions on {args.tiles} tiles (seed {args.seed}); entity "
        f"labels after layer {entity_layer}, head 0 of layer {attention_layer}, the asked "
        f"class after layer {query_layer}"
    )
    print(
        "| on-entity tokens: own class / none / other class | none tokens: none "
        "| first x: asked class named | first x: mass on target / on other entities "
        "| target above each other |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {shares} ({on_entity}) | {counts['none ok'] / max(on_none, 1):.2f} ({on_none}) "
        f"| {asked:.0%} | {look[:, 1].mean():.2f} / {look[:, 2].mean():.2f} "
        f"| {look[:, 3].mean():.0%} |"
    )
    picked = {
        kind: f"{look[rows, 3].mean():.0%} of {int(rows.sum())}" if rows.any() else "-"
        for kind, rows in (("names", names), ("others", ~names))
    }
    print(f"target above each other: name questions {picked['names']}, others {picked['others']}")
    if name_layer is not None:
        named = sum(counts[v] for v in NAME_VERDICTS)
        shares = " / ".join(f"{counts[v] / max(named, 1):.2f}" for v in NAME_VERDICTS)
        print(
            f"name labels after layer {name_layer or 'the last'}, on named entities' tokens "
            f"({named}): {' / '.join(NAME_VERDICTS)} {shares} (chance 1/{len(places)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
