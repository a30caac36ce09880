"""The ``socioseg`` command: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from socioseg.cli_support import (
    MAX_BATCH_SIZE,
    MAX_NEW_TOKENS,
    MAX_SAMPLES,
    MAX_VLM_PIXELS,
    MAX_WORKERS,
    SEED_MAX,
    CommandError,
    Parser,
    check_args,
    file_size,
    int_in,
    shard_spec,
    user_errors,
)
from socioseg.data.synth import MAX_SIZE as SYNTH_MAX_SIZE
from socioseg.data.synth import MIN_SIZE as SYNTH_MIN_SIZE
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, check_same_aspect
from socioseg.images import DEFAULT_MAX_IMAGE_PIXELS, PIXEL_LIMIT_ENV
from socioseg.pipeline import DEFAULT_SAM, DEFAULT_VLM
from socioseg.region.grid import SOCIOSEG_GSD
from socioseg.tiny import RANDOM_MODEL_MAX_NEW_TOKENS
from socioseg.types import MODES
from socioseg.vlm import SamplingSettings

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(function: Callable[[argparse.Namespace], int]):
    _COMMANDS[function.__name__.removeprefix("_cmd_").replace("_", "-")] = function
    return function


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", default=DEFAULT_VLM, help="Qwen2.5-VL Hub id or folder")
    parser.add_argument("--sam", default=DEFAULT_SAM, help="SAM2 (transformers) Hub id or folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: auto)")


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default="two-stage", help="what to run")
    parser.add_argument("--greedy", action="store_true", help="deterministic greedy decoding")
    parser.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="sampling seed")
    parser.add_argument(
        "--max-new-tokens",
        type=int_in(1, MAX_NEW_TOKENS),
        default=None,
        help=f"tokens per response (default: the VLM folder's socioseg_inference.json, else "
        f"{SamplingSettings.max_new_tokens}; "
        f"{RANDOM_MODEL_MAX_NEW_TOKENS} for random-weight test models)",
    )
    parser.add_argument(
        "--stage2-max-new-tokens",
        type=int_in(1, MAX_NEW_TOKENS),
        default=None,
        help="stage-2 tokens per response (default: --max-new-tokens)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="decode with a static cache compiled by torch.compile (first batch compiles)",
    )
    pixels = int_in(1, MAX_VLM_PIXELS)
    own = "the VLM folder's socioseg_inference.json, else"
    parser.add_argument(
        "--min-pixels",
        type=pixels,
        default=None,
        help=f"smallest VLM frame area (default: {own} {DEFAULT_MIN_PIXELS})",
    )
    parser.add_argument(
        "--max-pixels",
        type=pixels,
        default=None,
        help=f"largest VLM frame area (default: {own} {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--stage2-fallback",
        action="store_true",
        help="use the stage-1 mask when stage 2 gives no usable object (default: empty mask)",
    )


def _add_image_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-image-pixels",
        type=int_in(1),
        default=None,
        help=f"largest input image, width x height (default: ${PIXEL_LIMIT_ENV} or "
        f"{DEFAULT_MAX_IMAGE_PIXELS:,})",
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder, parquet files or Hub id")
    parser.add_argument("--split", default="test", help="train, val or test")
    parser.add_argument(
        "--levels",
        type=Path,
        default=None,
        help="id -> level (CSV or JSON; default: levels.json in the --data folder, if any)",
    )
    parser.add_argument(
        "--limit", type=int_in(0), default=None, help="first N samples only (default: all)"
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a broken sample stops the run, or is skipped and reported",
    )


def _inference_config(args: argparse.Namespace, defaults):
    """Flags first, then the VLM folder's own ``defaults`` (``ModelDefaults``), then ours."""
    from socioseg.pipeline import InferenceConfig

    config = InferenceConfig.for_model(
        defaults,
        mode=args.mode,
        sampling=SamplingSettings(
            greedy=args.greedy,
            seed=args.seed,
            decoding="compiled" if args.compile else "eager",
        ),
        stage2_fallback=args.stage2_fallback,
    )
    tokens = args.max_new_tokens or config.sampling.max_new_tokens
    return replace(
        config,
        min_pixels=args.min_pixels or config.min_pixels,
        max_pixels=args.max_pixels or config.max_pixels,
        sampling=replace(config.sampling, max_new_tokens=tokens),
        stage2_max_new_tokens=args.stage2_max_new_tokens
        or (None if args.max_new_tokens else config.stage2_max_new_tokens),
    )


def _load_reasoner(args: argparse.Namespace):
    from socioseg.sources import check_models

    # both, before torch and transformers even import
    vlm_source, _ = check_models(args.vlm, args.sam)
    from socioseg.model_defaults import ModelDefaults

    try:
        defaults = ModelDefaults.read(vlm_source)
        config = _inference_config(args, defaults)
    except ValueError as error:
        raise CommandError(str(error)) from error
    from transformers.utils import logging as transformers_logging

    from socioseg.pipeline import SocioReasoner
    from socioseg.tiny import has_random_weights

    transformers_logging.disable_progress_bar()  # one bar per load says nothing here
    try:
        reasoner = SocioReasoner.from_pretrained(
            vlm=args.vlm,
            sam=args.sam,
            device=args.device,
            dtype=args.dtype,
            config=config,
        )
    except (OSError, ValueError) as error:  # the loaders' messages say what to pass
        raise CommandError(str(error)) from error
    if has_random_weights(reasoner):
        if args.max_new_tokens is None:  # random tokens: a long answer is only slower noise
            sampling = replace(reasoner.config.sampling, max_new_tokens=RANDOM_MODEL_MAX_NEW_TOKENS)
            reasoner.config = replace(reasoner.config, sampling=sampling)
        print(
            f"note: {args.vlm} holds random weights (socioseg tiny-models): its masks are "
            f"meaningless; it decodes {reasoner.config.sampling.max_new_tokens} tokens at most "
            f"(--max-new-tokens). For real results pass --vlm {DEFAULT_VLM} --sam {DEFAULT_SAM} "
            "(downloaded on first use) or local copies of them.",
            file=sys.stderr,
        )
    return reasoner


def _reasoner_factory(args: argparse.Namespace):
    """Loads the models on first use, so that bad inputs fail before a 3B model loads."""
    return lambda: _load_reasoner(args)


def _segment_inputs(args: argparse.Namespace):
    """``(sat image, map, query, inputs record)`` from --example or --sat/--map/--query."""
    from socioseg.pipeline import load_image

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


@_command
def _cmd_segment(args: argparse.Namespace) -> int:
    from socioseg.outputs import write_prediction

    sat, map_, query, inputs = _segment_inputs(args)
    reasoner = _load_reasoner(args)
    prediction = reasoner.segment(sat, map_, query)
    models = {"vlm": args.vlm, "sam": args.sam}
    written = write_prediction(prediction, sat, args.out, models=models, inputs=inputs)
    stage1 = prediction.stage1.parsed
    print(f"query: {prediction.query!r}  mode: {prediction.mode}  final: {prediction.final_source}")
    print(f"stage 1: {len(stage1.targets)} boxes, {len(stage1.problems)} parse problems")
    if prediction.stage2 is not None:
        stage2 = prediction.stage2.parsed
        print(f"stage 2: {len(stage2.targets)} objects, {len(stage2.problems)} parse problems")
    print(f"mask: {int(prediction.mask.sum())} pixels of {sat.width}x{sat.height}")
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _open_dataset(args: argparse.Namespace):
    from socioseg.data import LevelMap, load_socioseg

    levels = LevelMap.from_file(args.levels) if args.levels else None
    return load_socioseg(args.data, args.split, levels=levels, on_error=args.on_error)


def _data_config(args: argparse.Namespace, dataset) -> dict:
    """What a run records about its data (the level file actually used, if any)."""
    levels = dataset.level_map.source if dataset.level_map is not None else None
    return {"data": str(args.data), "split": args.split, "levels": levels}


def _print_summary(summary: dict) -> None:
    from socioseg.report import results_table

    print(results_table(summary))


@_command
def _cmd_eval(args: argparse.Namespace) -> int:
    from socioseg.evaluate import evaluate, result_dir

    dataset = _open_dataset(args)
    reasoner = _load_reasoner(args)
    summary = evaluate(
        reasoner,
        dataset,
        args.out,
        batch_size=args.batch_size,
        limit=args.limit,
        shard=args.shard,
        save_masks=args.save_masks,
        config_json=_data_config(args, dataset),
        model_ids={"vlm": args.vlm, "sam": args.sam},
    )
    _print_summary(summary)
    print(f"wrote {result_dir(args.out, args.shard)}/metrics.json, predictions.jsonl and report.md")
    return 0


@_command
def _cmd_merge(args: argparse.Namespace) -> int:
    from socioseg.evaluate import merge

    _print_summary(merge(args.out, allow_incomplete=args.allow_incomplete))
    return 0


@_command
def _cmd_score(args: argparse.Namespace) -> int:
    from socioseg.evaluate import score_predictions

    dataset = _open_dataset(args)
    summary = score_predictions(
        args.pred_dir,
        dataset,
        args.out,
        missing=args.missing,
        limit=args.limit,
        config_json={**_data_config(args, dataset), "pred_dir": str(args.pred_dir)},
    )
    _print_summary(summary)
    print(f"wrote {args.out}/metrics.json, predictions.jsonl and report.md")
    return 0


@_command
def _cmd_segment_area(args: argparse.Namespace) -> int:
    import os

    from socioseg.area import segment_area

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device is None:  # torchrun: one GPU per process
        import torch

        args.device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    levels = None
    if args.query_level:
        levels = [f"socio-{v}" for v in args.query_level]
    source = _map_source(args)
    if (source is None) == (args.map is None):
        raise CommandError("give --map, or a map source (--osm, --tiles or --provider)")
    summary = segment_area(
        _reasoner_factory(args),
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
    print(f"wrote {summary.mask_path}, {summary.geojson_path} and {summary.tiles_jsonl}")
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
    group.add_argument("--font", type=Path, help="label font file, e.g. Noto Sans CJK for Chinese")
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


@_command
def _cmd_map(args: argparse.Namespace) -> int:
    from socioseg.region.grid import Grid
    from socioseg.region.mapping import check_out, make_map

    source = _map_source(args)
    if source is None:
        raise CommandError("give a map source: --osm FILE, --tiles URL or --provider NAME")
    check_out(args.map_out)
    made = make_map(Grid.of_raster(args.like), source, args.map_out)
    if made.zoom is not None:
        print(f"tiles: {made.tiles} at zoom {made.zoom} ({made.downloaded} downloaded)")
    print(f"wrote {made.path}")
    if made.attribution:
        print(f"map data: {made.attribution}")
    return 0


@_command
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
    summary = make_dataset(args.sat, args.map, args.labels, args.out, spec)
    print(f"{summary['samples']} samples from {summary['tiles']} tiles")
    for split, by_level in summary["splits"].items():
        counts = ", ".join(f"{level} {n}" for level, n in sorted(by_level.items())) or "none"
        print(f"  {split}: {counts}")
    print(f"wrote {args.out} (folder layout) with levels.json and index.jsonl")
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


@_command
def _cmd_demo(args: argparse.Namespace) -> int:
    from socioseg.demo import run_demo
    from socioseg.images import pixel_limit

    run_demo(
        _reasoner_factory(args),
        host=args.host,
        port=args.port,
        max_image_pixels=pixel_limit(),
        max_file_size=args.max_file_size,
    )
    return 0


@_command
def _cmd_tiny_models(args: argparse.Namespace) -> int:
    from socioseg.tiny import build_tiny_models

    vlm_dir, sam_dir = build_tiny_models(args.out, seed=args.seed)
    print(f"wrote random-weight Qwen2.5-VL to {vlm_dir} and SAM2 to {sam_dir}")
    print("their masks are meaningless; use them for tests and offline runs only")
    return 0


@_command
def _cmd_synth(args: argparse.Namespace) -> int:
    from socioseg.data.synth import write_dataset

    summary = write_dataset(
        args.out, n=args.n, seed=args.seed, fmt=args.format, size=args.size, workers=args.workers
    )
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"wrote {summary['n']} synthetic samples to {args.out} ({args.format}: {splits})")
    print(f"levels: {summary['levels']}; multi-instance samples: {summary['multi_instance']}")
    return 0


def _log_line(step: int, metrics: dict[str, float]) -> None:
    print(
        f"step {step}: reward s1 {metrics['stage1/reward_total']:.3f} "
        f"s2 {metrics['stage2/reward_total']:.3f} | IoU s1 {metrics['stage1/iou']:.3f} "
        f"s2 {metrics['stage2/iou']:.3f} | loss {metrics['train/loss']:.4f} "
        f"kl {metrics['train/kl']:.4f} | {metrics['time/step_s']:.1f}s",
        flush=True,
    )


@_command
def _cmd_train(args: argparse.Namespace) -> int:
    from socioseg.rl.checkpoint import CheckpointError
    from socioseg.rl.config import load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        return _train_plan(config, args.world_size, args.image_side)
    if args.out is None:
        raise CommandError("train needs --out DIR (the run folder), or --dry-run")
    from socioseg.rl.trainer import Trainer

    try:
        trainer = Trainer(config, args.out, resume=args.resume, overwrite=args.overwrite)
    except CheckpointError as error:
        raise CommandError(str(error)) from error
    if trainer.rank == 0:
        for note in trainer.resume_notes:
            print(f"resume: {note}")
        if trainer.resume_from is not None:
            print(f"resuming from {trainer.resume_from}")
        print(f"weights: {trainer.precision.describe()}")
        print(f"training from step {trainer.step} to {config.steps}; logs: {args.out}/tensorboard")
    trainer.train(on_log=_log_line if trainer.rank == 0 else None)
    return 0


def _supervised_log(what: str) -> Callable[[int, dict[str, float]], None]:
    def log(step: int, metrics: dict[str, float]) -> None:
        parts = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "elapsed_s")
        print(f"{what} step {step}: {parts} | {metrics['elapsed_s']:.0f}s", flush=True)

    return log


@_command
def _cmd_sft(args: argparse.Namespace) -> int:
    from socioseg.rl.checkpoint import CheckpointError
    from socioseg.rl.config import load_config
    from socioseg.rl.sft import SftConfig, train_sft

    config = load_config(args.config, args.overrides, cls=SftConfig)
    try:
        out = train_sft(config, args.out, args.overwrite, on_log=_supervised_log("sft"))
    except CheckpointError as error:
        raise CommandError(str(error)) from error
    print(f"wrote the warmed-up policy to {out} (pass it as --vlm or model.vlm)")
    return 0


@_command
def _cmd_train_sam(args: argparse.Namespace) -> int:
    from socioseg.rl.checkpoint import CheckpointError
    from socioseg.rl.config import load_config
    from socioseg.rl.sam_train import SamTrainConfig, train_sam

    config = load_config(args.config, args.overrides, cls=SamTrainConfig)
    try:
        out = train_sam(config, args.out, args.overwrite, on_log=_supervised_log("sam"))
    except CheckpointError as error:
        raise CommandError(str(error)) from error
    print(f"wrote SAM2 to {out} (pass it as --sam or model.sam)")
    return 0


def _train_plan(config, world_size: int, image_side: int) -> int:
    from socioseg.rl.memory import format_plan, plan

    config.check_world(world_size)
    for line in format_plan(plan(config, world_size, image_side), config, world_size):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="socioseg",
        description="Urban socio-semantic segmentation with vision-language reasoning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment a query on one satellite + map pair")
    seg.add_argument("--sat", type=Path, help="satellite image")
    seg.add_argument("--map", type=Path, help="map image of the same extent")
    seg.add_argument("--query", help='e.g. "Jinan Zoo", "School", "Educational"')
    seg.add_argument("--example", help="a bundled example (index or name) instead of --sat/--map")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    _add_model_args(seg)
    _add_inference_args(seg)
    _add_image_limit(seg)

    ev = sub.add_parser("eval", help="run the pipeline over a SocioSeg split and score it")
    _add_data_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    ev.add_argument(
        "--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=1, help="samples per batch"
    )
    ev.add_argument("--shard", type=shard_spec, help="i/n: this process's share (then merge)")
    ev.add_argument("--save-masks", action="store_true", help="also write masks as PNG")
    _add_model_args(ev)
    _add_inference_args(ev)
    _add_image_limit(ev)

    merge = sub.add_parser("merge", help="combine the shards of an eval run folder")
    merge.add_argument("out", type=Path, help="the eval run folder (holds shard-<i>-of-<n>/)")
    merge.add_argument("--allow-incomplete", action="store_true", help="merge what has run")

    score = sub.add_parser("score", help="score another method's masks (<id>.png)")
    score.add_argument("--pred-dir", required=True, type=Path, help="folder of <id>.png masks")
    _add_data_args(score)
    score.add_argument("--out", required=True, type=Path, help="output folder")
    score.add_argument(
        "--missing",
        choices=("error", "skip", "empty"),
        default="error",
        help="a sample without a mask file: stop, list it, or score it empty",
    )
    _add_image_limit(score)

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
    area.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_map_source_args(area)
    _add_model_args(area)
    _add_inference_args(area)
    _add_image_limit(area)

    map_ = sub.add_parser("map", help="a web map on a GeoTIFF's grid from OSM data or tiles")
    map_.add_argument("--like", required=True, type=Path, help="raster whose grid the map takes")
    map_.add_argument(
        "--out", required=True, type=Path, dest="map_out", help="map GeoTIFF to write (.tif)"
    )
    _add_map_source_args(map_)

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

    demo = sub.add_parser("demo", help="a local web page to try the model (needs [demo])")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind")
    demo.add_argument("--port", type=int_in(1, 65535), default=7860, help="port to serve on")
    demo.add_argument("--max-file-size", type=file_size, default="50mb", help="largest upload")
    _add_model_args(demo)
    _add_inference_args(demo)
    _add_image_limit(demo)

    synth = sub.add_parser("synth", help="generate a synthetic SocioSeg-like dataset")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n", type=int_in(1, MAX_SAMPLES), default=200, help="number of samples")
    synth.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="generator seed")
    synth.add_argument(
        "--format", choices=("folder", "parquet"), default="folder", help="on-disk layout"
    )
    synth.add_argument(
        "--size",
        type=int_in(SYNTH_MIN_SIZE, SYNTH_MAX_SIZE),
        default=768,
        help="tile side (px)",
    )
    synth.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=1, help="processes")

    train = sub.add_parser("train", help="GRPO training of both stages")
    train.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    train.add_argument("--out", type=Path, default=None, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print the per-GPU memory plan of the config and exit (loads no weights)",
    )
    train.add_argument(
        "--world-size", type=int_in(1, 65536), default=1, help="GPUs (processes) for --dry-run"
    )
    train.add_argument(
        "--image-side", type=int_in(28, 16384), default=768, help="tile side (px) for --dry-run"
    )
    train.add_argument("overrides", nargs="*", help="section.field=value overrides")

    for name, what in (
        ("sft", "supervised warm-up of the policy on teacher answers (configs/mini_sft.yaml)"),
        ("train-sam", "supervised SAM2 training on box / box + point prompts"),
    ):
        sup = sub.add_parser(name, help=what)
        sup.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
        sup.add_argument("--out", type=Path, required=True, help="model folder to write")
        sup.add_argument(
            "--overwrite", action="store_true", help="replace the model this command wrote in --out"
        )
        sup.add_argument("overrides", nargs="*", help="field=value overrides")

    tiny = sub.add_parser("tiny-models", help="build random-weight models for offline tests")
    tiny.add_argument("out", type=Path, help="folder; writes OUT/vlm and OUT/sam")
    tiny.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="weight seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input ends in one line on stderr naming what to fix, exit 2."""
    args = build_parser().parse_args(argv)
    from socioseg.images import set_pixel_limit

    try:
        check_args(args)
        set_pixel_limit(getattr(args, "max_image_pixels", None))
        return _COMMANDS[args.command](args)
    except user_errors() as error:
        message = " ".join(str(error).split("\n")) or type(error).__name__
        print(f"socioseg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
