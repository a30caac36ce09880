"""The ``socioseg`` command: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, check_same_aspect
from socioseg.pipeline import DEFAULT_SAM, DEFAULT_VLM, InputError
from socioseg.types import MODES

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit code 2."""


def _command(function: Callable[[argparse.Namespace], int]):
    _COMMANDS[function.__name__.removeprefix("_cmd_").replace("_", "-")] = function
    return function


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", default=DEFAULT_VLM, help="Qwen2.5-VL Hub id or folder")
    parser.add_argument("--sam", default=DEFAULT_SAM, help="SAM2 (transformers) Hub id or folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: auto)")


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default="two-stage")
    parser.add_argument("--greedy", action="store_true", help="deterministic greedy decoding")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument(
        "--stage2-max-new-tokens", type=int, default=None, help="default: --max-new-tokens"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="decode with a static cache compiled by torch.compile (first batch compiles)",
    )
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument(
        "--stage2-fallback",
        action="store_true",
        help="use the stage-1 mask when stage 2 gives no usable object (default: empty mask)",
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder, parquet files or Hub id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--levels", type=Path, default=None, help="id -> level (CSV or JSON)")
    parser.add_argument("--limit", type=int, default=None, help="first N samples only")
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a broken sample stops the run, or is skipped and reported",
    )


def _inference_config(args: argparse.Namespace):
    from socioseg.pipeline import InferenceConfig
    from socioseg.vlm import SamplingSettings

    return InferenceConfig(
        mode=args.mode,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        sampling=SamplingSettings(
            greedy=args.greedy,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            decoding="compiled" if args.compile else "eager",
        ),
        stage2_fallback=args.stage2_fallback,
        stage2_max_new_tokens=args.stage2_max_new_tokens,
    )


def _load_reasoner(args: argparse.Namespace):
    from transformers.utils import logging as transformers_logging

    from socioseg.pipeline import SocioReasoner
    from socioseg.tiny import has_random_weights

    transformers_logging.disable_progress_bar()  # one bar per load says nothing here
    for name in ("vlm", "sam"):
        value = getattr(args, name)
        if value.startswith((".", "/")) and not Path(value).is_dir():
            raise CommandError(f"--{name}: folder not found: {value}")
    try:
        reasoner = SocioReasoner.from_pretrained(
            vlm=args.vlm,
            sam=args.sam,
            device=args.device,
            dtype=args.dtype,
            config=_inference_config(args),
        )
    except (OSError, ValueError) as error:  # the loaders' messages say what to pass
        raise CommandError(str(error)) from error
    if has_random_weights(reasoner):
        print(
            f"note: {args.vlm} holds random weights (socioseg tiny-models): its masks are "
            f"meaningless. For real results pass --vlm {DEFAULT_VLM} --sam {DEFAULT_SAM} "
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


def _print_summary(summary: dict) -> None:
    from socioseg.report import results_table

    print(results_table(summary))


@_command
def _cmd_eval(args: argparse.Namespace) -> int:
    from socioseg.evaluate import evaluate

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
        config_json={
            "data": str(args.data),
            "split": args.split,
            "levels": str(args.levels) if args.levels else None,
        },
        model_ids={"vlm": args.vlm, "sam": args.sam},
    )
    _print_summary(summary)
    print(f"wrote {args.out}/metrics.json, predictions.jsonl and report.md")
    return 0


@_command
def _cmd_merge(args: argparse.Namespace) -> int:
    from socioseg.evaluate import merge

    _print_summary(merge(args.out, allow_incomplete=args.allow_incomplete))
    return 0


@_command
def _cmd_score(args: argparse.Namespace) -> int:
    from socioseg.evaluate import score_predictions

    summary = score_predictions(
        args.pred_dir,
        _open_dataset(args),
        args.out,
        missing=args.missing,
        limit=args.limit,
        config_json={"data": str(args.data), "split": args.split, "pred_dir": str(args.pred_dir)},
    )
    _print_summary(summary)
    return 0


@_command
def _cmd_segment_area(args: argparse.Namespace) -> int:
    from socioseg.area import AreaError, segment_area

    try:
        summary = segment_area(
            _reasoner_factory(args),
            args.sat,
            args.map,
            args.query,
            args.out,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            mode=args.mode,
            min_area_px=args.min_area_px,
            progress=not args.no_progress,
        )
    except AreaError as error:
        raise CommandError(str(error)) from error
    print(
        f"tiles: {summary.tiles_total} ({summary.tiles_run} run, {summary.tiles_resumed} "
        f"resumed, {summary.tiles_nodata} empty); entities: {summary.entities}; "
        f"{summary.seconds:.1f}s"
    )
    print(f"wrote {summary.mask_path}, {summary.geojson_path} and {summary.tiles_jsonl}")
    return 0


@_command
def _cmd_demo(args: argparse.Namespace) -> int:
    from socioseg.demo import DemoDependencyError, run_demo

    try:
        run_demo(
            _reasoner_factory(args),
            host=args.host,
            port=args.port,
            max_image_pixels=args.max_image_pixels,
            max_file_size=args.max_file_size,
        )
    except DemoDependencyError as error:
        raise CommandError(str(error)) from error
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
    from socioseg.rl.config import ConfigError, load_config
    from socioseg.rl.trainer import Trainer

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        raise CommandError(str(error)) from error
    trainer = Trainer(config, args.out, resume=args.resume)
    if trainer.rank == 0:
        print(f"training from step {trainer.step} to {config.steps}; logs: {args.out}/tensorboard")
    trainer.train(on_log=_log_line if trainer.rank == 0 else None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    ev = sub.add_parser("eval", help="run the pipeline over a SocioSeg split and score it")
    _add_data_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    ev.add_argument("--batch-size", type=int, default=1)
    ev.add_argument("--shard", default=None, help="i/n: this process's share (then merge)")
    ev.add_argument("--save-masks", action="store_true", help="also write masks as PNG")
    _add_model_args(ev)
    _add_inference_args(ev)

    merge = sub.add_parser("merge", help="combine the shards of an eval run folder")
    merge.add_argument("out", type=Path)
    merge.add_argument("--allow-incomplete", action="store_true")

    score = sub.add_parser("score", help="score another method's masks (<id>.png)")
    score.add_argument("--pred-dir", required=True, type=Path)
    _add_data_args(score)
    score.add_argument("--out", required=True, type=Path)
    score.add_argument(
        "--missing",
        choices=("error", "skip", "empty"),
        default="error",
        help="a sample without a mask file: stop, list it, or score it empty",
    )

    area = sub.add_parser("segment-area", help="tile, segment and stitch large (geo)rasters")
    area.add_argument("--sat", required=True, type=Path, help="satellite raster (GeoTIFF/PNG)")
    area.add_argument("--map", required=True, type=Path, help="map raster on the same grid")
    area.add_argument("--query", required=True)
    area.add_argument("--out", required=True, type=Path, help="output folder (rerun to resume)")
    area.add_argument("--tile", type=int, default=768, help="tile side in pixels")
    area.add_argument("--overlap", type=int, default=128, help="minimum overlap of tiles")
    area.add_argument("--batch-size", type=int, default=4, help="tiles per batch")
    area.add_argument("--min-area-px", type=int, default=16, help="smallest polygon kept")
    area.add_argument("--no-progress", action="store_true")
    _add_model_args(area)
    _add_inference_args(area)

    demo = sub.add_parser("demo", help="a local web page to try the model (needs [demo])")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--max-image-pixels", type=int, default=25_000_000)
    demo.add_argument("--max-file-size", default="50mb")
    _add_model_args(demo)
    _add_inference_args(demo)

    synth = sub.add_parser("synth", help="generate a synthetic SocioSeg-like dataset")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n", type=int, default=200, help="number of samples")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=("folder", "parquet"), default="folder")
    synth.add_argument("--size", type=int, default=768, help="tile side in pixels")
    synth.add_argument("--workers", type=int, default=1, help="processes")

    train = sub.add_parser("train", help="GRPO training of both stages")
    train.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    train.add_argument("--out", required=True, type=Path, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("overrides", nargs="*", help="section.field=value overrides")

    tiny = sub.add_parser("tiny-models", help="build random-weight models for offline tests")
    tiny.add_argument("out", type=Path, help="folder; writes OUT/vlm and OUT/sam")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from socioseg.data import DataError
    from socioseg.evaluate import EvalError

    try:
        return _COMMANDS[args.command](args)
    except (CommandError, InputError, DataError, EvalError) as error:
        print(f"socioseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
