"""``socioseg eval``, ``merge`` and ``score``: a split run and scored, its shards merged, other
methods' masks scored the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from socioseg.cli.common import MAX_BATCH_SIZE, int_in, shard_spec
from socioseg.cli.model_options import (
    add_image_limit,
    add_inference_args,
    add_model_args,
    load_reasoner,
    model_ids,
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


def _open_dataset(args: argparse.Namespace):
    from socioseg.data.dataset import load_socioseg
    from socioseg.data.levels import LevelMap

    levels = LevelMap.from_file(args.levels) if args.levels else None
    return load_socioseg(args.data, args.split, levels=levels, on_error=args.on_error)


def _data_config(args: argparse.Namespace, dataset) -> dict:
    """What a run records about its data (the level file actually used, if any)."""
    levels = dataset.level_map.source if dataset.level_map is not None else None
    return {"data": str(args.data), "split": args.split, "levels": levels}


def _print_summary(summary: dict) -> None:
    from socioseg.eval.report import results_table

    print(results_table(summary))


def _cmd_eval(args: argparse.Namespace) -> int:
    from socioseg.eval.run import evaluate, result_dir

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
        model_ids=model_ids(args),
    )
    _print_summary(summary)
    print(f"wrote {result_dir(args.out, args.shard)}/metrics.json, predictions.jsonl and report.md")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from socioseg.eval.run import merge

    _print_summary(merge(args.out, allow_incomplete=args.allow_incomplete))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from socioseg.eval.score import score_predictions

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``eval``, ``merge`` and ``score``, each with its handler as ``run``."""
    ev = sub.add_parser("eval", help="run the pipeline over a SocioSeg split and score it")
    _add_data_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    ev.add_argument(
        "--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=1, help="samples per batch"
    )
    ev.add_argument("--shard", type=shard_spec, help="i/n: this process's share (then merge)")
    ev.add_argument("--save-masks", action="store_true", help="also write masks as PNG")
    add_model_args(ev)
    add_inference_args(ev, concept=True)
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
