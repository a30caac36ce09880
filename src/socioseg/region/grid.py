"""A raster's pixel grid (CRS, transform, size), its ground resolution and lon/lat mapping.

Pixel coordinates are pixel-corner coordinates as in :mod:`socioseg.region.raster`: pixel
``(col, row)`` covers ``[col, col + 1) x [row, row + 1)``; ``transform`` maps them to CRS
coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socioseg.region.raster import AreaError

# Metres per degree of latitude and (at the equator) of longitude on the WGS-84 ellipsoid's
# mean radius: enough for a resolution estimate (0.3% across latitudes).
METRES_PER_DEGREE = 111_195.0


@dataclass(frozen=True)
class Grid:
    """``width`` x ``height`` pixels placed by ``transform`` (an ``affine.Affine``) in ``crs``."""

    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of_raster(
        cls, path: str | Path, needed_for: str = "a map is made on the raster's grid"
    ) -> Grid:
        """The grid of a georeferenced raster (any band count and type); one-line errors.
        ``needed_for`` says, in a missing CRS's message, why one is needed."""
        import rasterio

        path = Path(path)
        if not path.is_file():
            raise AreaError(f"{path}: no such file")
        try:
            with rasterio.open(path) as ds:
                crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        except rasterio.errors.RasterioIOError as exc:
            raise AreaError(f"{path}: not a raster GDAL can read") from exc
        if crs is None:
            raise AreaError(
                f"{path}: has no CRS, and {needed_for}: assign one "
                "(e.g. gdal_translate -a_srs EPSG:32650 -a_ullr ...)"
            )
        return cls(crs, transform, width, height)

    def to_lonlat(self):
        """A pyproj ``Transformer`` from the grid's CRS to WGS-84 lon/lat (``always_xy``)."""
        from pyproj import Transformer

        return Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    def from_lonlat(self):
        """A pyproj ``Transformer`` from WGS-84 lon/lat to the grid's CRS (``always_xy``)."""
        from pyproj import Transformer

        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    def centre_lonlat(self) -> tuple[float, float]:
        x, y = self.transform @ (self.width / 2, self.height / 2)
        lon, lat = self.to_lonlat().transform(x, y)
        return float(lon), float(lat)

    def gsd(self) -> float:
        """Ground size of a pixel in metres (geometric mean of its two sides, at the centre)."""
        t = self.transform
        sx, sy = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
        if self.crs.is_geographic:
            lat = math.radians(self.centre_lonlat()[1])
            sx, sy = sx * METRES_PER_DEGREE * math.cos(lat), sy * METRES_PER_DEGREE
        else:
            factor = self.crs.linear_units_factor[1]
            sx, sy = sx * factor, sy * factor
        return math.sqrt(sx * sy)

    def pixels_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-corner ``(col, row)`` of CRS coordinates ``x``, ``y`` (float arrays)."""
        inverse = ~self.transform
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f

    def pixel_centres(self, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """CRS ``(x, y)`` of pixel centres on every ``step``-th row and column (plus the last)."""
        cols = np.unique(np.r_[np.arange(0, self.width, step), self.width - 1]) + 0.5
        rows = np.unique(np.r_[np.arange(0, self.height, step), self.height - 1]) + 0.5
        c, r = np.meshgrid(cols, rows)
        t = self.transform
        return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f

    def profile(self) -> dict:
        """A rasterio profile for a 3-band uint8 RGB GeoTIFF on this grid."""
        return {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": 3,
            "dtype": "uint8",
            "crs": self.crs,
            "transform": self.transform,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "photometric": "RGB",
        }


def write_rgb(path: str | Path, grid: Grid, rgb: np.ndarray, tags: dict[str, str]) -> Path:
    """Write ``rgb`` (H x W x 3 uint8) as a GeoTIFF on ``grid`` with metadata ``tags``."""
    import rasterio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with rasterio.open(tmp, "w", **grid.profile()) as dst:
        dst.write(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        dst.update_tags(**tags)
    tmp.replace(path)
    return path


# The ground resolution SocioSeg's tiles have, in metres per pixel. Its maps are web-map tiles
# at zoom level 18 (Amap's style): 156543.03 m / 2**18 = 0.597 m per pixel on the Web Mercator
# plane, that is 0.597 * cos(latitude) on the ground: 0.55 in Guangzhou (23 N), 0.51 in Wuhan
# (30.6 N), 0.48 in Jinan (36.7 N), 0.46 in Beijing (39.9 N). 0.5 m is their middle.
SOCIOSEG_GSD = 0.5
