"""The command line's plumbing: argument types with bounds, one-line usage errors, ``--help``
with defaults, and the output-folder check."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from socioseg.types import MAX_BATCH_SIZE, MAX_NEW_TOKENS

# Bounds of size arguments, checked while parsing (before anything loads). Upper bounds keep a
# typo from asking for more memory than any machine has; the batch and token bounds are the
# ones config files have too (socioseg.types).
__all__ = ["MAX_BATCH_SIZE", "MAX_NEW_TOKENS"]
MAX_VLM_PIXELS = 16384 * 16384
MAX_SAMPLES = 10_000_000
MAX_WORKERS = 256
SEED_MAX = 2**32 - 1
# Commands whose output folder is the positional OUT (the others take --out).
POSITIONAL_OUT = ("merge", "synth", "tiny-models")


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit code 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is nothing to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with defaults in ``--help`` and usage errors in one line (exit 2)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``; the message names the bounds."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"from {low:,} to {high:,}" if high is not None else f">= {low:,}"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}")
        return value

    return parse


def file_size(text: str) -> str:
    """An argparse type: a size like ``50mb`` (units b, kb, mb, gb, tb), as Gradio takes it."""
    if re.fullmatch(r"\s*[1-9]\d*\s*(b|kb|mb|gb|tb)\s*", text, re.IGNORECASE) is None:
        raise argparse.ArgumentTypeError(f"must look like 50mb (b, kb, mb, gb or tb), got {text!r}")
    return text


def shard_spec(text: str) -> str:
    from socioseg.eval.files import EvalError, parse_shard

    try:
        parse_shard(text)
    except EvalError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def check_args(args: argparse.Namespace) -> None:
    """Checks across options, before anything loads: the VLM frame bounds are in order, and
    the output folder can be made (neither it nor a folder above it is a file)."""
    low, high = getattr(args, "min_pixels", None), getattr(args, "max_pixels", None)
    if low is not None and high is not None and low > high:
        raise CommandError(f"--min-pixels {low} is above --max-pixels {high}; lower it")
    out = getattr(args, "out", None)
    if out is None:
        return
    flag = "OUT" if args.command in POSITIONAL_OUT else "--out"
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out else f"is inside {path}, which is a file"
                raise CommandError(f"{flag} {out} {what}; pass a folder path")
            return


def add_vector_args(parser: argparse.ArgumentParser) -> None:
    """``--min-area-m2``, ``--simplify`` and ``--dst-crs``: the polygon outputs' options of
    ``segment-area`` and ``segment`` (see :mod:`socioseg.region.gis_outputs`)."""
    from socioseg.region.gis_outputs import DEFAULT_MIN_AREA_M2

    parser.add_argument(
        "--min-area-m2",
        type=float,
        default=DEFAULT_MIN_AREA_M2,
        help="smallest polygon kept, in square metres (rasters with a CRS)",
    )
    parser.add_argument(
        "--simplify",
        type=float,
        default=None,
        metavar="METRES",
        help="polygon simplification tolerance (default: one pixel; 0: keep pixel steps)",
    )
    parser.add_argument(
        "--dst-crs", default=None, help="CRS of entities.geojson/.gpkg, e.g. EPSG:4326"
    )
