"""Both tiny models in one folder (``socioseg tiny-models OUT``): ``OUT/vlm`` and ``OUT/sam``."""

from __future__ import annotations

import json
from pathlib import Path

from socioseg.models.builders.qwen import build_tiny_policy, build_tiny_vlm
from socioseg.models.builders.sam import build_tiny_sam, build_tiny_segmenter
from socioseg.models.families import CONCEPT_FAMILY, CONCEPT_TITLE, POLICIES, SEGMENTERS

# Written beside OUT/vlm and OUT/sam: what made them, so a rerun may replace them (and only them).
RECORD_FILE = "tiny-models.json"
VLM_FAMILIES: tuple[str, ...] = tuple(POLICIES)
# The segmenters of the two-stage method, and SAM 3's concept segmenter (--mode sam3-concept).
SAM_FAMILIES: tuple[str, ...] = (*SEGMENTERS, CONCEPT_FAMILY)


def sam_family_title(family: str) -> str:
    """How to name a tiny segmenter of ``family`` (a :data:`SAM_FAMILIES` entry)."""
    return CONCEPT_TITLE if family == CONCEPT_FAMILY else SEGMENTERS[family].title


def build_tiny_models(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """The released pair (Qwen2.5-VL, SAM2) under ``out_dir/vlm`` and ``out_dir/sam``."""
    out_dir = Path(out_dir)
    vlm_dir = build_tiny_vlm(out_dir / "vlm", seed=seed)
    sam_dir = build_tiny_sam(out_dir / "sam")
    return vlm_dir, Path(sam_dir)


def build_tiny_family_models(
    out_dir: str | Path, vlm_family: str = "qwen2_5_vl", sam_family: str = "sam2", seed: int = 0
) -> tuple[Path, Path]:
    """Both tiny models of the named families under ``out_dir/vlm`` and ``out_dir/sam``."""
    out_dir = Path(out_dir)
    vlm = build_tiny_policy(out_dir / "vlm", vlm_family, seed)
    sam = build_tiny_segmenter(out_dir / "sam", sam_family, seed)
    return vlm, sam


def write_tiny_models(
    out_dir: str | Path, vlm_family: str = "qwen2_5_vl", sam_family: str = "sam2", seed: int = 0
) -> tuple[Path, Path]:
    """``socioseg tiny-models``: both tiny models built in a staging folder inside ``out_dir``
    and renamed into ``out_dir/vlm`` and ``out_dir/sam``, with :data:`RECORD_FILE`.

    An ``out_dir`` holding anything but an earlier ``tiny-models`` output is refused
    (:class:`~socioseg.publish.OutputError`, one line); an earlier output is replaced."""
    from socioseg.publish import OutputError, others_listed, publish_dir, staging_dir

    out = Path(out_dir)
    ours = {"vlm", "sam", RECORD_FILE} if (out / RECORD_FILE).is_file() else set()
    shown = others_listed(out, ours)
    if shown:
        raise OutputError(
            f"OUT {out} holds files tiny-models did not write ({shown}); "
            "they are left alone: pick a new or empty folder"
        )
    stage = staging_dir(out)
    if (vlm_family, sam_family) == ("qwen2_5_vl", "sam2"):
        build_tiny_models(stage, seed=seed)
    else:
        build_tiny_family_models(stage, vlm_family, sam_family, seed)
    record = {"vlm_family": vlm_family, "sam_family": sam_family, "seed": seed}
    (stage / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    publish_dir(stage, out, replace=ours)
    return out / "vlm", out / "sam"
