"""Predictions as files and JSON: one format shared by the CLI, evaluation and the demo."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from socioseg.render import mask_image, render_overlay
from socioseg.types import Prediction, StageResult, Target


def targets_to_json(targets: tuple[Target, ...]) -> list[dict[str, Any]]:
    """Targets as ``[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y], ...]}, ...]``.

    Values are rounded to 2 decimals; a NaN or infinite value (the model may write one, and SAM2
    gets it as given) becomes ``null`` so that files stay standard JSON.
    """
    return [
        {
            "bbox_2d": [_finite(v, 2) for v in t.box.as_list()],
            "points": [[_finite(p.x, 2), _finite(p.y, 2)] for p in t.points],
        }
        for t in targets
    ]


def _finite(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def stage_to_json(stage: StageResult | None) -> dict[str, Any] | None:
    """A stage's raw response, answer, problems and its targets in satellite image pixels.

    A SAM2 score that is not finite (a target with a NaN coordinate) is written as ``null``.
    """
    if stage is None:
        return None
    return {
        "response": stage.response,
        "answer": stage.parsed.answer_text,
        "has_think": stage.parsed.has_think,
        "targets_image": targets_to_json(stage.targets_image),
        "problems": list(stage.parsed.problems),
        "mask_pixels": int(stage.mask.sum()),
        "sam_scores": [_finite(float(s), 4) for s in stage.sam_scores],
        "mean_logprob": None if stage.mean_logprob is None else round(float(stage.mean_logprob), 4),
    }


def prediction_to_json(prediction: Prediction, **extra: Any) -> dict[str, Any]:
    """Everything about a prediction except the images; ``extra`` keys are added on top."""
    return {
        "query": prediction.query,
        "mode": prediction.mode,
        "image_size": list(prediction.image_size),
        "vlm_size": list(prediction.vlm_size),
        "final_source": prediction.final_source,
        "stage1": stage_to_json(prediction.stage1),
        "stage2": stage_to_json(prediction.stage2),
        "mask_pixels": int(prediction.mask.sum()),
        "timings_s": {k: round(v, 4) for k, v in prediction.timings.items()},
        **extra,
    }


PREDICTION_FILES = (
    "mask.png",
    "stage1_mask.png",
    "overlay.png",
    "feedback_map.png",
    "feedback_sat.png",
    "result.json",
)


def earlier_prediction_files(out_dir: str | Path) -> set[str]:
    """The names in ``out_dir`` that an earlier ``segment`` run wrote, which a new run there
    may replace; refuses (:class:`~socioseg.publish.OutputError`, one line) a folder that
    holds anything else, so no file of the user's is ever overwritten.

    An earlier run is recognised by its ``result.json``; its files are :data:`PREDICTION_FILES`
    and the GIS files that ``result.json`` lists."""
    from socioseg.publish import OutputError, others_listed

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder path")
    ours: set[str] = set()
    record = out / "result.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if isinstance(data, dict) and {"query", "mode", "final_source"} <= set(data):
            gis = data.get("gis") if isinstance(data.get("gis"), dict) else {}
            listed = gis.get("files") if isinstance(gis.get("files"), dict) else {}
            ours = set(PREDICTION_FILES) | {n for n in listed.values() if isinstance(n, str)}
    shown = others_listed(out, ours)
    if shown:
        raise OutputError(
            f"--out {out} holds files socioseg did not write ({shown}); they are left alone: "
            "pick a new or empty folder"
        )
    return ours


def write_prediction(
    prediction: Prediction, sat, out_dir: str | Path, **extra: Any
) -> dict[str, Path]:
    """Write a prediction's files into ``out_dir``; returns name -> path of what was written.

    Files: ``mask.png`` and ``stage1_mask.png`` (0/255, satellite size), ``overlay.png``
    (satellite with the final mask and the final stage's boxes and points),
    ``feedback_map.png`` / ``feedback_sat.png`` (two-stage only) and ``result.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final_stage = prediction.stage2 or prediction.stage1
    files = {
        "mask": (mask_image(prediction.mask), out / "mask.png"),
        "stage1_mask": (mask_image(prediction.stage1.mask), out / "stage1_mask.png"),
        "overlay": (
            render_overlay(sat, prediction.mask, final_stage.targets_image, legend=True),
            out / "overlay.png",
        ),
    }
    if prediction.feedback_map is not None:
        files["feedback_map"] = (prediction.feedback_map, out / "feedback_map.png")
        files["feedback_sat"] = (prediction.feedback_sat, out / "feedback_sat.png")
    written = {}
    for name, (image, path) in files.items():
        image.save(path)
        written[name] = path
    result = out / "result.json"
    result.write_text(json.dumps(prediction_to_json(prediction, **extra), indent=2) + "\n")
    written["result"] = result
    return written


def config_to_json(config) -> dict[str, Any]:
    """A dataclass config (nested dataclasses included) as plain JSON values."""
    return json.loads(json.dumps(asdict(config), default=str))
