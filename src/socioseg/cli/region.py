"""``socioseg segment-area``, ``map`` and ``make-dataset``: the commands of a whole region."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from socioseg.cli.common import MAX_BATCH_SIZE, SEED_MAX, CommandError, add_vector_args, int_in
from socioseg.cli.model_options import (
    add_image_limit,
    add_inference_args,
    add_model_args,
    reasoner_factory,
)
from socioseg.region.dataset_files import LARGE_SAMPLES
from socioseg.region.grid import SOCIOSEG_GSD


def _cmd_segment_area(args: argparse.Namespace) -> int:
    import os

    from socioseg.region.area import segment_area

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device is None:  # torchrun: one GPU per process
        import torch

        args.device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    levels = None
    if args.query_level:
        levels = [f"socio-{v}" for v in args.query_level]
    source = _map_source(args)
    if source is None and args.map is None:
        raise CommandError("give --map, or a map source (--osm, --tiles or --provider)")
    if source is not None and args.map is not None:
        raise CommandError(
            "give --map or a map source (--osm, --tiles or --provider), not both: the map is "
            "either read or made"
        )
    summary = segment_area(
        reasoner_factory(args),
        args.sat,
        source or args.map,
        args.query,
        args.out,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        mode=args.mode,
        min_area_px=args.min_area_px,
        gsd=args.gsd,
        levels=levels,
        progress=not args.no_progress and os.environ.get("RANK", "0") == "0",
        simplify=args.simplify,
        min_area_m2=args.min_area_m2,
        dst_crs=args.dst_crs,
        models={"vlm": str(args.vlm), "sam": str(args.sam)},
    )
    if summary is None:  # another torchrun rank: rank 0 reports
        return 0
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"tiles x queries: {summary.tiles_total} ({summary.tiles_run} run, "
        f"{summary.tiles_resumed} resumed, {summary.tiles_nodata} empty); "
        f"entities: {summary.entities}; {summary.seconds:.1f}s"
    )
    if summary.gsd is not None:
        print(f"resolution: {summary.gsd:g} m/px, {summary.scale:.3g} model px per raster px")
    written = [summary.mask_path, summary.geojson_path, summary.gpkg_path, summary.overview_path]
    print(f"wrote {', '.join(p for p in written if p)} and {summary.tiles_jsonl}")
    if summary.vector_crs is not None:
        print(f"polygons in {summary.vector_crs}")
    if source is not None:
        _print_map_credit(args.out / "map.tif")
    return 0


def _print_map_credit(map_path: Path) -> None:
    import rasterio

    with rasterio.open(map_path) as ds:
        credit = ds.tags().get("ATTRIBUTION")
    if credit:
        print(f"map data: {credit}")


def _add_map_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("map source (instead of a map raster)")
    group.add_argument("--osm", type=Path, help="OpenStreetMap extract (.osm.pbf or .osm)")
    group.add_argument("--tiles", help="XYZ tile URL template with {x}, {y}, {z}")
    group.add_argument("--provider", help="an xyzservices tile provider, e.g. OpenStreetMap.Mapnik")
    group.add_argument(
        "--name-tag", default="name", help="OSM tag for labels: name, name:en, name:zh, ..."
    )
    group.add_argument(
        "--font", type=Path, help="label font tried before the default Noto fonts (TTF/OTF)"
    )
    group.add_argument("--gcj02", action="store_true", help="tiles are in GCJ-02 (Amap, ...)")
    group.add_argument(
        "--tile-budget", type=int_in(1), default=400, help="most tiles one map may download"
    )
    group.add_argument("--tile-cache", type=Path, default=None, help="tile cache folder")
    group.add_argument(
        "--zoom", type=int_in(0, 24), default=None, help="tile zoom (default: by resolution)"
    )


def _map_source(args: argparse.Namespace):
    """The map source the arguments name, or ``None`` when none is given."""
    from socioseg.region.mapping import MapSource

    if args.osm is None and args.tiles is None and args.provider is None:
        return None
    return MapSource(
        osm=args.osm,
        tiles=args.tiles,
        provider=args.provider,
        name_tag=args.name_tag,
        font=args.font,
        gcj02=args.gcj02,
        tile_budget=args.tile_budget,
        cache_dir=args.tile_cache,
        zoom=args.zoom,
    )


def _cmd_map(args: argparse.Namespace) -> int:
    from socioseg.region.grid import Grid
    from socioseg.region.mapping import check_out, make_map

    source = _map_source(args)
    if source is None:
        raise CommandError("give a map source: --osm FILE, --tiles URL or --provider NAME")
    inputs = {"--like": args.like, "--osm": args.osm, "--font": args.font}
    check_out(args.map_out, inputs, args.overwrite)
    made = make_map(Grid.of_raster(args.like), source, args.map_out)
    if made.zoom is not None:
        print(f"tiles: {made.tiles} at zoom {made.zoom} ({made.downloaded} downloaded)")
    if made.labels:
        print(made.labels)
    print(f"wrote {made.path}")
    for note in made.notes:
        print(f"note: {note}", file=sys.stderr)
    if made.attribution:
        print(f"map data: {made.attribution}")
    return 0


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from socioseg.region.dataset import DatasetSpec, make_dataset

    levels = None
    if args.levels:
        levels = tuple(f"socio-{v.strip().removeprefix('socio-')}" for v in args.levels.split(","))
    spec = DatasetSpec(
        query_field=args.query_field,
        class_field=args.class_field,
        function_field=args.function_field,
        levels=levels,
        tile=args.tile,
        block=args.block,
        min_pixels=args.min_pixels,
        seed=args.seed,
    )
    summary = make_dataset(
        args.sat,
        args.map,
        args.labels,
        args.out,
        spec,
        allow_large=args.allow_large,
        progress=not args.no_progress,
    )
    print(f"{summary['samples']} samples from {summary['tiles']} tiles")
    shared = summary["shared_images"]
    if shared["linked"] or shared["copied"]:
        print(
            f"tile images shared between samples: {shared['linked']} hard links, "
            f"{shared['copied']} copies"
        )
    for split, by_level in summary["splits"].items():
        counts = ", ".join(f"{level} {n}" for level, n in sorted(by_level.items())) or "none"
        print(f"  {split}: {counts}")
    print(f"wrote {args.out} (folder layout) with levels.json and index.jsonl")
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The region commands' parsers, each with its handler as ``run``."""
    _add_segment_area(sub)
    _add_map(sub)
    _add_make_dataset(sub)


def _add_segment_area(sub: argparse._SubParsersAction) -> None:
    """``segment-area``: a large raster tiled, segmented and stitched."""
    area = sub.add_parser("segment-area", help="tile, segment and stitch large (geo)rasters")
    area.add_argument("--sat", required=True, type=Path, help="satellite raster (GeoTIFF/PNG)")
    area.add_argument("--map", type=Path, help="map raster on the same grid (or --osm, ...)")
    area.add_argument(
        "--query", required=True, action="append", help="what to segment; repeat for several"
    )
    area.add_argument(
        "--query-level",
        action="append",
        choices=("name", "class", "function"),
        help="level of each --query, in order (default: function names known, else unknown)",
    )
    area.add_argument("--out", required=True, type=Path, help="output folder (rerun to resume)")
    area.add_argument("--tile", type=int_in(64, 8192), default=768, help="tile side in pixels")
    area.add_argument("--overlap", type=int_in(0, 4096), default=128, help="minimum overlap")
    area.add_argument(
        "--gsd",
        type=float,
        default=SOCIOSEG_GSD,
        help="metres per pixel the model sees; tiles are resampled to it (0: keep the input's)",
    )
    area.add_argument(
        "--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=4, help="tiles per batch"
    )
    area.add_argument("--min-area-px", type=int_in(0), default=16, help="smallest polygon kept")
    add_vector_args(area)
    area.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_map_source_args(area)
    add_model_args(area)
    add_inference_args(area)
    add_image_limit(area)
    area.set_defaults(run=_cmd_segment_area)


def _add_map(sub: argparse._SubParsersAction) -> None:
    """``map``: a web map on a raster's grid."""
    map_ = sub.add_parser("map", help="a web map on a GeoTIFF's grid from OSM data or tiles")
    map_.add_argument("--like", required=True, type=Path, help="raster whose grid the map takes")
    map_.add_argument(
        "--out", required=True, type=Path, dest="map_out", help="map GeoTIFF to write (.tif)"
    )
    map_.add_argument(
        "--overwrite", action="store_true", help="replace a map an earlier `socioseg map` wrote"
    )
    _add_map_source_args(map_)
    map_.set_defaults(run=_cmd_map)


def _add_make_dataset(sub: argparse._SubParsersAction) -> None:
    """``make-dataset``: a SocioSeg folder dataset from rasters and labels."""
    make = sub.add_parser("make-dataset", help="a SocioSeg folder dataset from rasters + labels")
    make.add_argument("--sat", required=True, type=Path, help="satellite GeoTIFF")
    make.add_argument("--map", required=True, type=Path, help="map GeoTIFF on the same grid")
    make.add_argument("--labels", required=True, type=Path, help="GeoJSON/GeoPackage/Shapefile")
    make.add_argument("--query-field", required=True, help="field naming each entity")
    make.add_argument("--class-field", default=None, help="field with its socio-class")
    make.add_argument("--function-field", default=None, help="field with its socio-function")
    make.add_argument(
        "--levels", default=None, help="levels to make, e.g. name,class (default: all given)"
    )
    make.add_argument("--out", required=True, type=Path, help="new dataset folder")
    make.add_argument("--tile", type=int_in(64, 8192), default=768, help="tile side in pixels")
    make.add_argument("--block", type=int_in(1), default=2, help="tiles per split block side")
    make.add_argument(
        "--min-pixels", type=int_in(1), default=64, help="least visible area of a query"
    )
    make.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="seed of the split")
    make.add_argument(
        "--allow-large",
        action="store_true",
        help=f"write more than {LARGE_SAMPLES:,} samples (asked for, as they take GBs)",
    )
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    make.set_defaults(run=_cmd_make_dataset)
