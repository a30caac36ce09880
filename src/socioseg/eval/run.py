"""Evaluation over a SocioSeg split: resumable, shardable, and merged into exactly one result.

Files in ``out_dir``:

- ``run.json``: what runs there: the resolved config (``InferenceConfig``, mode, batch size,
  data, split, limit, plus the caller's ``config_json``), model ids, package versions, shard.
  A rerun into the same folder must match it (only the batch size may change) or
  :class:`EvalError` lists what differs.
- ``predictions.jsonl``: one JSON row per finished sample, each appended as one whole line
  with flush + fsync. A rerun skips the samples already there and cuts off a partial last
  line, so a killed run loses at most the batch in flight.
- ``metrics.json``, ``report.md``, ``contact_sheet.png``: computed from predictions.jsonl
  alone (:mod:`socioseg.report`), so resumed, merged and single runs report the same numbers.
- ``contact/``: contact-sheet tiles of a few evenly spaced samples; with ``save_masks``,
  ``masks/<id>.png`` (final) and ``masks-stage1/<id>.png``, 0/255 at the GT size, the layout
  :func:`score_predictions` reads.

Sharding: ``shard=(i, n)`` runs the selected samples with ``index % n == i`` and keeps its
run.json, predictions.jsonl and summary in ``out_dir/shard-<i>-of-<n>/``; :func:`merge` joins
the n shards into ``out_dir``. Under torchrun (``WORLD_SIZE`` > 1, ``RANK``) the shard is the
rank, and rank 0 merges once every rank has passed a barrier (gloo).

A row (:mod:`socioseg.evalfiles`) holds the sample's id, level and class, its ``stage1`` and
``final`` scores at the GT resolution, and the prediction's JSON
(:func:`socioseg.outputs.prediction_to_json`: raw responses, answers, parse problems,
``final_source``, targets, timings). A sample the data or the pipeline cannot use gets
``status="skipped"`` and a ``reason`` when the dataset was opened with ``on_error="skip"``
(otherwise the error stops the run); it is listed in the report, never scored as zero.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from socioseg.data import DataError, Sample, SocioSegDataset
from socioseg.data.dataset import mask_from_image
from socioseg.evalfiles import (
    ROWS_FILE,
    RUN_FILE,
    EvalError,
    RowWriter,
    claim_dir,
    id_file,
    read_json,
    read_rows,
    run_differences,
    run_info,
    scored_row,
    skipped_row,
    write_rows,
    write_text_atomic,
)
from socioseg.geometry import resize_mask_nearest
from socioseg.metrics import score_sample
from socioseg.outputs import config_to_json, prediction_to_json
from socioseg.pipeline import InputError
from socioseg.render import mask_image
from socioseg.report import STAGE_LABELS, contact_tile, summarize, tile_path, write_summary
from socioseg.types import Prediction

__all__ = [
    "EvalError",
    "evaluate",
    "merge",
    "parse_shard",
    "read_mask",
    "result_dir",
    "score_predictions",
]

TILES_DIR = "contact"
MASKS_DIR = "masks"
STAGE1_MASKS_DIR = "masks-stage1"
CONTACT_SAMPLES = 6
MISSING_POLICIES = ("error", "skip", "empty")
# Ranks wait at the barrier for the slowest shard; gloo's default 30 minutes is too short.
BARRIER_TIMEOUT = timedelta(hours=24)
_SHARD_DIR = re.compile(r"shard-(\d+)-of-(\d+)")


def parse_shard(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` -> ``(i, n)``, checking ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in (spec.split("/") if isinstance(spec, str) else spec))
    except (TypeError, ValueError) as error:
        raise EvalError(f"shard must look like 'i/n' (e.g. 0/4), got {spec!r}") from error
    if not 0 <= i < n:
        raise EvalError(f"shard {i}/{n}: need 0 <= i < n")
    return i, n


def result_dir(out_dir: str | Path, shard: str | Sequence[int] | None = None) -> Path:
    """The folder whose metrics.json ``evaluate(..., out_dir, shard=shard)`` writes last.

    ``out_dir/shard-<i>-of-<n>`` for a shard (given, or a torchrun rank other than 0, whose
    rank 0 merges into ``out_dir``), else ``out_dir``.
    """
    explicit = shard is not None
    shard = parse_shard(shard) if explicit else _torchrun_shard()
    if shard is None or shard[1] == 1 or (not explicit and shard[0] == 0):
        return Path(out_dir)
    return _shard_dir(Path(out_dir), shard)


def _shard_dir(out_dir: Path, shard: tuple[int, int] | None) -> Path:
    return out_dir if shard is None else out_dir / f"shard-{shard[0]}-of-{shard[1]}"


def evaluate(
    reasoner,
    dataset: SocioSegDataset,
    out_dir: str | Path,
    *,
    mode: str | None = None,
    batch_size: int = 1,
    limit: int | None = None,
    shard: str | Sequence[int] | None = None,
    config_json: Mapping[str, Any] | None = None,
    model_ids: Mapping[str, str] | None = None,
    save_masks: bool = False,
    contact_samples: int = CONTACT_SAMPLES,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``reasoner`` over the first ``limit`` samples of ``dataset``; resume if interrupted.

    Args:
        reasoner: a :class:`~socioseg.pipeline.SocioReasoner` (``segment_batch`` and
            ``config`` are used).
        dataset: from :func:`socioseg.data.load_socioseg`; its ``on_error`` decides whether
            a broken sample stops the run (``"raise"``) or is listed as skipped.
        out_dir: output folder (see the module docstring); rerun with it to resume.
        mode: overrides ``reasoner.config.mode``.
        batch_size: samples per ``segment_batch`` call.
        limit: evaluate only the first ``limit`` samples (dataset order).
        shard: ``(i, n)`` or ``"i/n"``; default: from torchrun's environment, else no sharding.
        config_json: extra JSON-safe settings saved with the run (e.g. data source, levels).
        model_ids: e.g. ``{"vlm": ..., "sam": ...}``, saved with the run.
        save_masks: also write the stage-1 and final masks as PNG.
        contact_samples: how many evenly spaced samples the contact sheet shows.
        progress: show a tqdm progress bar (with ETA) on stderr.

    Returns:
        The summary written to ``metrics.json`` (see :func:`socioseg.report.summarize`): of
        this shard, or of the merged run on torchrun's rank 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inference = replace(reasoner.config, mode=mode or reasoner.config.mode)
    n_selected = _n_selected(dataset, limit)
    distributed = shard is None and _torchrun_shard() is not None
    shard = parse_shard(shard) if shard is not None else _torchrun_shard()
    if shard is not None and shard[1] == 1:  # one shard of one: a plain run
        shard = None
    out_dir = Path(out_dir)
    work_dir = _shard_dir(out_dir, shard)
    config = {
        "inference": config_to_json(inference),
        "mode": inference.mode,
        "batch_size": batch_size,
        "split": dataset.split,
        "limit": limit,
        **(config_json or {}),
    }
    contact = _contact_indices(n_selected, contact_samples)
    info = run_info("evaluate", ["stage1", "final"], config, model_ids, dataset, n_selected)
    info.update(shard=list(shard) if shard else None, contact=contact)
    claim_dir(work_dir, info)
    mine = range(shard[0], n_selected, shard[1]) if shard else range(n_selected)
    rows_path = work_dir / ROWS_FILE
    done = {row["index"] for row in _read_own_rows(rows_path, dataset.ids, set(mine))}
    pending = [index for index in mine if index not in done]
    job = _Job(reasoner, dataset, inference.mode, out_dir, set(contact), save_masks)
    label = "eval" if shard is None else f"eval {shard[0]}/{shard[1]}"
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(pending),
        desc=label,
        unit="sample",
        disable=not progress,
        dynamic_ncols=True,
    )
    with RowWriter(rows_path) as writer, bar:
        for start in range(0, len(pending), batch_size):
            for row in job.run(pending[start : start + batch_size]):
                writer.write(row)
                bar.update(1)
    summary = write_summary(work_dir, read_rows(rows_path), info, out_dir / TILES_DIR)
    if distributed:
        _barrier()
        if shard[0] == 0:
            return merge(out_dir)
    return summary


@dataclass
class _Job:
    """Predicts, scores and records batches of samples (internal to :func:`evaluate`)."""

    reasoner: Any
    dataset: SocioSegDataset
    mode: str
    out_dir: Path
    contact: set[int]
    save_masks: bool

    def __post_init__(self) -> None:
        self.ids = self.dataset.ids
        self.skip = getattr(self.dataset, "on_error", "raise") == "skip"

    def run(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """One row per index, in index order."""
        rows, loaded = [], []
        for index in indices:
            try:
                loaded.append((index, self.dataset[index]))
            except DataError as error:
                if not self.skip:
                    raise
                rows.append(skipped_row(index, self.ids[index], str(error)))
        predictions = _predict(self.reasoner, [s for _, s in loaded], self.mode, self.skip)
        for (index, sample), prediction in zip(loaded, predictions, strict=True):
            if isinstance(prediction, str):
                rows.append(skipped_row(index, sample.id, prediction))
            else:
                rows.append(self._row(index, sample, prediction))
        return sorted(rows, key=lambda row: row["index"])

    def _row(self, index: int, sample: Sample, prediction: Prediction) -> dict[str, Any]:
        masks = {
            "stage1": _at_gt(prediction.stage1.mask, sample.mask),
            "final": _at_gt(prediction.mask, sample.mask),
        }
        scores = {stage: score_sample(mask, sample.mask) for stage, mask in masks.items()}
        if index in self.contact:
            _save_tile(self.out_dir, index, sample, masks, scores)
        if self.save_masks:
            for folder, mask in ((STAGE1_MASKS_DIR, masks["stage1"]), (MASKS_DIR, masks["final"])):
                path = id_file(self.out_dir / folder, sample.id)
                path.parent.mkdir(parents=True, exist_ok=True)
                mask_image(mask).save(path)
        return {**scored_row(index, sample, scores), **prediction_to_json(prediction)}


def _predict(reasoner, samples: Sequence[Sample], mode: str, skip: bool) -> list[Prediction | str]:
    """A prediction per sample, or (when skipping) the reason the pipeline refused it."""
    if not samples:
        return []
    try:
        return reasoner.segment_batch([(s.sat, s.map, s.query) for s in samples], mode=mode)
    except InputError as error:
        if not skip:
            raise
        if len(samples) == 1:
            return [f"pipeline input error: {error}"]
    # One bad input fails its whole batch; rerun one by one to keep the good ones.
    return [_predict(reasoner, [sample], mode, skip)[0] for sample in samples]


def _at_gt(mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``mask`` at the GT's resolution (OpenCV nearest), as the metrics compare them."""
    return resize_mask_nearest(mask, (gt.shape[1], gt.shape[0]))


def _save_tile(out_dir, index, sample, masks, scores) -> None:
    ious = ", ".join(f"{STAGE_LABELS.get(k, k)} = {s.iou:.2f}" for k, s in scores.items())
    label = f"#{index} {sample.id} [{sample.level}] {sample.query} | IoU: {ious}"
    tile = contact_tile(sample.sat, sample.map, {"ground truth": sample.mask, **masks}, label)
    path = tile_path(out_dir / TILES_DIR, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tile.save(path)


def _read_own_rows(path: Path, ids: Sequence[str], mine: set[int]) -> list[dict[str, Any]]:
    rows = read_rows(path, repair=True)
    for row in rows:
        index = row.get("index")
        if index not in mine or ids[index] != row.get("id"):
            raise EvalError(
                f"{path}: row for sample {row.get('id')!r} at index {index} does not match this "
                "dataset and shard (was the dataset changed?); choose another output folder"
            )
    return rows


def _n_selected(dataset: SocioSegDataset, limit: int | None) -> int:
    if limit is None:
        return len(dataset)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return min(limit, len(dataset))


def _contact_indices(n: int, count: int) -> list[int]:
    if n == 0 or count <= 0:
        return []
    return sorted({round(x) for x in np.linspace(0, n - 1, min(count, n))})


# --- shards ---------------------------------------------------------------------------------


def merge(out_dir: str | Path, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Join ``out_dir/shard-<i>-of-<n>/`` into ``out_dir``'s predictions.jsonl and summary.

    The merged metrics equal a single-process run's exactly. Raises :class:`EvalError` when a
    shard folder is missing, the shards ran different settings, or (unless
    ``allow_incomplete``) some selected sample has no row yet. Returns the merged summary.
    """
    out_dir = Path(out_dir)
    found: dict[int, dict[int, Path]] = {}
    for path in out_dir.iterdir() if out_dir.is_dir() else ():
        match = _SHARD_DIR.fullmatch(path.name)
        if match and (path / RUN_FILE).is_file():
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if len(found) != 1:
        what = "no shard folders (shard-<i>-of-<n>/)" if not found else f"shards of {sorted(found)}"
        raise EvalError(f"{out_dir}: {what}; merge needs the shards of one run")
    ((n, shards),) = found.items()
    shards = dict(sorted(shards.items()))
    absent = [i for i in range(n) if i not in shards]
    if absent and not allow_incomplete:
        raise EvalError(f"{out_dir}: shard(s) {absent} of {n} have not run; run them first")
    infos = [read_json(d / RUN_FILE) for d in shards.values()]
    first = {**infos[0], "shard": None}
    for d, other in zip(shards.values(), infos, strict=True):
        differences = run_differences(first, {**other, "shard": None})
        if differences:
            raise EvalError(f"{d} ran different settings: {'; '.join(differences)}")
    rows = sorted(
        (row for d in shards.values() for row in read_rows(d / ROWS_FILE)),
        key=lambda row: row["index"],
    )
    contact = sorted({i for info in infos for i in info.get("contact", [])})
    info = {**first, "contact": contact, "merged_from": n}
    pending = summarize(rows, info)["counts"]["pending"]
    if pending and not allow_incomplete:
        raise EvalError(
            f"{out_dir}: {pending} selected samples have no row yet; rerun the unfinished shards"
        )
    write_text_atomic(out_dir / RUN_FILE, json.dumps(info, indent=2) + "\n")
    write_rows(out_dir / ROWS_FILE, rows)
    return write_summary(out_dir, rows, info, out_dir / TILES_DIR)


def _torchrun_shard() -> tuple[int, int] | None:
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
    if world is None or rank is None or int(world) <= 1:
        return None
    return parse_shard((int(rank), int(world)))


def _barrier() -> None:
    """Wait for every rank, on gloo (initialising torch.distributed from the env if needed)."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        group = None if created else dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
        dist.barrier(group=group)
    finally:
        if created:
            dist.destroy_process_group()


# --- scoring masks made elsewhere -----------------------------------------------------------


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
    n = _n_selected(dataset, limit)
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
    info["contact"] = _contact_indices(n, contact_samples)
    run_path = out_dir / RUN_FILE
    if run_path.is_file() and read_json(run_path)["kind"] != "score":
        raise EvalError(f"{out_dir} holds an evaluation run; write scores to another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
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
    write_text_atomic(run_path, json.dumps(info, indent=2) + "\n")
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
    mask = np.zeros_like(sample.mask) if absent else _at_gt(read_mask(path), sample.mask)
    scores = {"final": score_sample(mask, sample.mask)}
    if index in info["contact"]:
        _save_tile(out_dir, index, sample, {"final": mask}, scores)
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
