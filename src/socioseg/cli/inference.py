"""``socioseg segment`` and ``demo``: the model on one image pair, from a shell or a page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from socioseg.cli.common import CommandError, add_vector_args, file_size, int_in
from socioseg.cli.model_options import (
    add_image_limit,
    add_inference_args,
    add_model_args,
    load_reasoner,
    model_ids,
    reasoner_factory,
)
from socioseg.geometry import check_same_aspect
from socioseg.models.segmenter import DEFAULT_SAM
from socioseg.types import CONCEPT_MODE


def _segment_inputs(args: argparse.Namespace):
    """``(sat image, map, query, inputs record)`` from --example or --sat/--map/--query."""
    from socioseg.socioreasoner import load_image

    if args.example is not None:
        from socioseg.data import load_example

        key = int(args.example) if args.example.lstrip("-").isdigit() else args.example
        try:
            sample = load_example(key)
        except (IndexError, KeyError) as error:
            raise CommandError(str(error.args[0])) from error
        return sample.sat, sample.map, args.query or sample.query, {"example": sample.id}
    missing = [f"--{n}" for n in ("sat", "map", "query") if getattr(args, n) is None]
    if missing:
        raise CommandError(f"give {', '.join(missing)} (or --example N for a bundled sample)")
    sat = load_image(args.sat, str(args.sat))
    map_ = load_image(args.map, str(args.map))
    try:  # before the models load: a wrong pair should fail in a second, not a minute
        check_same_aspect(sat.size, map_.size, str(args.sat), str(args.map))
    except ValueError as error:
        raise CommandError(str(error)) from error
    return sat, map_, args.query, {"sat": str(args.sat), "map": str(args.map)}


def _gis_plan(args: argparse.Namespace, sat, map_):
    """``(georef, vector settings)`` when ``--sat`` is a georeferenced raster, else ``None``;
    the vector options, and a georeferenced --map's extent, are checked before the models load.
    ``sat``, ``map_``: the images read from --sat and --map."""
    from socioseg.region.gis_outputs import vector_settings
    from socioseg.region.raster import GIS_INSTALL_HINT, check_same_extent, read_georef

    settings = vector_settings(args.simplify, args.min_area_m2, args.dst_crs, model_ids(args))
    georef = None if args.sat is None else read_georef(args.sat)
    if georef is not None:
        check_same_extent(
            (str(args.sat), georef, sat.size), (str(args.map), read_georef(args.map), map_.size)
        )
    if georef is None and args.sat is not None and args.sat.suffix.lower() in (".tif", ".tiff"):
        from socioseg.region.raster import has_rasterio

        if not has_rasterio():
            print(f"note: {args.sat} may be georeferenced; mask.tif and entities.geojson/.gpkg "
                  f"on its grid need {GIS_INSTALL_HINT}", file=sys.stderr)  # fmt: skip
    if settings["dst_crs"] is not None and (georef is None or georef.crs is None):
        what = "no --sat" if args.sat is None else f"--sat {args.sat} has no CRS"
        raise CommandError(f"--dst-crs: {what} to reproject from (it needs a georeferenced --sat)")
    return None if georef is None else (georef, settings)


def _cmd_segment(args: argparse.Namespace) -> int:
    from socioseg.outputs import earlier_prediction_files, write_prediction
    from socioseg.publish import publish_dir, staging_dir

    replaceable = earlier_prediction_files(args.out)  # before anything loads
    sat, map_, query, inputs = _segment_inputs(args)
    gis = _gis_plan(args, sat, map_)
    reasoner = load_reasoner(args)
    prediction = reasoner.segment(sat, map_, query)
    models = model_ids(args)
    stage = staging_dir(args.out)  # written whole, then renamed into --out
    extra, gis_files = {}, {}
    if gis is not None:  # written first: result.json, the record, lists them
        from socioseg.data.levels import resolve_level
        from socioseg.region.area import DEFAULT_MIN_AREA_PX
        from socioseg.region.gis_outputs import write_prediction_gis

        level = resolve_level(str(args.sat), prediction.query)[0]
        georef, settings = gis
        gis_files, extra["gis"] = write_prediction_gis(
            stage, prediction, georef, level, settings, DEFAULT_MIN_AREA_PX
        )
    written = write_prediction(prediction, sat, stage, models=models, inputs=inputs, **extra)
    publish_dir(stage, args.out, replace=replaceable)
    stage1 = prediction.stage1.parsed
    print(f"query: {prediction.query!r}  mode: {prediction.mode}  final: {prediction.final_source}")
    if prediction.mode == CONCEPT_MODE:
        print(f"{CONCEPT_MODE}: {len(prediction.stage1.targets_image)} instances kept")
    else:
        print(f"stage 1: {len(stage1.targets)} boxes, {len(stage1.problems)} parse problems")
    if prediction.stage2 is not None:
        stage2 = prediction.stage2.parsed
        print(f"stage 2: {len(stage2.targets)} objects, {len(stage2.problems)} parse problems")
    print(f"mask: {int(prediction.mask.sum())} pixels of {sat.width}x{sat.height}")
    if gis is not None:
        record = extra["gis"]
        crs = record["vector_crs"]
        print(f"entities: {record['entities']}" + (f"; polygons in {crs}" if crs else ""))
    result = written.pop("result")
    for path in [*written.values(), *gis_files.values(), result]:
        print(f"wrote {args.out / path.name}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from socioseg.demo import run_demo
    from socioseg.images import pixel_limit
    from socioseg.models.sources import MINI_NAME

    if args.sam is None:
        args.sam = MINI_NAME if args.vlm == MINI_NAME else DEFAULT_SAM
    run_demo(
        reasoner_factory(args),
        host=args.host,
        port=args.port,
        max_image_pixels=pixel_limit(),
        max_file_size=args.max_file_size,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``segment`` and ``demo``, each with its handler as ``run``."""
    seg = sub.add_parser("segment", help="segment a query on one satellite + map pair")
    seg.add_argument("--sat", type=Path, help="satellite image")
    seg.add_argument("--map", type=Path, help="map image of the same extent")
    seg.add_argument("--query", help='e.g. "Jinan Zoo", "School", "Educational"')
    seg.add_argument("--example", help="a bundled example (index or name) instead of --sat/--map")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    add_vector_args(
        seg.add_argument_group(
            "GIS outputs (when --sat is a georeferenced raster, e.g. a GeoTIFF; socioseg[gis])",
            "mask.tif on the input grid, entities.geojson and entities.gpkg",
        )
    )
    add_model_args(seg)
    add_inference_args(seg, concept=True)
    add_image_limit(seg)
    seg.set_defaults(run=_cmd_segment)

    demo = sub.add_parser("demo", help="a local web page to try the model (needs [demo])")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind")
    demo.add_argument("--port", type=int_in(1, 65535), default=7860, help="port to serve on")
    demo.add_argument("--max-file-size", type=file_size, default="50mb", help="largest upload")
    # Offline by default; --vlm alone with a real model brings the real SAM2 with it.
    add_model_args(demo, vlm="mini", sam=None)
    add_inference_args(demo)
    add_image_limit(demo)
    demo.set_defaults(run=_cmd_demo)
