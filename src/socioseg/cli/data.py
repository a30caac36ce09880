"""``socioseg synth``: a synthetic SocioSeg-like dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from socioseg.cli.common import MAX_SAMPLES, MAX_WORKERS, SEED_MAX, int_in
from socioseg.data.synth import MAX_QUERIES as SYNTH_MAX_QUERIES
from socioseg.data.synth import MAX_SIZE as SYNTH_MAX_SIZE
from socioseg.data.synth import MIN_SIZE as SYNTH_MIN_SIZE
from socioseg.data.synth import PLACEMENTS as SYNTH_PLACEMENTS


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``synth`` with its handler as ``run``."""
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
