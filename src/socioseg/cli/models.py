"""``socioseg tiny-models``: random-weight models of the real architectures, for offline runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from socioseg.cli.common import SEED_MAX, int_in
from socioseg.models.builders.tiny import SAM_FAMILIES
from socioseg.models.families import POLICIES


def _cmd_tiny_models(args: argparse.Namespace) -> int:
    from socioseg.models.builders.tiny import sam_family_title, write_tiny_models

    vlm_dir, sam_dir = write_tiny_models(args.out, args.vlm_family, args.sam_family, args.seed)
    vlm_title, sam_title = POLICIES[args.vlm_family].title, sam_family_title(args.sam_family)
    print(f"wrote random-weight {vlm_title} to {vlm_dir} and {sam_title} to {sam_dir}")
    print("their masks are meaningless; use them for tests and offline runs only")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``tiny-models`` with its handler as ``run``."""
    tiny = sub.add_parser("tiny-models", help="build random-weight models for offline tests")
    tiny.add_argument("out", type=Path, help="folder; writes OUT/vlm and OUT/sam")
    tiny.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="weight seed")
    tiny.add_argument(
        "--vlm-family", choices=tuple(POLICIES), default="qwen2_5_vl", help="policy architecture"
    )
    tiny.add_argument(
        "--sam-family",
        choices=SAM_FAMILIES,
        default="sam2",
        help="segmenter architecture (sam3: SAM 3's concept segmenter, for --mode sam3-concept)",
    )
    tiny.set_defaults(run=_cmd_tiny_models)
