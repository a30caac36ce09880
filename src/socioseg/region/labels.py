"""Labelled polygons (GeoJSON, GeoPackage, Shapefile, any OGR vector) in a raster's pixels.

Read with pyogrio (GDAL's vector drivers, no geopandas), reprojected to the raster's CRS with
pyproj, then mapped to pixel-corner coordinates of the raster (see :mod:`socioseg.region.raster`).
Every feature must be a (multi)polygon with a non-empty value in each field asked for:
anything else is an error naming the feature, never skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socioseg.region.grid import Grid
from socioseg.region.raster import AreaError


@dataclass(frozen=True)
class Labels:
    """``geoms``: shapely (multi)polygons in raster pixel coordinates; ``fields[name]``: one
    string per feature; ``fids``: the features' ids in the file (for messages)."""

    geoms: np.ndarray
    fields: dict[str, list[str]]
    fids: list[int]


def read_labels(path: str | Path, fields: list[str], grid: Grid) -> Labels:
    """The features of the first layer of ``path`` with the string values of ``fields``."""
    import pyogrio
    import shapely

    path = Path(path)
    if not path.exists():
        raise AreaError(f"{path}: no such file")
    try:
        meta, fids, wkb, values = pyogrio.raw.read(path, return_fids=True)
    except pyogrio.errors.DataSourceError as exc:
        raise AreaError(f"{path}: not a vector file GDAL can read ({exc})") from exc
    names = list(meta["fields"])
    missing = [f for f in fields if f not in names]
    if missing:
        raise AreaError(f"{path}: no field {missing[0]!r}; its fields are {', '.join(names)}")
    if meta.get("crs") is None:
        raise AreaError(f"{path}: has no CRS; save the labels with one (e.g. EPSG:4326)")
    geoms = shapely.from_wkb(wkb)
    fids = [int(f) for f in fids]
    for geom, fid in zip(geoms, fids, strict=True):
        if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            kind = "no geometry" if geom is None else geom.geom_type
            raise AreaError(f"{path}: feature {fid} is {kind}; labels must be polygons")
    columns = {}
    for field in fields:
        column = values[names.index(field)]
        for value, fid in zip(column, fids, strict=True):
            if value is None or not str(value).strip():
                raise AreaError(f"{path}: feature {fid} has no {field!r}; fill it or drop it")
        columns[field] = [str(v).strip() for v in column]
    return Labels(_to_pixels(path, geoms, fids, meta["crs"], grid), columns, fids)


def _to_pixels(path: Path, geoms: np.ndarray, fids: list[int], crs: str, grid: Grid):
    """The geometries in the raster's pixels; one-line errors for coordinates that cannot
    be placed (NaN, or outside the labels' CRS: projected metres declared as degrees) and
    for labels that miss the raster altogether (a wrong CRS, or lat/lon swapped)."""
    import shapely
    from pyproj import Transformer

    to_grid = Transformer.from_crs(crs, grid.crs, always_xy=True)
    ours, theirs = _crs_name(crs), _crs_name(grid.crs)
    check = f"check the CRS of {path.name} ({ours}) against the raster ({theirs})"

    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        fid = fids[owner[bad.argmax()]]
        raise AreaError(
            f"{path}: feature {fid} has a NaN or infinite coordinate; fix it or drop it"
        )
    x, y = to_grid.transform(xy[:, 0], xy[:, 1])
    cols, rows = grid.pixels_of(x, y)
    bad = ~(np.isfinite(cols) & np.isfinite(rows))
    if bad.any():
        fid = fids[owner[bad.argmax()]]
        raise AreaError(
            f"{path}: feature {fid} has coordinates outside what {_crs_name(crs)} allows; " + check
        )
    moved = shapely.set_coordinates(geoms.copy(), np.column_stack([cols, rows]))
    raster = shapely.box(0, 0, grid.width, grid.height)
    if not shapely.intersects(moved, raster).any():
        raise AreaError(f"{path}: no label overlaps the raster; {check}")
    return shapely.make_valid(moved)


def _crs_name(crs) -> str:
    from pyproj import CRS

    found = CRS.from_user_input(crs).to_authority()
    return ":".join(found) if found else "a custom CRS"
