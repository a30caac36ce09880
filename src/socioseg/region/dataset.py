"""``make-dataset``: a SocioSeg folder dataset from a satellite raster, its map and your labels.

The raster pair is cut into non-overlapping ``tile`` x ``tile`` windows (a remainder narrower
than a tile at the right and bottom edges is left out). For each requested level and each
tile, every query value whose polygons cover at least ``min_pixels`` of the tile gives one
sample: ``question.json`` holds the value, ``mask.png`` all polygons with that value in the
tile (a pixel is in when its centre is inside, as ``rasterio.features.rasterize`` does).
Levels: ``socio-name`` queries come from ``query_field``, ``socio-class`` from ``class_field``,
``socio-function`` from ``function_field``.

Split (train/val/test, 6:1:3 of samples by default) is spatially blocked: tiles are grouped in
``block`` x ``block`` blocks; blocks that one named entity touches (all polygons sharing a
``query_field`` value, so also every single polygon) are joined; whole groups go to one split.
So no entity, and no polygon, appears in two splits. Groups are dealt in a seeded order, each
to the split furthest below its share.

Writes ``<out>/<split>/<id>/{sat,map,mask}.png + question.json``, ``<out>/levels.json``
(``{id: {"level", "class"}}``, read by ``--levels`` and by training's ``data.levels``) and
``<out>/index.jsonl`` (per sample: split, query, level, class, tile window in raster pixels).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socioseg.publish import publish_dir, staging_dir
from socioseg.region.dataset_files import TileImages, check_out, check_size
from socioseg.region.grid import Grid
from socioseg.region.labels import Labels, read_labels
from socioseg.region.raster import AreaError, RasterSource, check_same_grid

SPLITS = ("train", "val", "test")
LEVEL_FIELDS = {"socio-name": "query", "socio-class": "class", "socio-function": "function"}


@dataclass(frozen=True)
class DatasetSpec:
    """How to cut the dataset; see the module docstring."""

    query_field: str
    class_field: str | None = None
    function_field: str | None = None
    levels: tuple[str, ...] | None = None  # default: every level whose field is given
    tile: int = 768
    block: int = 2
    split: tuple[float, float, float] = (0.6, 0.1, 0.3)
    min_pixels: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tile < 64:
            raise AreaError(f"--tile must be at least 64 pixels, got {self.tile}")
        if self.block < 1 or self.min_pixels < 1:
            raise AreaError("--block and --min-pixels must be at least 1")
        if len(self.split) != 3 or min(self.split) < 0 or not sum(self.split) > 0:
            raise AreaError(f"--split needs three non-negative shares, got {self.split}")
        for level in self.levels or ():
            if level not in LEVEL_FIELDS:
                raise AreaError(f"--levels: unknown level {level!r}; use {', '.join(LEVEL_FIELDS)}")
            if self.field(level) is None:
                raise AreaError(f"--levels {level} needs --{LEVEL_FIELDS[level]}-field")

    def field(self, level: str) -> str | None:
        return {
            "socio-name": self.query_field,
            "socio-class": self.class_field,
            "socio-function": self.function_field,
        }[level]

    def chosen_levels(self) -> tuple[str, ...]:
        return self.levels or tuple(lv for lv in LEVEL_FIELDS if self.field(lv) is not None)


@dataclass(frozen=True)
class _Sample:
    id: str
    tile: tuple[int, int]  # (row, col)
    level: str
    query: str
    socio_class: str | None
    features: tuple[int, ...]


def make_dataset(
    sat, map_, labels_path, out, spec: DatasetSpec, *, allow_large=False, progress=False
) -> dict:
    """Write the dataset (see the module docstring and :mod:`~socioseg.region.dataset_files`);
    returns a summary (counts per split/level, shared tile images).

    Raises :class:`AreaError` (one line) on bad inputs, a non-empty ``out``, or more than
    :data:`~socioseg.region.dataset_files.LARGE_SAMPLES` samples without ``allow_large``.
    """
    out = Path(out)
    check_out(out)
    grid = Grid.of_raster(sat, needed_for="make-dataset places the labels on it")
    fields = [spec.field(level) for level in spec.chosen_levels()]
    if spec.class_field and spec.class_field not in fields:
        fields.append(spec.class_field)
    labels = read_labels(labels_path, list(dict.fromkeys([spec.query_field, *fields])), grid)
    rows, cols = grid.height // spec.tile, grid.width // spec.tile
    if not rows or not cols:
        raise AreaError(f"{sat} is smaller than one {spec.tile}-px tile; lower --tile")
    cover = _tile_cover(labels, rows, cols, spec.tile)
    samples = _samples(labels, cover, spec)
    if not samples:
        raise AreaError(f"{labels_path}: no polygon covers {spec.min_pixels} px of any tile")
    check_size(len(samples), len({s.tile for s in samples}), allow_large)
    split_of = _split_tiles(labels, cover, spec, samples)
    stage = staging_dir(out)
    counts, shared = _write(sat, map_, labels, samples, split_of, stage, spec, progress)
    publish_dir(stage, out)
    notes = []
    empty = [
        split
        for split, share in zip(SPLITS, spec.split, strict=True)
        if share and not counts[split]
    ]
    if empty:
        notes.append(
            f"{' and '.join(empty)} got no samples: entities join the region's blocks into too "
            "few groups; use a larger region, or a smaller --block or --tile"
        )
    summary = {"samples": len(samples), "tiles": rows * cols, "splits": counts, "notes": notes}
    return {**summary, "shared_images": shared}


def _tile_cover(labels: Labels, rows: int, cols: int, tile: int) -> dict[tuple, dict[int, float]]:
    """``{(row, col): {feature: covered pixels}}`` for every tile a feature overlaps."""
    import shapely

    tree = shapely.STRtree(labels.geoms)
    cover: dict[tuple, dict[int, float]] = {}
    for r in range(rows):
        for c in range(cols):
            box = shapely.box(c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)
            hits = tree.query(box, predicate="intersects")
            areas = shapely.area(shapely.intersection(labels.geoms[hits], box))
            cover[(r, c)] = {int(i): float(a) for i, a in zip(hits, areas, strict=True) if a > 0}
    return cover


def _samples(labels: Labels, cover, spec: DatasetSpec) -> list[_Sample]:
    samples = []
    for level in spec.chosen_levels():
        values = labels.fields[spec.field(level)]
        number = {v: k for k, v in enumerate(sorted(set(values)))}
        for (r, c), features in cover.items():
            groups: dict[str, list[int]] = defaultdict(list)
            for i in features:
                groups[values[i]].append(i)
            for value, members in sorted(groups.items()):
                if sum(features[i] for i in members) < spec.min_pixels:
                    continue
                socio_class = _class_of(labels, spec, level, value, members)
                sid = f"r{r}_c{c}-{level.removeprefix('socio-')}{number[value]:04d}"
                samples.append(_Sample(sid, (r, c), level, value, socio_class, tuple(members)))
    return samples


def _class_of(labels: Labels, spec: DatasetSpec, level, value, members) -> str | None:
    if level == "socio-class":
        return value
    if level == "socio-name" and spec.class_field:
        classes = {labels.fields[spec.class_field][i] for i in members}
        return classes.pop() if len(classes) == 1 else None
    return None


def _split_tiles(labels: Labels, cover, spec: DatasetSpec, samples) -> dict[tuple, str]:
    """Split per tile: blocks joined by shared entities, groups dealt to the neediest split."""
    parent: dict[tuple, tuple] = {}

    def find(b):
        parent.setdefault(b, b)
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    def block(tile):
        return (tile[0] // spec.block, tile[1] // spec.block)

    touched: dict[str, set[tuple]] = defaultdict(set)
    for tile, features in cover.items():
        find(block(tile))
        for i in features:
            touched[labels.fields[spec.query_field][i]].add(block(tile))
    for blocks in touched.values():
        first, *rest = sorted(blocks)
        for b in rest:
            parent[find(b)] = find(first)
    per_group: dict[tuple, int] = defaultdict(int)
    for s in samples:
        per_group[find(block(s.tile))] += 1
    groups = sorted(per_group)
    random.Random(spec.seed).shuffle(groups)
    shares = np.asarray(spec.split, dtype=float) / sum(spec.split)
    taken = np.zeros(3)
    split_of_group = {}
    for group in groups:
        k = int(np.argmax(shares * (taken.sum() + per_group[group]) - taken))
        split_of_group[group] = SPLITS[k]
        taken[k] += per_group[group]
    return {tile: split_of_group.get(find(block(tile)), "train") for tile in cover}


def _write(sat, map_, labels: Labels, samples, split_of, out: Path, spec, progress) -> tuple:
    """Write every sample into ``out`` (the staging folder); ``(counts, shared images)``."""
    from rasterio.features import rasterize
    from tqdm.auto import tqdm

    from socioseg.data.sources import FOLDER_FILES, QUESTION_FILE
    from socioseg.data.writers import png_bytes
    from socioseg.render import mask_image

    by_tile: dict[tuple, list[_Sample]] = defaultdict(list)
    for s in samples:
        by_tile[s.tile].append(s)
    levels, counts = {}, {split: defaultdict(int) for split in SPLITS}
    images = TileImages()
    with (
        RasterSource(sat) as sat_src,
        RasterSource(map_) as map_src,
        (out / "index.jsonl").open("w") as index,
        tqdm(total=len(samples), unit="sample", desc="make-dataset", disable=not progress) as bar,
    ):
        check_same_grid(sat_src, map_src)
        for (r, c), tile_samples in sorted(by_tile.items()):
            window = (c * spec.tile, r * spec.tile, spec.tile, spec.tile)
            tile_png = {
                FOLDER_FILES["sat"]: png_bytes(sat_src.read(*window)),
                FOLDER_FILES["map"]: png_bytes(map_src.read(*window)),
            }
            images.start_tile()
            for s in tile_samples:
                shapes = [_shifted(labels.geoms[i], window) for i in s.features]
                mask = rasterize(shapes, out_shape=(spec.tile, spec.tile), dtype="uint8") > 0
                split = split_of[s.tile]
                folder = out / split / s.id
                folder.mkdir(parents=True)
                for name, data in tile_png.items():
                    images.put(folder, name, data)
                (folder / FOLDER_FILES["mask"]).write_bytes(png_bytes(mask_image(mask)))
                question = json.dumps({"problem": s.query}, ensure_ascii=False)
                (folder / QUESTION_FILE).write_text(question)
                levels[s.id] = {"level": s.level, "class": s.socio_class}
                counts[split][s.level] += 1
                row = {"id": s.id, "split": split, "query": s.query, "level": s.level}
                row |= {"class": s.socio_class, "window": list(window)}
                index.write(json.dumps(row, ensure_ascii=False) + "\n")
                bar.update(1)
    (out / "levels.json").write_text(json.dumps(levels, indent=1, ensure_ascii=False) + "\n")
    shared = {"linked": images.linked, "copied": images.copied}
    return {split: dict(by_level) for split, by_level in counts.items()}, shared


def _shifted(geom, window):
    import shapely

    return shapely.affinity.translate(geom, -window[0], -window[1])
