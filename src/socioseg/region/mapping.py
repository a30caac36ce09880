"""One entry point for every map source: ``make_map(grid, source) -> GeoTIFF`` on the grid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from socioseg.region.grid import Grid, write_rgb
from socioseg.region.map_file import MADE_TAG, NOTES_TAG, is_our_map, made_tag, map_made_from
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
    labels: str | None = None  # what the OSM labels show ("labels: 15 of 413 named places ...")
    notes: tuple[str, ...] = ()  # what the user should know: missing fonts, skipped nodes


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
        labels = rendered.labels.line()
        made = MadeMap(Path(out), OSM_ATTRIBUTION, labels=labels, notes=rendered.notes)
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
    tags[MADE_TAG] = made_tag(source.describe())
    if made.labels or made.notes:  # segment-area reports them from the map it reuses
        tags[NOTES_TAG] = json.dumps([line for line in (made.labels, *made.notes) if line])
    write_rgb(out, grid, rgb, tags)
    return made


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


def ensure_map(sat_path, map_path, out: Path, rank: int, share) -> Path:
    """Claim the run folder ``out`` (:func:`~socioseg.region.run_files.claim_out`) and return
    ``map_path`` itself, or the map a ``MapSource`` makes there. Rank 0 checks and writes, the
    other ranks wait for it and stop with its error, if any.

    A ``map.tif`` already in ``out`` is used only when socioseg rendered it from this very
    source; one from another source is rendered again unless a run recorded it."""
    from socioseg.region.run_files import MAP_FILE, claim_out, previous_settings

    made = isinstance(map_path, MapSource)
    target = out / MAP_FILE if made else Path(map_path)
    error = None
    if rank == 0:
        try:
            claim_out(out, {"--sat": Path(sat_path), "--map": None if made else target})
            if made:
                _render_run_map(sat_path, map_path, out, target, previous_settings(out))
        except AreaError as exc:  # every rank stops with it, none waits for a map
            error = str(exc)
    error = share(error)
    if error is not None:
        raise AreaError(error)
    return target


def _render_run_map(sat_path, source: MapSource, out: Path, target: Path, previous) -> None:
    """Render ``target`` unless a map of ours from ``source`` is there (see ``ensure_map``)."""
    if target.exists() and not is_our_map(target):
        raise AreaError(
            f"{target} is not a map socioseg rendered; it is left alone: move it away "
            "or pass it as --map"
        )
    if map_made_from(target, source.describe()):
        return
    if previous is not None and previous.get("map_source") != source.describe():
        raise AreaError(
            f"{out} holds a run made from another map source "
            f"({previous.get('map_source')}); use another --out or delete it"
        )
    make_map(Grid.of_raster(sat_path), source, target)
