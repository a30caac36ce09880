"""Stitch ``segment-area`` tiles: the union mask per query on the input grid, and entities.

Stitching takes the union of the tile masks: where tiles overlap, a pixel is in the mask when
any tile put it there, so an entity cut by one tile's border is joined by its neighbour's view.
Entities (4-connected regions of the union) are found per cluster of tiles whose masks touch,
so only such a cluster, never the whole raster, is held in memory.

Each entity's confidence: ``sam_iou`` is the highest SAM predicted IoU among the final-stage
objects (of the tiles it came from) whose box meets the entity's box; ``answer_logprob`` the
mean over those tiles of the final answer's mean token log-probability. ``None`` when the
model did not report them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from socioseg.region.raster import Georef, entity_confidence, entity_geometry, label_entities
from socioseg.region.run_files import RunDir

STRIP_ROWS = 512


def clusters(rows: Sequence[dict]) -> list[list[dict]]:
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


def cluster_features(cluster, run: RunDir, georef, query: dict, min_area_px: int) -> list[dict]:
    """Features of the entities a cluster of tiles found, labelled on the cluster's box only.

    ``query``: ``{"index", "text", "level"}`` of the query the cluster's tiles answered.
    """
    boxes = np.array([r["mask_bbox"] for r in cluster])
    box = (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
    canvas = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
    masks = {row["tile"]: run.load_mask(query["index"], row["tile"]) for row in cluster}
    for row in cluster:
        in_box, in_tile = _clip(row["window"], box)
        canvas[in_box] |= masks[row["tile"]][in_tile]
    labels, entities = label_entities(canvas, min_area_px)
    sources: dict[int, list[dict]] = {}
    for row in cluster:
        in_box, in_tile = _clip(row["window"], box)
        for label in np.unique(labels[in_box][masks[row["tile"]][in_tile]]):
            sources.setdefault(int(label), []).append(row)
    transform = None if georef is None else georef.transform
    pixel_area = 1.0 if georef is None else abs(georef.transform.determinant)
    features = []
    for e in entities:
        rows = sources.get(e.label, [])
        outer = e.rings[0]
        own_box = (*(outer.min(axis=0) + box[:2]), *(outer.max(axis=0) + box[:2]))
        properties = {
            "query": query["text"],
            "level": query["level"],
            "tiles": sorted(r["tile"] for r in rows),
            "area": e.area_px * pixel_area,
            "area_px": e.area_px,
            **entity_confidence(
                [o for r in rows for o in r.get("objects") or ()],
                [r["logprob"] for r in rows if r.get("logprob") is not None],
                own_box,
            ),
        }
        geometry = entity_geometry(e, transform, (int(box[0]), int(box[1])))
        features.append({"type": "Feature", "properties": properties, "geometry": geometry})
    return features


def mask_strips(
    rows_per_query: Sequence[Sequence[dict]],
    run: RunDir,
    size: tuple[int, int],
    counter: list[int],
) -> Iterator[tuple[int, np.ndarray]]:
    """Row strips ``(top, Q x rows x width bool)`` of the union masks, one band per query.

    Adds the strips' mask pixels to ``counter[0]``.
    """
    width, height = size
    cache: dict[tuple[int, str], np.ndarray | None] = {}
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        strip = np.zeros((len(rows_per_query), bottom - top, width), dtype=bool)
        needed = [
            (q, r)
            for q, rows in enumerate(rows_per_query)
            for r in rows
            if r["mask_bbox"][1] < bottom and r["mask_bbox"][3] > top
        ]
        cache = {(q, r["tile"]): cache.get((q, r["tile"])) for q, r in needed}
        for q, row in needed:
            if cache[(q, row["tile"])] is None:
                cache[(q, row["tile"])] = run.load_mask(q, row["tile"])
            in_strip, in_tile = _clip(row["window"], (0, top, width, bottom))
            strip[q][in_strip] |= cache[(q, row["tile"])][in_tile]
        counter[0] += int(strip.sum())
        yield top, strip


def stitch(
    run: RunDir, tiles, size, georef: Georef | None, queries: list[dict], min_area_px: int
) -> tuple[Iterator[tuple[int, np.ndarray]], list[dict], list[int]]:
    """``(mask strips, features, pixel counter)`` over every query; features numbered by id."""
    found = []
    features = []
    for query in queries:
        rows = [run.rows[(query["index"], t.id)] for t in tiles]
        done = [r for r in rows if r.get("mask_bbox")]
        found.append(done)
        for cluster in clusters(done):
            features += cluster_features(cluster, run, georef, query, min_area_px)
    for i, feature in enumerate(features):
        feature["properties"] = {"id": i, **feature["properties"]}
    counter = [0]
    return mask_strips(found, run, size, counter), features, counter
