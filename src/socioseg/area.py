"""Segment a large area: tile two aligned rasters, run batched inference, stitch, polygonize.

The satellite and map rasters (same pixel grid) are cut into ``tile x tile`` windows that
overlap by at least ``overlap`` pixels (edge tiles are shifted inwards, so every tile has full
size when the raster is larger than one tile). Each batch of tiles goes through
``reasoner.segment_batch``; every finished tile's mask is saved under ``out_dir/tiles/`` and its
row appended to ``tiles.jsonl`` before the next batch, so memory is bounded by the batch and a
rerun skips finished tiles.

Stitching takes the union of the tile masks: where tiles overlap, a pixel is in the mask when
any tile put it there, so an entity cut by one tile's border is joined by its neighbour's view.
Entities (4-connected regions of the union) are found per cluster of tiles whose masks touch,
so only such a cluster, never the whole raster, is held in memory.

Outputs in ``out_dir``: ``mask.tif`` (0/255 uint8 on the input grid; ``mask.png`` for inputs
without georeferencing), ``entities.geojson`` (one polygon per entity, raster CRS), ``tiles.jsonl``,
``run.json`` (the settings; a rerun must match them) and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socioseg.gis import (
    AreaError,
    Georef,
    RasterSource,
    check_same_grid,
    entity_geometry,
    feature_collection,
    label_entities,
    write_mask_raster,
)
from socioseg.outputs import prediction_to_json
from socioseg.types import MODES

DEFAULT_TILE = 768
DEFAULT_OVERLAP = 128
DEFAULT_BATCH_SIZE = 4
DEFAULT_MIN_AREA_PX = 16
MIN_TILE = 64
STRIP_ROWS = 512

__all__ = ["AreaError", "AreaSummary", "Tile", "segment_area", "tile_grid"]


@dataclass(frozen=True)
class Tile:
    """A window of the raster: column ``x``, row ``y``, ``width`` x ``height`` pixels."""

    id: str
    x: int
    y: int
    width: int
    height: int

    def window(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True)
class AreaSummary:
    """What one ``segment_area`` call did and wrote (paths are inside ``out_dir``)."""

    out_dir: str
    mask_path: str
    geojson_path: str
    tiles_jsonl: str
    tiles_total: int
    tiles_run: int
    tiles_resumed: int
    tiles_nodata: int
    entities: int
    mask_pixels: int
    crs: str | None
    seconds: float


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = -(-(length - tile) // (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_grid(size: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles covering a ``(width, height)`` raster; neighbours overlap >= ``overlap``.

    Starts are spread evenly from 0 to ``side - tile``; a raster side shorter than ``tile``
    gives one tile of that side's length. Ids are ``r{row}_c{col}``.
    """
    width, height = size
    xs, ys = _starts(width, tile, overlap), _starts(height, tile, overlap)
    return [
        Tile(f"r{r}_c{c}", x, y, min(tile, width), min(tile, height))
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    ]


def _check_settings(query: str, tile: int, overlap: int, batch_size: int, mode: str) -> None:
    if not query.strip():
        raise AreaError("the query is empty")
    if tile < MIN_TILE:
        raise AreaError(f"--tile must be at least {MIN_TILE} pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise AreaError(f"--overlap must be in [0, tile={tile}), got {overlap}")
    if batch_size < 1:
        raise AreaError(f"--batch-size must be at least 1, got {batch_size}")
    if mode not in MODES:
        raise AreaError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


class _RunDir:
    """The files of one run: settings, per-tile masks and rows; append-only, crash-safe."""

    def __init__(self, out_dir: Path, settings: dict[str, Any]):
        self.root = out_dir
        self.tiles_dir = out_dir / "tiles"
        self.jsonl = out_dir / "tiles.jsonl"
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        settings_path = out_dir / "run.json"
        if settings_path.exists():
            previous = json.loads(settings_path.read_text())
            changed = [k for k in settings if k != "inputs" and previous.get(k) != settings[k]]
            if changed:
                raise AreaError(
                    f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                    "use another --out directory or delete it"
                )
        settings_path.write_text(json.dumps(settings, indent=2) + "\n")
        self.rows = self._load_rows()

    def _load_rows(self) -> dict[str, dict]:
        if not self.jsonl.exists():
            return {}
        text = self.jsonl.read_text()
        if text and not text.endswith("\n"):
            # A run killed mid-write leaves a partial last line: drop it, keep appending cleanly.
            text = text[: text.rfind("\n") + 1]
            self.jsonl.write_text(text)
        rows = {}
        for line in text.splitlines():
            row = json.loads(line)
            # A tile is finished once its row is written, and its mask saved if it had one.
            if not row.get("mask_bbox") or self.mask_path(row["tile"]).exists():
                rows[row["tile"]] = _slim(row)
        return rows

    def mask_path(self, tile_id: str) -> Path:
        return self.tiles_dir / f"{tile_id}.npz"

    def load_mask(self, tile_id: str) -> np.ndarray:
        with np.load(self.mask_path(tile_id)) as data:
            return data["mask"]

    def save(self, row: dict, mask: np.ndarray | None) -> None:
        if mask is not None:
            tmp = self.tiles_dir / f"{row['tile']}.tmp.npz"
            np.savez_compressed(tmp, mask=mask)
            os.replace(tmp, self.mask_path(row["tile"]))
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows[row["tile"]] = _slim(row)


def _slim(row: dict) -> dict:
    """The fields stitching needs; responses stay on disk so memory does not grow with them."""
    return {k: row.get(k) for k in ("tile", "window", "status", "mask_bbox")}


def _tile_row(tile: Tile, pred, seconds: float) -> dict:
    ys, xs = np.nonzero(pred.mask)
    bbox = None
    if len(xs):
        # In raster pixels, end-exclusive: lets stitching find touching tiles without their masks.
        bbox = [tile.x + int(xs.min()), tile.y + int(ys.min())]
        bbox += [tile.x + int(xs.max()) + 1, tile.y + int(ys.max()) + 1]
    row = {"tile": tile.id, "window": tile.window(), "status": "done"}
    return {**row, **prediction_to_json(pred, mask_bbox=bbox, seconds=round(seconds, 3))}


def _run_tiles(reasoner, sat, map_, query, mode, todo, run, batch_size, progress) -> int:
    from tqdm.auto import tqdm

    ran = 0
    with tqdm(total=len(todo), unit="tile", desc="segment-area", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = []
            for tile in todo[start : start + batch_size]:
                if sat.is_nodata(*tile.window()):
                    run.save({"tile": tile.id, "window": tile.window(), "status": "nodata"}, None)
                    bar.update(1)
                else:
                    batch.append(tile)
            if not batch:
                continue
            items = [(sat.read(*t.window()), map_.read(*t.window()), query) for t in batch]
            began = time.perf_counter()
            preds = reasoner.segment_batch(items, mode=mode)
            per_tile = (time.perf_counter() - began) / len(batch)
            if len(preds) != len(batch):
                raise RuntimeError(f"segment_batch returned {len(preds)} results for {len(batch)}")
            for tile, pred in zip(batch, preds, strict=True):
                mask = np.asarray(pred.mask, dtype=bool)
                if mask.shape != (tile.height, tile.width):
                    raise RuntimeError(f"tile {tile.id}: mask {mask.shape} != tile size")
                row = _tile_row(tile, pred, per_tile)
                run.save(row, mask if row["mask_pixels"] else None)
                ran += 1
                bar.update(1)
    return ran


def _clusters(rows: Sequence[dict]) -> list[list[dict]]:
    """Group non-empty tiles whose mask boxes overlap or touch (8-neighbourhood)."""
    if not rows:
        return []
    boxes = np.array([r["mask_bbox"] for r in rows], dtype=np.int64)
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(rows)):
        b = boxes[i]
        touch = (
            (boxes[:, 0] <= b[2])
            & (b[0] <= boxes[:, 2])
            & (boxes[:, 1] <= b[3])
            & (b[1] <= boxes[:, 3])
        )
        for j in np.nonzero(touch[i + 1 :])[0] + i + 1:
            parent[find(int(j))] = find(i)
    groups: dict[int, list[dict]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(find(i), []).append(row)
    return list(groups.values())


def _clip(window: Sequence[int], box: Sequence[int]) -> tuple[tuple[slice, ...], ...]:
    """Slices of ``box`` (x0, y0, x1, y1) and of a tile at ``window`` covering their overlap."""
    tx, ty, tw, th = window
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(tx, x0), max(ty, y0), min(tx + tw, x1), min(ty + th, y1)
    in_box = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    in_tile = (slice(cy0 - ty, cy1 - ty), slice(cx0 - tx, cx1 - tx))
    return in_box, in_tile


def _cluster_features(cluster, run, georef, query, min_area_px) -> list[dict]:
    """Features of the entities a cluster of tiles found, labelled on the cluster's box only."""
    boxes = np.array([r["mask_bbox"] for r in cluster])
    box = (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
    canvas = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
    masks = {row["tile"]: run.load_mask(row["tile"]) for row in cluster}
    for row in cluster:
        in_box, in_tile = _clip(row["window"], box)
        canvas[in_box] |= masks[row["tile"]][in_tile]
    labels, entities = label_entities(canvas, min_area_px)
    sources: dict[int, set[str]] = {}
    for row in cluster:
        in_box, in_tile = _clip(row["window"], box)
        for label in np.unique(labels[in_box][masks[row["tile"]][in_tile]]):
            sources.setdefault(int(label), set()).add(row["tile"])
    transform = None if georef is None else georef.transform
    pixel_area = 1.0 if georef is None else abs(georef.transform.determinant)
    return [
        {
            "type": "Feature",
            "properties": {
                "query": query,
                "tiles": sorted(sources.get(e.label, ())),
                "area": e.area_px * pixel_area,
                "area_px": e.area_px,
            },
            "geometry": entity_geometry(e, transform, (int(box[0]), int(box[1]))),
        }
        for e in entities
    ]


def _mask_strips(
    rows: Sequence[dict], run: _RunDir, size: tuple[int, int], counter: list[int]
) -> Iterator[tuple[int, np.ndarray]]:
    """Row strips of the stitched mask (union of tile masks); adds their pixels to counter[0]."""
    width, height = size
    cache: dict[str, np.ndarray] = {}
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        strip = np.zeros((bottom - top, width), dtype=bool)
        needed = [r for r in rows if r["mask_bbox"][1] < bottom and r["mask_bbox"][3] > top]
        cache = {r["tile"]: cache.get(r["tile"]) for r in needed}
        for row in needed:
            if cache[row["tile"]] is None:
                cache[row["tile"]] = run.load_mask(row["tile"])
            in_strip, in_tile = _clip(row["window"], (0, top, width, bottom))
            strip[in_strip] |= cache[row["tile"]][in_tile]
        counter[0] += int(strip.sum())
        yield top, strip


def segment_area(
    reasoner,
    sat_path: str | Path,
    map_path: str | Path,
    query: str,
    out_dir: str | Path,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    mode: str = "two-stage",
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    progress: bool = True,
) -> AreaSummary:
    """Segment ``query`` over two aligned rasters and write mask, entities and per-tile logs.

    Args:
        reasoner: anything with ``segment_batch([(sat, map, query), ...], mode=...)`` returning
            :class:`socioseg.types.Prediction` objects (e.g. ``SocioReasoner``), or a
            zero-argument callable returning one, called only once the inputs have been
            checked and tiles remain to run (so bad inputs fail before a model loads).
        sat_path, map_path: rasters on one pixel grid (GeoTIFF or any GDAL raster with
            rasterio installed; PNG/JPEG also without), 8-bit, 1, 3 or 4 bands.
        query: the text query, used for every tile.
        out_dir: created if missing; a previous run there with the same settings is resumed.
        tile, overlap: tile side and minimum overlap of neighbouring tiles, in pixels.
        batch_size: tiles per ``segment_batch`` call (also what is held in memory).
        mode: one of :data:`socioseg.types.MODES`.
        min_area_px: entities smaller than this many pixels get no polygon (the mask keeps them).
        progress: show a tqdm bar (tiles/s).

    Raises:
        AreaError: missing or unreadable input, rasters on different grids, bad settings,
            or ``out_dir`` holding a run with other settings. Its message is one line.
    """
    _check_settings(query, tile, overlap, batch_size, mode)
    began = time.perf_counter()
    out = Path(out_dir)
    with RasterSource(sat_path) as sat, RasterSource(map_path) as map_:
        georef = check_same_grid(sat, map_)
        settings = {
            "query": query,
            "mode": mode,
            "size": list(sat.size),
            "tile": tile,
            "overlap": overlap,
            "inputs": {"sat": str(sat_path), "map": str(map_path)},
        }
        run = _RunDir(out, settings)
        tiles = tile_grid(sat.size, tile, overlap)
        resumed = sum(t.id in run.rows for t in tiles)
        todo = [t for t in tiles if t.id not in run.rows]
        if todo and not hasattr(reasoner, "segment_batch"):
            reasoner = reasoner()
        ran = _run_tiles(reasoner, sat, map_, query, mode, todo, run, batch_size, progress)
        size = sat.size
    return _write_outputs(run, tiles, size, georef, query, min_area_px, ran, resumed, began)


def _write_outputs(
    run, tiles, size, georef: Georef | None, query, min_area_px, ran, resumed, began
):
    rows = [run.rows[t.id] for t in tiles]
    found = [r for r in rows if r.get("mask_bbox")]
    counter = [0]
    strips = _mask_strips(found, run, size, counter)
    mask_path = write_mask_raster(run.root / "mask", size, georef, strips)
    features = []
    for cluster in _clusters(found):
        features += _cluster_features(cluster, run, georef, query, min_area_px)
    for i, feature in enumerate(features):
        feature["properties"] = {"id": i, **feature["properties"]}
    geojson_path = run.root / "entities.geojson"
    geojson_path.write_text(json.dumps(feature_collection(features, georef)) + "\n")
    summary = AreaSummary(
        out_dir=str(run.root),
        mask_path=str(mask_path),
        geojson_path=str(geojson_path),
        tiles_jsonl=str(run.jsonl),
        tiles_total=len(tiles),
        tiles_run=ran,
        tiles_resumed=resumed,
        tiles_nodata=sum(r["status"] == "nodata" for r in rows),
        entities=len(features),
        mask_pixels=counter[0],
        crs=None if georef is None else georef.crs_name(),
        seconds=round(time.perf_counter() - began, 3),
    )
    (run.root / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary
