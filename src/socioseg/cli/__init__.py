"""The ``socioseg`` command: parses arguments, calls the library, prints. No logic lives here.

One module per command group, each with ``add_commands(sub)``: :mod:`~socioseg.cli.inference`
(segment, demo), :mod:`~socioseg.cli.evaluation` (eval, merge, score),
:mod:`~socioseg.cli.region` (segment-area, map, make-dataset), :mod:`~socioseg.cli.data`
(synth), :mod:`~socioseg.cli.train` (train, sft, train-sam, plan-memory) and
:mod:`~socioseg.cli.models` (tiny-models). What they share is plumbing:
:mod:`~socioseg.cli.common` (argument types, errors) and :mod:`~socioseg.cli.model_options`
(the model flags and loading). A command group imports the plumbing and the library, never
another command group. Each subparser carries its handler as ``run``.
"""

from __future__ import annotations

import argparse
import sys

from socioseg.cli import data, evaluation, inference, models, region, train
from socioseg.cli.common import CommandError, Parser, check_args

GROUPS = (inference, evaluation, region, data, train, models)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="socioseg",
        description="Urban socio-semantic segmentation with vision-language reasoning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a file, a field, a model, a dataset), not a bug."""
    from socioseg.data.dataset import DataError
    from socioseg.data.levels import LevelFileError
    from socioseg.demo import DemoDependencyError
    from socioseg.eval.files import EvalError
    from socioseg.hub import SourceError
    from socioseg.images import ImageError
    from socioseg.publish import OutputError
    from socioseg.region.raster import AreaError
    from socioseg.train.config import ConfigError
    from socioseg.types import InputError

    return (
        CommandError,
        PermissionError,
        AreaError,
        ConfigError,
        DataError,
        DemoDependencyError,
        EvalError,
        FileNotFoundError,
        ImageError,
        InputError,
        LevelFileError,
        OutputError,
        SourceError,
    )


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
