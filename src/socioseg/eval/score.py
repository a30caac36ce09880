"""Scoring masks made by any method (``socioseg score``): ``<pred_dir>/<sample id>.png`` against
a SocioSeg split, with the metrics, rows and report of :func:`socioseg.eval.run.evaluate`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from socioseg.data.dataset import DataError, SocioSegDataset, mask_from_image
from socioseg.eval.files import (
    ROWS_FILE,
    RUN_FILE,
    EvalError,
    id_file,
    n_selected,
    read_json,
    refuse_foreign_files,
    run_info,
    scored_row,
    skipped_row,
    write_rows,
)
from socioseg.eval.report import (
    CONTACT_SAMPLES,
    TILES_DIR,
    at_gt,
    contact_indices,
    save_contact_tile,
    write_summary,
)
from socioseg.metrics import score_sample
from socioseg.publish import write_text_atomic

MISSING_POLICIES = ("error", "skip", "empty")


def score_predictions(
    pred_dir: str | Path,
    dataset: SocioSegDataset,
    out_dir: str | Path,
    *,
    missing: str = "error",
    limit: int | None = None,
    config_json: Mapping[str, Any] | None = None,
    model_ids: Mapping[str, str] | None = None,
    contact_samples: int = CONTACT_SAMPLES,
    progress: bool = True,
) -> dict[str, Any]:
    """Score masks from any method, ``<pred_dir>/<sample id>.png``, with the same metrics.

    A prediction PNG is read like the ground truth (grayscale value > 0 is foreground) and
    resized nearest-neighbour to the GT size when it differs. Writes predictions.jsonl (one
    ``final`` score per sample), metrics.json, report.md and contact_sheet.png to ``out_dir``.

    Args:
        missing: a sample without a prediction file is an :class:`EvalError` naming the ids
            (``"error"``, default), listed and not scored (``"skip"``), or listed and scored
            as an empty mask (``"empty"``).
        limit, config_json, model_ids, contact_samples, progress: as in :func:`evaluate`.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    if not pred_dir.is_dir():
        raise EvalError(f"prediction folder not found: {pred_dir}")
    n = n_selected(dataset, limit)
    ids = dataset.ids[:n]
    absent = {i for i in range(n) if not id_file(pred_dir, ids[i]).is_file()}
    if absent and missing == "error":
        names = ", ".join(repr(ids[i]) for i in sorted(absent)[:10])
        raise EvalError(
            f"{len(absent)} of {n} samples have no prediction in {pred_dir} (expected "
            f"<id>.png): {names}{' ...' if len(absent) > 10 else ''}; rerun with --missing skip "
            "to list them unscored, or --missing empty to score them as empty masks"
        )
    config = {
        "pred_dir": str(pred_dir),
        "missing": missing,
        "split": dataset.split,
        "limit": limit,
        **(config_json or {}),
    }
    info = run_info("score", ["final"], config, model_ids, dataset, n)
    info["contact"] = contact_indices(n, contact_samples)
    run_path = out_dir / RUN_FILE
    if run_path.is_file() and read_json(run_path)["kind"] != "score":
        raise EvalError(f"{out_dir} holds an evaluation run; write scores to another folder")
    if not run_path.is_file():
        refuse_foreign_files(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Claimed first: a run that fails half-way leaves a folder its rerun recognises as its own.
    write_text_atomic(run_path, json.dumps(info, indent=2) + "\n")
    skip_data_errors = getattr(dataset, "on_error", "raise") == "skip"
    rows = []
    for index in tqdm(range(n), desc="score", unit="sample", disable=not progress):
        try:
            sample = dataset[index]
        except DataError as error:
            if not skip_data_errors:
                raise
            rows.append(skipped_row(index, ids[index], str(error)))
            continue
        rows.append(_score_file(pred_dir, index, sample, index in absent, info, out_dir))
    write_rows(out_dir / ROWS_FILE, rows)
    return write_summary(out_dir, rows, info, out_dir / TILES_DIR)


def _score_file(pred_dir, index, sample, absent, info, out_dir) -> dict[str, Any]:
    path = id_file(pred_dir, sample.id)
    if absent and info["config"]["missing"] == "skip":
        return {
            "index": index,
            "id": sample.id,
            "status": "missing",
            "missing_prediction": True,
            "scored_as": "not scored",
        }
    mask = np.zeros_like(sample.mask) if absent else at_gt(read_mask(path), sample.mask)
    scores = {"final": score_sample(mask, sample.mask)}
    if index in info["contact"]:
        save_contact_tile(out_dir, index, sample, {"final": mask}, scores)
    row = {**scored_row(index, sample, scores), "prediction_file": str(path)}
    if absent:
        row.update(missing_prediction=True, scored_as="empty mask", prediction_file=None)
    return row


def read_mask(path: str | Path) -> np.ndarray:
    """H x W bool mask from an image file: grayscale value > 0 is foreground."""
    from socioseg.images import ImageError, read_image

    try:
        return mask_from_image(read_image(path, str(path), mode=None))
    except ImageError as error:
        raise EvalError(f"{error} (a prediction mask)") from error
