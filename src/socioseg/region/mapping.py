"""One entry point for every map source: ``make_map(grid, source) -> GeoTIFF`` on the grid."""

from __future__ import annotations

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
        """What made the map, as JSON-friendly settings (to compare runs)."""
        return {k: str(v) for k, v in vars(self).items() if v is not None and k != "cache_dir"}


@dataclass(frozen=True)
class MadeMap:
    path: Path
    attribution: str
    zoom: int | None = None
    tiles: int = 0
    downloaded: int = 0
    notes: tuple[str, ...] = ()  # lines for users: what the labels show, missing fonts


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

        rendered = render_osm(source.osm, grid, source.name_tag, source.font)
        rgb = rendered.rgb
        tags = {"SOURCE": f"OpenStreetMap file {Path(source.osm).name}"}
        notes = (rendered.labels.line(), *rendered.notes)
        made = MadeMap(Path(out), OSM_ATTRIBUTION, notes=notes)
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
        tags = {"SOURCE": f"{tile_source.name} {tile_source.url} zoom {result.zoom}"}
        if source.gcj02:
            tags["SOURCE"] += " (GCJ-02 shifted to WGS-84)"
        made = MadeMap(
            Path(out), tile_source.attribution, result.zoom, result.tiles, result.downloaded
        )
    if made.attribution:
        tags["ATTRIBUTION"] = made.attribution
    write_rgb(out, grid, rgb, tags)
    return made


def check_out(out: Path) -> None:
    """One-line errors for a map path that cannot be written: not ``.tif``, a folder, or
    inside a file."""
    if out.suffix.lower() not in (".tif", ".tiff") or out.is_dir():
        raise AreaError(f"--out {out}: the map is written as a GeoTIFF file; name it .tif")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AreaError(f"--out {out} is inside {parent}, which is a file")
            return
