"""The ``socioseg`` command: parses arguments, calls the library, prints. No logic lives here.

Inference and data commands live here; the region commands in :mod:`socioseg.cli_region`, the
training commands in :mod:`socioseg.cli_train`, the model arguments they share in
:mod:`socioseg.cli_models`. Each subparser carries its handler as ``run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from socioseg import cli_region, cli_train
from socioseg.cli_models import (
    add_image_limit,
    add_inference_args,
    add_model_args,
    load_reasoner,
    reasoner_factory,
)
from socioseg.cli_support import (
    MAX_BATCH_SIZE,
    MAX_SAMPLES,
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
from socioseg.data.synth import MAX_QUERIES as SYNTH_MAX_QUERIES
from socioseg.data.synth import MAX_SIZE as SYNTH_MAX_SIZE
from socioseg.data.synth import MIN_SIZE as SYNTH_MIN_SIZE
from socioseg.data.synth import PLACEMENTS as SYNTH_PLACEMENTS
from socioseg.geometry import check_same_aspect
from socioseg.pipeline import DEFAULT_SAM


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


def _cmd_segment(args: argparse.Namespace) -> int:
    from socioseg.outputs import write_prediction

    sat, map_, query, inputs = _segment_inputs(args)
    reasoner = load_reasoner(args)
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from socioseg.evaluate import evaluate, result_dir

    dataset = _open_dataset(args)
    reasoner = load_reasoner(args)
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


def _cmd_merge(args: argparse.Namespace) -> int:
    from socioseg.evaluate import merge

    _print_summary(merge(args.out, allow_incomplete=args.allow_incomplete))
    return 0


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from socioseg.demo import run_demo
    from socioseg.images import pixel_limit
    from socioseg.sources import MINI_NAME

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


def _cmd_tiny_models(args: argparse.Namespace) -> int:
    from socioseg.tiny import build_tiny_models

    vlm_dir, sam_dir = build_tiny_models(args.out, seed=args.seed)
    print(f"wrote random-weight Qwen2.5-VL to {vlm_dir} and SAM2 to {sam_dir}")
    print("their masks are meaningless; use them for tests and offline runs only")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from socioseg.data.synth import write_dataset

    summary = write_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        fmt=args.format,
        size=args.size,
        workers=args.workers,
        queries=args.queries,
        placement=args.placement,
    )
    splits = ", ".join(f"{k} {v}" for k, v in summary["samples"].items())
    print(f"wrote {summary['n']} synthetic tiles to {args.out} ({args.format}, samples: {splits})")
    print(f"levels: {summary['levels']}; multi-instance samples: {summary['multi_instance']}")
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
    add_model_args(seg)
    add_inference_args(seg)
    add_image_limit(seg)
    seg.set_defaults(run=_cmd_segment)

    ev = sub.add_parser("eval", help="run the pipeline over a SocioSeg split and score it")
    _add_data_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    ev.add_argument(
        "--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=1, help="samples per batch"
    )
    ev.add_argument("--shard", type=shard_spec, help="i/n: this process's share (then merge)")
    ev.add_argument("--save-masks", action="store_true", help="also write masks as PNG")
    add_model_args(ev)
    add_inference_args(ev)
    add_image_limit(ev)
    ev.set_defaults(run=_cmd_eval)

    merge = sub.add_parser("merge", help="combine the shards of an eval run folder")
    merge.add_argument("out", type=Path, help="the eval run folder (holds shard-<i>-of-<n>/)")
    merge.add_argument("--allow-incomplete", action="store_true", help="merge what has run")
    merge.set_defaults(run=_cmd_merge)

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
    add_image_limit(score)
    score.set_defaults(run=_cmd_score)

    cli_region.add_commands(sub)

    demo = sub.add_parser("demo", help="a local web page to try the model (needs [demo])")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind")
    demo.add_argument("--port", type=int_in(1, 65535), default=7860, help="port to serve on")
    demo.add_argument("--max-file-size", type=file_size, default="50mb", help="largest upload")
    # Offline by default; --vlm alone with a real model brings the real SAM2 with it.
    add_model_args(demo, vlm="mini", sam=None)
    add_inference_args(demo)
    add_image_limit(demo)
    demo.set_defaults(run=_cmd_demo)

    synth = sub.add_parser("synth", help="generate a synthetic SocioSeg-like dataset")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n", type=int_in(1, MAX_SAMPLES), default=200, help="number of tiles")
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
    synth.add_argument(
        "--queries",
        type=int_in(1, SYNTH_MAX_QUERIES),
        default=1,
        help="questions per tile: its query, then name queries about its other entities",
    )
    synth.add_argument(
        "--placement",
        choices=SYNTH_PLACEMENTS,
        default="prominent",
        help="prominent: targets on the most visible blocks (socioseg-mini's data); "
        "random: every entity on a random block, so position says nothing",
    )
    synth.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=1, help="processes")
    synth.set_defaults(run=_cmd_synth)

    cli_train.add_commands(sub)

    tiny = sub.add_parser("tiny-models", help="build random-weight models for offline tests")
    tiny.add_argument("out", type=Path, help="folder; writes OUT/vlm and OUT/sam")
    tiny.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="weight seed")
    tiny.set_defaults(run=_cmd_tiny_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input ends in one line on stderr naming what to fix, exit 2."""
    args = build_parser().parse_args(argv)
    from socioseg.images import set_pixel_limit

    try:
        check_args(args)
        set_pixel_limit(getattr(args, "max_image_pixels", None))
        return args.run(args)
    except user_errors() as error:
        message = " ".join(str(error).split("\n")) or type(error).__name__
        print(f"socioseg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
