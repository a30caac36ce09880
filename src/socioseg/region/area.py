"""Segment a large area: tile two aligned rasters, run batched inference, stitch, polygonize.

The rasters are first brought to the model's resolution: their ground resolution (metres per
pixel, from the CRS) is compared with ``gsd`` (default
:data:`~socioseg.region.grid.SOCIOSEG_GSD`, SocioSeg's); windows of ``tile * gsd / input gsd``
raster pixels are resampled to ``tile`` pixels for the model and its masks resampled back
(nearest), so every output lies on the input grid. Within 5% of ``gsd`` nothing is resampled;
beyond a factor of 2 the summary carries a note. Rasters without a CRS are used as they are.

Windows overlap by at least ``overlap`` model pixels (edge windows are shifted inwards, so
every window has full size when the raster is larger than one). Each (query, window) pair is
one work item; batches go through ``reasoner.segment_batch``, and every finished item's mask
and row are saved before the next batch (:mod:`socioseg.region.run_files`): memory is bounded by the
batch and a rerun skips finished items. Under torchrun (``WORLD_SIZE`` > 1) rank ``r`` runs
items ``r, r + n, ...``, all ranks meet at a gloo barrier, and rank 0 stitches
(:mod:`socioseg.region.stitch`): the outputs equal a one-process run's.

The map may also be made on the fly from OSM data or web tiles (a
:class:`~socioseg.region.mapping.MapSource`): rank 0 writes ``map.tif`` into ``out_dir``.

Outputs in ``out_dir``: ``mask.tif`` (0/255 uint8 on the input grid, one band per query;
``mask.png`` for one query on an input without georeferencing), ``entities.geojson`` (one
polygon per entity, raster CRS, with query, level and confidences), the rows files,
``run.json`` (the settings; a rerun must match them) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from socioseg.data.levels import function_name
from socioseg.outputs import prediction_to_json
from socioseg.publish import write_text_atomic
from socioseg.region.gis_outputs import DEFAULT_MIN_AREA_M2, vector_settings
from socioseg.region.map_file import map_notes
from socioseg.region.mapping import ensure_map
from socioseg.region.raster import AreaError, RasterSource, check_same_grid, write_mask_raster
from socioseg.region.run_files import RunDir, input_record, ranks, rows_file_name
from socioseg.region.stitch import stitch
from socioseg.types import LEVELS, MODES

DEFAULT_TILE = 768
DEFAULT_OVERLAP = 128
DEFAULT_BATCH_SIZE = 4
DEFAULT_MIN_AREA_PX = 16
MIN_TILE = 64
SAME_GSD = 0.05  # relative difference under which a raster is used at its own resolution
FAR_GSD = 2.0  # resampling by more than this factor is worth a note
MAX_RESAMPLE = 32.0  # resampling by more than this factor is refused (a --gsd typo)

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
    """What one ``segment_area`` call did and wrote (paths are inside ``out_dir``).

    ``tiles_*`` count (query, tile) items: tiles times queries. ``gsd``: the input's metres
    per pixel (``None`` without a CRS); ``scale``: model pixels per raster pixel; ``notes``:
    things the user should know (e.g. a resolution far from the model's).
    """

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
    queries: list[str] = field(default_factory=list)
    gsd: float | None = None
    scale: float = 1.0
    notes: list[str] = field(default_factory=list)
    gpkg_path: str | None = None
    overview_path: str | None = None
    vector_crs: str | None = None


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


def _queries(query: str | Sequence[str], levels: Sequence[str] | None) -> list[dict]:
    texts = [query] if isinstance(query, str) else list(query)
    if not texts or any(not isinstance(q, str) or not q.strip() for q in texts):
        raise AreaError("the query is empty")
    if levels is not None and len(levels) != len(texts):
        raise AreaError(f"give one --query-level per --query ({len(texts)}), got {len(levels)}")
    out = []
    for i, text in enumerate(texts):
        level = levels[i] if levels is not None else None
        if level is None:
            level = "socio-function" if function_name(text) else "unknown"
        if level not in LEVELS:
            raise AreaError(f"query level {level!r} is not one of {', '.join(LEVELS)}")
        out.append({"index": i, "text": text.strip(), "level": level})
    return out


def _check_settings(tile: int, overlap: int, batch_size: int, mode: str, gsd) -> None:
    if tile < MIN_TILE:
        raise AreaError(f"--tile must be at least {MIN_TILE} pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise AreaError(f"--overlap must be in [0, tile={tile}), got {overlap}")
    if batch_size < 1:
        raise AreaError(f"--batch-size must be at least 1, got {batch_size}")
    if mode not in MODES:
        raise AreaError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if gsd is not None and not gsd >= 0:
        raise AreaError(f"--gsd must be a resolution in metres (0: keep the input's), got {gsd}")


def _scale(sat: RasterSource, gsd: float | None) -> tuple[float | None, float, list[str]]:
    """``(input gsd, model px per raster px, notes)`` for a raster and the model's ``gsd``."""
    georef = sat.georef
    if georef is None or georef.crs is None:
        return None, 1.0, []
    from socioseg.region.grid import Grid

    input_gsd = Grid(georef.crs, georef.transform, *sat.size).gsd()
    if not gsd or abs(input_gsd / gsd - 1) < SAME_GSD:
        return input_gsd, 1.0, []
    scale = input_gsd / gsd
    if max(scale, 1 / scale) > MAX_RESAMPLE:
        raise AreaError(
            f"--gsd {gsd:g}: {sat.path} has {input_gsd:.3g} m/px, so tiles would be resampled "
            f"by {scale:.3g}x (at most {MAX_RESAMPLE:g}x); give a --gsd nearer the raster's, or "
            "0 to keep it"
        )
    notes = []
    if max(scale, 1 / scale) > FAR_GSD:
        notes.append(
            f"{sat.path} has {input_gsd:.3g} m/px, far from the model's {gsd:g} m/px: tiles are "
            f"resampled by {scale:.3g}x"
            + (" (upsampling invents no detail)" if scale > 1 else " (detail is lost)")
        )
    return input_gsd, scale, notes


def _read(source: RasterSource, tile: Tile, scale: float) -> Image.Image:
    image = source.read(*tile.window())
    if scale == 1.0:
        return image
    size = (max(1, round(tile.width * scale)), max(1, round(tile.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _tile_row(tile: Tile, query: dict, pred, mask: np.ndarray, scale: float, seconds) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = None
    if len(xs):
        # In raster pixels, end-exclusive: lets stitching find touching tiles without their masks.
        bbox = [tile.x + int(xs.min()), tile.y + int(ys.min())]
        bbox += [tile.x + int(xs.max()) + 1, tile.y + int(ys.max()) + 1]
    final = pred.stage2 if pred.final_source == "stage2" else pred.stage1
    objects = []  # final-stage boxes in raster pixels, with SAM's predicted IoU
    for target, score in zip(final.targets_image, final.sam_scores, strict=False):
        x1, y1, x2, y2 = (float(v) for v in target.box.as_list())
        box = [tile.x + x1 / scale, tile.y + y1 / scale, tile.x + x2 / scale, tile.y + y2 / scale]
        objects.append([*(round(v, 2) for v in box), float(score)])
    row = {"tile": tile.id, "query_index": query["index"], "window": tile.window()}
    row |= {"status": "done", "scale": scale, "objects": objects, "logprob": final.mean_logprob}
    return {**row, **prediction_to_json(pred, mask_bbox=bbox, seconds=round(seconds, 3))}


def _run_items(reasoner, sat, map_, mode, todo, run, batch_size, scale, progress) -> int:
    """Run ``todo`` ``(query, tile)`` items in batches, saving each; returns how many ran."""
    from tqdm.auto import tqdm

    ran = 0
    with tqdm(total=len(todo), unit="tile", desc="segment-area", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = []
            for query, tile in todo[start : start + batch_size]:
                if sat.is_nodata(*tile.window()):
                    row = {"tile": tile.id, "query_index": query["index"]}
                    run.save({**row, "window": tile.window(), "status": "nodata"}, None)
                    bar.update(1)
                else:
                    batch.append((query, tile))
            if not batch:
                continue
            items = [(_read(sat, t, scale), _read(map_, t, scale), q["text"]) for q, t in batch]
            began = time.perf_counter()
            preds = reasoner.segment_batch(items, mode=mode)
            per_item = (time.perf_counter() - began) / len(batch)
            if len(preds) != len(batch):
                raise RuntimeError(f"segment_batch returned {len(preds)} results for {len(batch)}")
            for (query, tile), pred, item in zip(batch, preds, items, strict=True):
                mask = np.asarray(pred.mask, dtype=bool)
                if mask.shape != item[0].size[::-1]:
                    raise RuntimeError(f"tile {tile.id}: mask {mask.shape} != tile size")
                mask = _to_window(mask, tile)
                row = _tile_row(tile, query, pred, mask, scale, per_item)
                run.save(row, mask if mask.any() else None)
                ran += 1
                bar.update(1)
    return ran


def _to_window(mask: np.ndarray, tile: Tile) -> np.ndarray:
    """A model-size mask brought back to the tile's raster size (nearest neighbour)."""
    if mask.shape == (tile.height, tile.width):
        return mask
    import cv2

    size = (tile.width, tile.height)
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def segment_area(
    reasoner,
    sat_path: str | Path,
    map_path,
    query: str | Sequence[str],
    out_dir: str | Path,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    mode: str = "two-stage",
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    gsd: float | None = None,
    levels: Sequence[str] | None = None,
    progress: bool = True,
    simplify: float | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    dst_crs: str | None = None,
    models: dict[str, str] | None = None,
) -> AreaSummary | None:
    """Segment queries over two aligned rasters and write masks, entities and per-tile logs.

    Args:
        reasoner: anything with ``segment_batch([(sat, map, query), ...], mode=...)`` returning
            :class:`socioseg.types.Prediction` objects (e.g. ``SocioReasoner``), or a
            zero-argument callable returning one, called only once the inputs have been
            checked and items remain to run (so bad inputs fail before a model loads).
        sat_path: a raster (GeoTIFF or any GDAL raster with rasterio installed; PNG/JPEG also
            without), 8-bit, 1, 3 or 4 bands.
        map_path: a raster on the same grid, or a :class:`~socioseg.region.mapping.MapSource`
            to make ``out_dir/map.tif`` from.
        query: one text query or several; every tile is segmented for each.
        out_dir: created if missing; a previous run there with the same settings is resumed.
        tile, overlap: tile side and minimum overlap of neighbouring tiles, in model pixels.
        batch_size: (query, tile) items per ``segment_batch`` call (also what is in memory).
        mode: one of :data:`socioseg.types.MODES`.
        min_area_px: entities smaller than this many pixels get no polygon (the mask keeps them).
        gsd: the model's metres per pixel that tiles are resampled to; ``None`` or 0 keeps
            the input's (the CLI's default is SocioSeg's, 0.5).
        levels: the query level of each query (default: ``socio-function`` for the 10 function
            names, else ``unknown``).
        progress: show a tqdm bar (items/s).
        simplify: polygon simplification tolerance in metres (``None``: one pixel; 0: keep
            the pixel stair-steps); see :mod:`socioseg.region.gis_outputs`.
        min_area_m2: entities smaller than this many square metres get no polygon (rasters
            with a CRS; ``min_area_px`` applies to all).
        dst_crs: CRS of the vector outputs (e.g. ``"EPSG:4326"``; default: the raster's).
        models: ``{"vlm": id, "sam": id}`` recorded with every entity of ``entities.gpkg``.

    Returns:
        The summary; ``None`` on torchrun ranks other than 0 (rank 0 writes the outputs).

    Raises:
        AreaError: missing or unreadable input, rasters on different grids, bad settings,
            or ``out_dir`` holding a run with other settings. Its message is one line.
    """
    queries = _queries(query, levels)
    _check_settings(tile, overlap, batch_size, mode, gsd)
    vectors = vector_settings(simplify, min_area_m2, dst_crs, models)
    began = time.perf_counter()
    out = Path(out_dir)
    with ranks() as (rank, world, share):
        map_source = map_path.describe() if hasattr(map_path, "describe") else None
        map_path = ensure_map(sat_path, map_path, out, rank, share)
        with RasterSource(sat_path) as sat, RasterSource(map_path) as map_:
            georef = check_same_grid(sat, map_)
            if vectors["dst_crs"] is not None and (georef is None or georef.crs is None):
                raise AreaError(f"--dst-crs: {sat_path} has no CRS to reproject from")
            input_gsd, scale, notes = _scale(sat, gsd)
            notes += map_notes(map_path)  # e.g. OSM nodes skipped while the map was made
            side, margin = max(1, round(tile / scale)), round(overlap / scale)
            settings = {"mode": mode, "size": list(sat.size), "tile": tile, "overlap": overlap}
            settings |= _run_sources(queries, scale, map_source, sat_path, map_path)
            run = RunDir(out, settings, rank if world > 1 else None)
            tiles = tile_grid(sat.size, side, margin)
            items = [(q, t) for q in queries for t in tiles]
            resumed = sum((q["index"], t.id) in run.rows for q, t in items)
            todo = [(q, t) for q, t in items[rank::world] if (q["index"], t.id) not in run.rows]
            if todo and not hasattr(reasoner, "segment_batch"):
                reasoner = reasoner()
            ran = _run_items(reasoner, sat, map_, mode, todo, run, batch_size, scale, progress)
            size = sat.size
        share()  # every rank has finished its items
        if rank != 0:
            return None
        run.reload()
        facts = {"ran": ran, "resumed": resumed, "gsd": input_gsd, "scale": scale}
        facts |= {"sat": Path(sat_path), "vectors": vectors}
        return _write_outputs(run, tiles, size, georef, queries, min_area_px, facts, notes, began)


def _run_sources(queries, scale, map_source, sat_path, map_path) -> dict:
    """What ``run.json`` records of a run's inputs: queries, levels, resampling and where the
    rasters (and the map) came from; a rerun with other sources is refused."""
    return {
        "queries": [q["text"] for q in queries],
        "levels": [q["level"] for q in queries],
        "scale": scale,
        "map_source": map_source,
        "inputs": input_record({"sat": sat_path, "map": map_path}),
    }


def _write_outputs(run, tiles, size, georef, queries, min_area_px, facts, notes, began):
    from socioseg.region import gis_outputs

    strips, features, counter = stitch(run, tiles, size, georef, queries, min_area_px)
    texts = [q["text"] for q in queries]
    color = gis_outputs.query_color(0)
    mask_path = write_mask_raster(run.root / "mask", size, georef, strips, texts, color)
    features, geojson_path, gpkg_path, vector_crs = gis_outputs.write_vectors(
        run.root, features, georef, facts["gsd"], queries, facts["vectors"]
    )
    counts = [sum(f["properties"]["query"] == t for f in features) for t in texts]
    overview = gis_outputs.write_overview(
        run.root / "overview.png", facts["sat"], mask_path, texts, counts
    )
    rows = [run.rows[(q["index"], t.id)] for q in queries for t in tiles]
    summary = AreaSummary(
        out_dir=str(run.root),
        mask_path=str(mask_path),
        geojson_path=str(geojson_path),
        tiles_jsonl=str(run.root / rows_file_name(None)),
        tiles_total=len(rows),
        tiles_run=facts["ran"],
        tiles_resumed=facts["resumed"],
        tiles_nodata=sum(r["status"] == "nodata" for r in rows),
        entities=len(features),
        mask_pixels=counter[0],
        crs=None if georef is None else georef.crs_name(),
        seconds=round(time.perf_counter() - began, 3),
        queries=texts,
        gsd=None if facts["gsd"] is None else round(facts["gsd"], 4),
        scale=facts["scale"],
        notes=notes,
        gpkg_path=None if gpkg_path is None else str(gpkg_path),
        overview_path=str(overview),
        vector_crs=vector_crs,
    )
    write_text_atomic(run.root / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
    return summary
