"""One entry point for every map source: ``make_map(grid, source) -> GeoTIFF`` on the grid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from socioseg.region.grid import Grid, write_rgb
from socioseg.region.raster import AreaError

OSM_ATTRIBUTION = "© OpenStreetMap contributors (ODbL 1.0)"
MAX_MAP_PIXELS = 400_000_000  # 1.2 GB of RGB in memory
MAX_ZOOM = 24


@dataclass(frozen=True)
class MapSource:
    """Exactly one of ``osm`` (an OSM file), ``tiles`` (a URL template) or ``provider`` (an
    xyzservices name), with the options that apply to it."""

    osm: Path | None = None
    tiles: str | None = None
    provider: str | None = None
    name_tag: str = "name"
    font: Path | None = None
    gcj02: bool = False
    tile_budget: int | None = None
    cache_dir: Path | None = None
    zoom: int | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("osm", "tiles", "provider") if getattr(self, k) is not None]
        if len(given) != 1:
            raise AreaError(
                "give exactly one map source: --osm FILE, --tiles URL or --provider NAME"
            )
        if self.tile_budget is not None and self.tile_budget < 1:
            raise AreaError(f"--tile-budget must be at least 1, got {self.tile_budget}")
        if self.zoom is not None and not 0 <= self.zoom <= MAX_ZOOM:
            raise AreaError(f"--zoom must be in [0, {MAX_ZOOM}], got {self.zoom}")

    def describe(self) -> dict:
        """What made the map, as JSON-friendly settings (to compare runs); a tile URL without
        its credentials and query string, a file as its absolute path."""
        from socioseg.region.tile_fetch import public_url

        made = {k: v for k, v in vars(self).items() if v is not None and k != "cache_dir"}
        if self.tiles is not None:
            made["tiles"] = public_url(self.tiles)
        for key in ("osm", "font"):
            if key in made:
                made[key] = Path(made[key]).resolve()
        return {k: str(v) for k, v in made.items()}


@dataclass(frozen=True)
class MadeMap:
    path: Path
    attribution: str
    zoom: int | None = None
    tiles: int = 0
    downloaded: int = 0


def make_map(grid: Grid, source: MapSource, out: str | Path) -> MadeMap:
    """Render ``source`` on ``grid`` and write it to ``out`` as an RGB GeoTIFF.

    The GeoTIFF's tags name the source (``SOURCE``) and its credits (``ATTRIBUTION``).
    """
    if grid.width * grid.height > MAX_MAP_PIXELS:
        raise AreaError(
            f"the raster has {grid.width * grid.height / 1e6:.0f} MP; a map is made in memory up "
            f"to {MAX_MAP_PIXELS / 1e6:.0f} MP: split the raster (gdal_retile.py) and map the parts"
        )
    if source.osm is not None:
        from socioseg.region.osm import render_osm

        rgb = render_osm(source.osm, grid, source.name_tag, source.font)
        tags = {"SOURCE": f"OpenStreetMap file {Path(source.osm).name}"}
        made = MadeMap(Path(out), OSM_ATTRIBUTION)
    else:
        from socioseg.region.xyz import DEFAULT_BUDGET, TileSource, default_cache_dir, tile_map

        if source.provider is not None:
            tile_source = TileSource.from_provider(source.provider)
        else:
            tile_source = TileSource(source.tiles, "custom tiles", "")
        result = tile_map(
            grid,
            tile_source,
            source.cache_dir or default_cache_dir(),
            budget=source.tile_budget or DEFAULT_BUDGET,
            gcj02=source.gcj02,
            zoom=source.zoom,
        )
        rgb = result.rgb
        tags = {"SOURCE": f"{tile_source.name} {tile_source.public_url} zoom {result.zoom}"}
        if source.gcj02:
            tags["SOURCE"] += " (GCJ-02 shifted to WGS-84)"
        made = MadeMap(
            Path(out), tile_source.attribution, result.zoom, result.tiles, result.downloaded
        )
    if made.attribution:
        tags["ATTRIBUTION"] = made.attribution
    tags[MADE_TAG] = json.dumps(source.describe(), sort_keys=True)
    write_rgb(out, grid, rgb, tags)
    return made


MADE_TAG = "SOCIOSEG_MAP"  # a GeoTIFF tag on every map socioseg writes: the map is ours


def is_our_map(path: Path) -> bool:
    """Whether ``path`` is a GeoTIFF that :func:`make_map` wrote (it carries :data:`MADE_TAG`)."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return MADE_TAG in ds.tags()
    except rasterio.errors.RasterioIOError:
        return False


def map_made_from(path: Path, source: MapSource) -> bool:
    """Whether ``path`` is a map socioseg made from ``source`` (same description)."""
    import rasterio

    if not path.is_file() or path.is_symlink():
        return False
    try:
        with rasterio.open(path) as ds:
            made = ds.tags().get(MADE_TAG)
    except rasterio.errors.RasterioIOError:
        return False
    return made == json.dumps(source.describe(), sort_keys=True)


def check_out(out: Path, inputs: dict[str, Path | None], overwrite: bool = False) -> None:
    """One-line errors for a map path that cannot be written: not ``.tif``, a folder, inside a
    file, one of the ``inputs`` (``{flag: path}``), or an existing file (refused unless it is a
    map socioseg made and ``overwrite`` is given)."""
    from socioseg.publish import check_not_input, refuse_foreign

    if out.suffix.lower() not in (".tif", ".tiff") or out.is_dir():
        raise AreaError(f"--out {out}: the map is written as a GeoTIFF file; name it .tif")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AreaError(f"--out {out} is inside {parent}, which is a file")
            break
    check_not_input(out, inputs, "--out")
    if out.exists() or out.is_symlink():
        ours = out.is_file() and not out.is_symlink() and is_our_map(out)
        refuse_foreign(out, "--out", overwrite, ours, "a map")
