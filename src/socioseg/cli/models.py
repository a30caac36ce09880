"""``socioseg tiny-models``: random-weight models of the real architectures, for offline runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from socioseg.cli.common import SEED_MAX, int_in


def _cmd_tiny_models(args: argparse.Namespace) -> int:
    from socioseg.models.builders import build_tiny_models

    vlm_dir, sam_dir = build_tiny_models(args.out, seed=args.seed)
    print(f"wrote random-weight Qwen2.5-VL to {vlm_dir} and SAM2 to {sam_dir}")
    print("their masks are meaningless; use them for tests and offline runs only")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``tiny-models`` with its handler as ``run``."""
    tiny = sub.add_parser("tiny-models", help="build random-weight models for offline tests")
    tiny.add_argument("out", type=Path, help="folder; writes OUT/vlm and OUT/sam")
    tiny.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="weight seed")
    tiny.set_defaults(run=_cmd_tiny_models)
