"""A synthetic SocioSeg: city tiles with a web-map image, a satellite image, a query and a mask.

For tests, tutorials and training smoke runs; no real place is depicted. Each tile has a
jittered street grid; 3 to 5 of its blocks (or half-blocks) hold named entities of several
socio-classes (School, Hospital, Park, Stadium, ...), each with one of the 10 socio-functions.
Where they go is the ``placement``: "prominent" (the default, what socioseg-mini was trained
and scored on) gives the targets the most visible blocks, so a model can score by finding the
most prominent entity block without reading the query; "random" draws every entity's block
among those at least half inside the tile, targets and distractors alike, so only the query,
the map and the satellite image tell them apart.
The map shows roads, land-use fills, building footprints and a labelled pin per entity; the
satellite image shows the same geometry as textured roofs, vegetation, water, fields and roads.

The query names one entity (socio-name), its class (socio-class) or its function
(socio-function); distractors are chosen so that a class or function query matches only the
intended entities. About :data:`MULTI_SHARE` of samples are class or function queries with 2 or
3 matching entities, all in the mask.

Generation is deterministic: sample ``index`` of seed ``seed`` depends on ``(seed, index)``
only, and :func:`write_dataset` writes the same bytes on every run.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from socioseg.data.dataset import Sample
from socioseg.data.levels import FUNCTION_NAMES
from socioseg.data.synth.catalog import FUNCTION_COLORS, KINDS, MINOR_POIS, PLACES, Kind
from socioseg.data.synth.city import Frame, Region, centroid, clip_to_tile, road_grid, visible_area
from socioseg.data.synth.landuse import BIG_STYLES, STYLES
from socioseg.data.synth.paint import Label, PlacedLabel, draw_map, render_mask, render_satellite
from socioseg.data.writers import Encoded, FolderWriter, ParquetWriter, mask_image, png_bytes

MULTI_SHARE = 0.11
VISIBLE_SHARE = 0.5  # an entity's block is at least this much inside the tile
LEVEL_WEIGHTS = {"socio-name": 0.4, "socio-class": 0.3, "socio-function": 0.3}
SPLITS = ("train", "val", "test")
# Tile side: below 128 px the road grid has no room; above 4096 px one tile costs ~50 MB per
# image and minutes of drawing, with nothing more to learn from it.
MIN_SIZE = 128
MAX_SIZE = 4096
PLACEMENTS = ("prominent", "random")
MAX_QUERIES = 5  # a tile holds at most 5 entities: its query and name queries about the others


_BY_FUNCTION = {f: [k for k in KINDS if k.function == f] for f in FUNCTION_NAMES}


@dataclass(frozen=True)
class _Plan:
    level: str
    query: str
    socio_class: str | None
    kinds: list[Kind]  # targets first
    n_targets: int


def _plan(rng: np.random.Generator) -> _Plan:
    """Pick the query level, the target(s) and distractors that keep the query unambiguous."""
    n_entities = int(rng.integers(3, 6))
    if rng.random() < MULTI_SHARE:
        level = ("socio-class", "socio-function")[int(rng.integers(2))]
        n_targets = 2 if rng.random() < 0.75 else 3
    else:
        levels = list(LEVEL_WEIGHTS)
        level = levels[int(rng.choice(len(levels), p=list(LEVEL_WEIGHTS.values())))]
        n_targets = 1
    function = FUNCTION_NAMES[int(rng.integers(len(FUNCTION_NAMES)))]
    options = _BY_FUNCTION[function]
    first = options[int(rng.integers(len(options)))]
    if level == "socio-function":
        targets = [first] + [options[int(rng.integers(len(options)))] for _ in range(n_targets - 1)]
    else:
        targets = [first] * n_targets
    others = [f for f in FUNCTION_NAMES if f != function]
    distractors = []
    for _ in range(max(n_entities, n_targets + 1) - n_targets):
        if level == "socio-name" and rng.random() < 0.3:
            distractors.append(first)  # same class, different name: only the name tells
            continue
        fn = others[int(rng.integers(len(others)))]
        distractors.append(_BY_FUNCTION[fn][int(rng.integers(len(_BY_FUNCTION[fn])))])
    classes = {k.socio_class for k in targets}
    socio_class = first.socio_class if len(classes) == 1 else None
    query = {"socio-class": first.socio_class, "socio-function": function}.get(level, "")
    return _Plan(level, query, socio_class, targets + distractors, n_targets)


def _names(rng: np.random.Generator, kinds: list[Kind]) -> list[str]:
    names: list[str] = []
    while len(names) < len(kinds):
        kind = kinds[len(names)]
        template = kind.names[int(rng.integers(len(kind.names)))]
        name = template.format(p=PLACES[int(rng.integers(len(PLACES)))], n=int(rng.integers(1, 40)))
        if name not in names:
            names.append(name)
    return names


def _blocks_in_order(
    rng: np.random.Generator, plan: _Plan, blocks: list, placement: str
) -> list[int]:
    """Every block index: the entities' blocks in plan order (targets first), as ``placement``
    says, then the others, most visible first (give or take a little noise)."""
    order = sorted(range(len(blocks)), key=lambda k: -blocks[k].visible + rng.uniform(0, 0.1))
    if placement == "random":
        pool = [k for k in order if blocks[k].visible > VISIBLE_SHARE]
        pool = pool if len(pool) >= len(plan.kinds) else order[: len(plan.kinds)]
        hosts = [pool[int(k)] for k in rng.permutation(len(pool))[: len(plan.kinds)]]
    else:  # targets on the most visible blocks, distractors on any reasonably visible one
        hosts, others = order[: plan.n_targets], order[plan.n_targets :]
        needed = len(plan.kinds) - plan.n_targets
        pool = [k for k in others if blocks[k].visible > 0.3]
        pool = pool if len(pool) >= needed else others
        hosts += [pool[int(k)] for k in rng.permutation(len(pool))[:needed]]
    return hosts + [k for k in order if k not in hosts]


def _layout(rng: np.random.Generator, plan: _Plan, size: int, placement: str = "prominent"):
    """Streets, regions (entities first, in plan order) and the map labels."""
    s = size / 768
    roads, blocks = road_grid(rng, size)
    order = _blocks_in_order(rng, plan, blocks, placement)
    hosts = order[: len(plan.kinds)]
    regions: list[Region] = []
    rest: list[tuple[list, str]] = []
    for entity, (kind, block) in enumerate(zip(plan.kinds, hosts, strict=True)):
        frame = Frame(blocks[block].corners)
        whole = 0.85 if kind.style in BIG_STYLES else 0.5
        if rng.random() < whole or min(frame.w, frame.h) < 90 * s:
            poly, spare = frame.rect(0, 0, frame.w, frame.h), None
        else:
            axis = 0 if frame.w >= frame.h else 1
            parts = frame.split(axis, rng.uniform(0.45, 0.65), 8 * s)
            keep = int(rng.integers(2))
            if placement == "random":  # the entity is the half on the tile
                on_tile = [visible_area(part, size) for part in parts]
                keep = 1 - keep if on_tile[1 - keep] > 2 * on_tile[keep] else keep
            poly, spare = parts[keep], parts[1 - keep]
        regions.append(_region(rng, poly, kind.style, s, entity))
        if spare is not None:
            rest.append((spare, _background_style(rng)))
    for block in order[len(plan.kinds) :]:
        rest.append((blocks[block].corners, _background_style(rng)))
    labels = []
    for poly, style in rest:
        regions.append(_region(rng, poly, style, s, None))
        if style == "generic" and rng.random() < 0.5:
            labels.append(
                Label(
                    _anchor(poly, size, rng),
                    MINOR_POIS[int(rng.integers(len(MINOR_POIS)))],
                    (150, 150, 150),
                    major=False,
                )
            )
    return roads, regions, labels


def _region(
    rng: np.random.Generator, poly: list, style: str, s: float, entity: int | None
) -> Region:
    ground, parts = STYLES[style](rng, Frame(poly), s)
    return Region(poly, style, ground, parts, entity)


def _background_style(rng: np.random.Generator) -> str:
    styles = ("generic", "green", "bare", "water")
    return styles[int(rng.choice(4, p=[0.62, 0.22, 0.1, 0.06]))]


def _anchor(poly: list, size: int, rng: np.random.Generator | None = None) -> tuple[float, float]:
    clipped = clip_to_tile(poly, size) or poly
    x, y = centroid(clipped)
    if rng is not None:
        x, y = x + rng.uniform(-0.2, 0.2) * size / 8, y + rng.uniform(-0.2, 0.2) * size / 8
    margin = 8 * size / 768
    return (min(max(x, margin), size - margin), min(max(y, margin), size - margin))


def sample_with_targets(
    rng: np.random.Generator, index: int, size: int, placement: str = "prominent"
) -> tuple[Sample, int]:
    """Sample ``index`` (its tile's planned query) and its number of targets, drawn from ``rng``."""
    return _tile(rng, index, size, 1, placement)[0]


def _tile(
    rng: np.random.Generator,
    index: int,
    size: int,
    queries: int,
    placement: str,
    placed: list[PlacedLabel] | None = None,
) -> list[tuple[Sample, int]]:
    """The samples of tile ``index``: its planned query, then up to ``queries - 1`` name queries
    about its other entities (distractors first), each ``(sample, number of targets)``.
    ``placed``: given, receives where the map's labels went."""
    _check(size, placement, queries)
    plan = _plan(rng)
    names = _names(rng, plan.kinds)
    roads, regions, minor = _layout(rng, plan, size, placement)
    entities = [r for r in regions if r.entity is not None]  # in plan order: targets first
    labels = [
        Label(
            _anchor(r.poly, size), names[r.entity], FUNCTION_COLORS[plan.kinds[r.entity].function]
        )
        for r in entities
    ]
    sat = render_satellite(rng, size, regions, roads)
    map_image, drawn = draw_map(size, regions, roads, minor + labels)
    if placed is not None:
        placed += drawn
    tile_id = f"synth-{index:05d}"
    mask = render_mask(size, [r.poly for r in entities[: plan.n_targets]])
    query = plan.query or names[0]
    out = [
        (Sample(tile_id, query, sat, map_image, mask, plan.level, plan.socio_class), plan.n_targets)
    ]
    named = 1 if plan.level == "socio-name" else 0  # entity 0 already asked for by name
    others = [*range(plan.n_targets, len(entities)), *range(named, plan.n_targets)]
    for k, e in enumerate(others[: queries - 1], start=1):
        mask = render_mask(size, [entities[e].poly])
        socio_class = plan.kinds[e].socio_class
        sample = Sample(f"{tile_id}-{k}", names[e], sat, map_image, mask, "socio-name", socio_class)
        out.append((sample, 1))
    return out


def _check(size: int, placement: str, queries: int = 1) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    if not 1 <= queries <= MAX_QUERIES:
        raise ValueError(f"queries must be 1 to {MAX_QUERIES}, got {queries}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def generate_sample(
    seed: int | np.random.Generator, index: int = 0, size: int = 768, placement: str = "prominent"
) -> Sample:
    """One synthetic sample (``size x size`` RGB map and satellite images, bool mask).

    With an int ``seed`` the sample depends on ``(seed, index)`` only; with a
    ``numpy.random.Generator`` it draws from that generator (``index`` then only names it).
    The id is ``"synth-<index:05d>"``; ``level`` and ``socio_class`` are filled in.
    ``placement``: where entities go (module docstring).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([seed, index])
    return sample_with_targets(rng, index, size, placement)[0]


def generate_tile(
    seed: int, index: int = 0, size: int = 768, queries: int = 1, placement: str = "prominent"
) -> list[Sample]:
    """The samples of tile ``index`` of ``seed``, as :func:`write_dataset` writes them: its own
    query, then up to ``queries - 1`` name queries about its other entities (one entity each;
    ids ``synth-<index:05d>-<k>``); all share the tile's two images."""
    rng = np.random.default_rng([seed, index])
    return [sample for sample, _ in _tile(rng, index, size, queries, placement)]


def tile_labels(
    seed: int, index: int = 0, size: int = 768, placement: str = "prominent"
) -> list[PlacedLabel]:
    """Where the map of tile ``index`` of ``seed`` (as :func:`generate_tile` draws it) has its
    labels: every one drawn, entity names (``label.major``) and minor places, in drawing order."""
    placed: list[PlacedLabel] = []
    _tile(np.random.default_rng([seed, index]), index, size, 1, placement, placed)
    return placed


def split_counts(n: int, ratios: tuple[float, ...] = (6, 1, 3)) -> list[int]:
    """Split ``n`` by ``ratios`` with the largest-remainder rule (sums to ``n`` exactly)."""
    if n < 0 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(
            f"need n >= 0 and non-negative ratios with a positive sum, got {n}, {ratios}"
        )
    exact = [n * r / sum(ratios) for r in ratios]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    return counts


def _encode(job: tuple[int, int, int, int, str]) -> list[Encoded]:
    seed, index, size, queries, placement = job
    rng = np.random.default_rng([seed, index])
    (first, n_targets), *others = _tile(rng, index, size, queries, placement)
    out = [Encoded.from_sample(first, n_targets)]
    for sample, n_targets in others:  # the same two images: encoded once
        png = {**out[0].png, "mask": png_bytes(mask_image(sample.mask))}
        out.append(
            Encoded(sample.id, sample.query, sample.level, sample.socio_class, n_targets, png)
        )
    return out


def _check_out(out: Path) -> None:
    """Refuse an output folder that holds anything but a dataset socioseg wrote (one with its
    ``levels.json``): its split folders would be replaced."""
    from socioseg.publish import OutputError, others_listed

    shown = "" if (out / "levels.json").is_file() else others_listed(out)
    if shown:
        raise OutputError(
            f"OUT {out} holds files that are no socioseg dataset ({shown}); they are left "
            "alone: pick a new or empty folder"
        )


def write_dataset(
    out: str | PathLike[str],
    n: int,
    seed: int = 0,
    fmt: Literal["folder", "parquet"] = "folder",
    split_ratios: tuple[float, float, float] = (6, 1, 3),
    size: int = 768,
    workers: int = 1,
    queries: int = 1,
    placement: str = "prominent",
) -> dict:
    """Write ``n`` synthetic tiles as train/val/test in the folder or the parquet layout.

    Folder: ``<out>/<split>/<id>/{map.png, sat.png, mask.png, question.json}``. Parquet:
    ``<out>/data/<split>-00000-of-00001.parquet`` with the Hugging Face columns (Image features,
    PNG bytes). Both also write ``<out>/levels.json`` (``{id: {"level", "class"}}``), usable as
    ``load_socioseg(..., levels=<out>/levels.json)``. A folder that already holds a dataset
    socioseg wrote (its ``levels.json``) has its split folders/files replaced; a non-empty
    folder without one is refused (:class:`~socioseg.publish.OutputError`).
    Tiles ``0 .. n-1`` go to train, val, test in that order (counts from :func:`split_counts`),
    so no tile is in two splits. Each tile gives one sample (id ``synth-<index:05d>``), or with
    ``queries > 1`` up to that many: its planned query, then name queries about its other
    entities (ids ``synth-<index:05d>-<k>``), as SocioSeg asks several questions of one image.
    ``placement``: where entities go (module docstring). ``workers > 1`` generates in that many
    processes; the bytes written do not depend on it. Returns a summary: tiles and samples per
    split, samples per level, multi-instance.
    """
    if fmt not in ("folder", "parquet"):
        raise ValueError(f"fmt must be 'folder' or 'parquet', got {fmt!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check(size, placement, queries)
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = split_counts(n, tuple(split_ratios))
    levels: dict[str, dict[str, str | None]] = {}
    multi = 0
    samples = Counter()
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        start = 0
        for split, count in zip(SPLITS, counts, strict=True):
            jobs = [(seed, i, size, queries, placement) for i in range(start, start + count)]
            start += count
            encoded = pool.map(_encode, jobs, chunksize=4) if pool else map(_encode, jobs)
            if fmt == "folder":
                writer = FolderWriter(out / split)
            else:
                writer = ParquetWriter(out / "data" / f"{split}-00000-of-00001.parquet")
            with writer:
                for tile in encoded:
                    for item in tile:
                        writer.add(item)
                        levels[item.id] = {"level": item.level, "class": item.socio_class}
                        multi += item.n_targets > 1
                        samples[split] += 1
    finally:
        if pool is not None:
            pool.shutdown()
    (out / "levels.json").write_text(json.dumps(levels, indent=1, ensure_ascii=False) + "\n")
    return {
        "out": str(out),
        "format": fmt,
        "n": n,
        "seed": seed,
        "size": size,
        "queries": queries,
        "placement": placement,
        "splits": dict(zip(SPLITS, counts, strict=True)),
        "samples": {split: samples[split] for split in SPLITS},
        "levels": dict(Counter(v["level"] for v in levels.values())),
        "multi_instance": multi,
    }
