"""XYZ web-map tiles (``{z}/{x}/{y}``, Web Mercator, 256 px) mosaicked onto a raster's grid.

The zoom is the one whose Web Mercator resolution at the raster's centre is nearest (in log
scale) to the raster's ground resolution. Tiles covering the raster are counted first and
refused beyond ``budget`` (tile servers forbid bulk downloads; raise it only where the
provider's terms allow). They are fetched over at most :data:`CONNECTIONS` connections with a
User-Agent, kept in an on-disk cache (a rerun downloads nothing), mosaicked, and reprojected
onto the grid with rasterio (bilinear). Providers that publish China in GCJ-02 (``gcj02``)
need a shift that is no CRS GDAL knows: then every output pixel's centre goes to WGS-84
lon/lat (pyproj), through the shift to the mosaic's pixel, and is sampled bilinearly there
(OpenCV).
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socioseg.data.synth.paint import MAP_BACKGROUND
from socioseg.region.gcj02 import wgs84_to_gcj02
from socioseg.region.grid import Grid
from socioseg.region.raster import AreaError
from socioseg.region.tile_fetch import (
    MAX_TILE_BYTES,
    TILE_PX,
    check_template,
    decode_tile,
    fetch,
    fill_template,
    public_url,
)

EARTH_CIRCUMFERENCE = 40_075_016.686  # metres: the Web Mercator plane's width
CONNECTIONS = 2
DEFAULT_BUDGET = 400  # tiles (about 25 MB of PNG at zoom 18, 2.4 km x 2.4 km)
MAX_LATITUDE = 85.05112878  # Web Mercator's edge: tiles end there
MAX_MOSAIC_PX = 32_000  # OpenCV's remap takes images up to 32767 pixels a side
STRIP_ROWS = 1024


@dataclass(frozen=True)
class TileSource:
    """Where tiles come from: a URL template with ``{x}``, ``{y}``, ``{z}``, and its credits."""

    url: str
    name: str
    attribution: str
    max_zoom: int = 19

    def __post_init__(self) -> None:
        check_template(self.url)

    @property
    def public_url(self) -> str:
        """The template without credentials or query string: what files and messages show."""
        return public_url(self.url)

    @classmethod
    def from_provider(cls, name: str) -> TileSource:
        """A provider of xyzservices by name (e.g. ``OpenStreetMap.Mapnik``, ``Gaode.Normal``)."""
        import xyzservices

        try:
            provider = xyzservices.providers.query_name(name)
        except ValueError as exc:
            raise AreaError(
                f"--provider {name}: not an xyzservices provider; list them with "
                "python -c 'import xyzservices; print(xyzservices.providers.flatten().keys())'"
            ) from exc
        if provider.requires_token():
            raise AreaError(f"--provider {name}: needs an API key; pass --tiles URL with it")
        attribution = provider.get("attribution") or provider.get("html_attribution", "")
        attribution = html.unescape(re.sub(r"<[^>]*>", "", attribution))  # plain text
        return cls(provider.build_url(), provider.name, attribution, provider.get("max_zoom", 19))

    def tile_url(self, z: int, x: int, y: int) -> str:
        """The URL of one tile (:func:`~socioseg.region.tile_fetch.fill_template`)."""
        return fill_template(self.url, z, x, y)


def zoom_for(gsd: float, lat: float, max_zoom: int) -> int:
    """The zoom whose Web Mercator ground resolution at ``lat`` is nearest ``gsd`` (metres)."""
    level = math.log2(EARTH_CIRCUMFERENCE * math.cos(math.radians(lat)) / TILE_PX / gsd)
    return int(min(max(round(level), 0), max_zoom))


def check_covered(lon: np.ndarray, lat: np.ndarray) -> None:
    """Refuse (one line) a raster that web-map tiles do not cover: beyond Web Mercator's
    latitudes (+-85.05 degrees), or across the antimeridian (its longitudes would wrap)."""
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise AreaError("the raster has pixels with no longitude/latitude; check its CRS")
    if np.abs(lat).max() > MAX_LATITUDE:
        raise AreaError(
            f"the raster reaches latitude {lat[np.abs(lat).argmax()]:.4f}; web-map tiles end at "
            f"+-{MAX_LATITUDE:.2f} (Web Mercator): use --osm, or crop the raster"
        )
    if lon.max() - lon.min() > 180 or np.abs(lon).max() > 180:
        raise AreaError(
            "the raster crosses the antimeridian (longitude 180); web-map tiles are cut there: "
            "split the raster at 180 degrees (gdalwarp -te) and map each part"
        )


def world_pixels(lon, lat, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """Web Mercator pixel coordinates (pixel corners, from the top-left of tile 0/0)."""
    n = TILE_PX * 2.0**zoom
    lat = np.radians(np.clip(np.asarray(lat, dtype=np.float64), -MAX_LATITUDE, MAX_LATITUDE))
    x = (np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * n
    y = (1.0 - np.log(np.tan(lat) + 1.0 / np.cos(lat)) / math.pi) / 2.0 * n
    return x, y


class TileCache:
    """One URL template's tiles on disk (``root/<template hash>/z/x/y``); fetches the missing.

    Only a tile that passed :func:`~socioseg.region.tile_fetch.decode_tile` enters the cache;
    a cached file that no longer passes it is dropped and fetched again.
    """

    def __init__(self, source: TileSource, root: str | Path):
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise AreaError(f"--tile-cache {root} is a file; give a folder for the tile cache")
        self.source = source
        self.root = root / hashlib.sha256(source.url.encode()).hexdigest()[:16]
        self.requests = 0

    def path(self, z: int, x: int, y: int) -> Path:
        return self.root / str(z) / str(x) / f"{y}.tile"

    def get(self, z: int, x: int, y: int) -> np.ndarray:
        """The tile as 256 x 256 x 3 uint8 RGB, from the cache or downloaded into it."""
        path = self.path(z, x, y)
        name = f"tile {z}/{x}/{y} of {self.source.public_url}"
        if path.is_file():
            try:
                if path.stat().st_size > MAX_TILE_BYTES:
                    raise AreaError(f"{name}: the cached file is too large")
                return decode_tile(path.read_bytes(), f"{name} (cached)", MAP_BACKGROUND)
            except AreaError:
                path.unlink()  # a bad file in the cache: fetch it again
        self.requests += 1
        data = fetch(self.source.tile_url(z, x, y))
        rgb = decode_tile(data, f"{name} (as served)", MAP_BACKGROUND)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            raise AreaError(
                f"--tile-cache {self.root.parent}: cannot write a tile ({exc})"
            ) from None
        return rgb


@dataclass(frozen=True)
class TileMap:
    """The result of :func:`tile_map`: the image on the grid and what it took."""

    rgb: np.ndarray  # H x W x 3 uint8
    zoom: int
    tiles: int
    downloaded: int


def _lonlat(grid: Grid, x: np.ndarray, y: np.ndarray, gcj02: bool):
    lon, lat = grid.to_lonlat().transform(x, y)
    return wgs84_to_gcj02(lon, lat) if gcj02 else (lon, lat)


def tile_map(
    grid: Grid,
    source: TileSource,
    cache_dir: str | Path,
    *,
    budget: int = DEFAULT_BUDGET,
    gcj02: bool = False,
    zoom: int | None = None,
) -> TileMap:
    """Mosaic ``source``'s tiles onto ``grid`` (see the module docstring).

    Raises :class:`AreaError` (one line) when more than ``budget`` tiles are needed, or a
    download fails or returns something other than a 256-px image.
    """
    if zoom is None:
        zoom = zoom_for(
            grid.gsd(), min(abs(grid.centre_lonlat()[1]), MAX_LATITUDE), source.max_zoom
        )
    x, y = grid.pixel_centres(step=max(1, min(grid.width, grid.height) // 64))
    lon, lat = _lonlat(grid, x.ravel(), y.ravel(), gcj02)
    check_covered(np.asarray(lon), np.asarray(lat))
    gx, gy = world_pixels(lon, lat, zoom)
    last = 2**zoom - 1
    x0, x1 = (int(min(max(v // TILE_PX, 0), last)) for v in (gx.min() - 1, gx.max() + 1))
    y0, y1 = (int(min(max(v // TILE_PX, 0), last)) for v in (gy.min() - 1, gy.max() + 1))
    count = (x1 - x0 + 1) * (y1 - y0 + 1)
    if count > budget:
        raise AreaError(
            f"the map needs {count} tiles at zoom {zoom}, over the budget of {budget}; raise "
            "--tile-budget only where the provider's terms allow bulk downloads"
        )
    if max(x1 - x0 + 1, y1 - y0 + 1) * TILE_PX > MAX_MOSAIC_PX:
        raise AreaError(f"the raster spans over {MAX_MOSAIC_PX} tile pixels: split it first")
    cache = TileCache(source, cache_dir)
    keys = [(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)]
    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        tiles = list(pool.map(lambda k: cache.get(zoom, *k), keys))
    mosaic = np.zeros(((y1 - y0 + 1) * TILE_PX, (x1 - x0 + 1) * TILE_PX, 3), dtype=np.uint8)
    for (tx, ty), tile in zip(keys, tiles, strict=True):
        top, left = (ty - y0) * TILE_PX, (tx - x0) * TILE_PX
        mosaic[top : top + TILE_PX, left : left + TILE_PX] = tile
    origin = (x0 * TILE_PX, y0 * TILE_PX)
    warp = _warp_gcj02 if gcj02 else _warp
    return TileMap(warp(mosaic, grid, zoom, origin), zoom, count, cache.requests)


def _warp(mosaic: np.ndarray, grid: Grid, zoom: int, origin: tuple[int, int]) -> np.ndarray:
    """``mosaic`` (Web Mercator, top-left at world pixel ``origin``) reprojected onto ``grid``
    by GDAL (rasterio, bilinear): H x W x 3 uint8."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    metres = EARTH_CIRCUMFERENCE / (TILE_PX * 2**zoom)  # per world pixel
    half = EARTH_CIRCUMFERENCE / 2
    source_transform = Affine(
        metres, 0, origin[0] * metres - half, 0, -metres, half - origin[1] * metres
    )
    out = np.zeros((3, grid.height, grid.width), dtype=np.uint8)
    reproject(
        np.ascontiguousarray(mosaic.transpose(2, 0, 1)),
        out,
        src_transform=source_transform,
        src_crs="EPSG:3857",
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        resampling=Resampling.bilinear,
    )
    return out.transpose(1, 2, 0)


def _warp_gcj02(mosaic: np.ndarray, grid: Grid, zoom: int, origin: tuple[int, int]):
    """As :func:`_warp` for a mosaic in GCJ-02: each output pixel's centre goes to WGS-84,
    through the GCJ-02 shift (no CRS GDAL knows) to the mosaic, and is sampled there."""
    import cv2

    out = np.zeros((grid.height, grid.width, 3), dtype=np.uint8)
    t = grid.transform
    cols = np.arange(grid.width) + 0.5
    for top in range(0, grid.height, STRIP_ROWS):
        rows = np.arange(top, min(grid.height, top + STRIP_ROWS)) + 0.5
        c, r = np.meshgrid(cols, rows)
        x, y = t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f
        gx, gy = world_pixels(*_lonlat(grid, x, y, True), zoom)
        # Mosaic pixel i has its centre at world coordinate origin + i + 0.5.
        map_x = (gx - origin[0] - 0.5).astype(np.float32)
        map_y = (gy - origin[1] - 0.5).astype(np.float32)
        out[top : top + len(rows)] = cv2.remap(
            mosaic, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/socioseg/tiles`` (``~/.cache/socioseg/tiles``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "socioseg" / "tiles"
