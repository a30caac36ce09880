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
  alone (:mod:`socioseg.eval.report`), so resumed, merged and single runs report the same numbers.
- ``contact/``: contact-sheet tiles of a few evenly spaced samples; with ``save_masks``,
  ``masks/<id>.png`` (final) and ``masks-stage1/<id>.png``, 0/255 at the GT size, the layout
  :func:`score_predictions` reads.

Sharding: ``shard=(i, n)`` runs the selected samples with ``index % n == i`` and keeps its
run.json, predictions.jsonl and summary in ``out_dir/shard-<i>-of-<n>/``; :func:`merge` joins
the n shards into ``out_dir``. Under torchrun (``WORLD_SIZE`` > 1, ``RANK``) the shard is the
rank, and rank 0 merges once every rank has passed a barrier (gloo).

With mode ``sam3-concept`` (SAM 3's concept segmenter given the query alone,
:mod:`socioseg.models.concept`), a row holds one score, named ``sam3-concept``, which is the
report's one row; ``save_masks`` writes ``masks/`` only.

A row (:mod:`socioseg.eval.files`) holds the sample's id, level and class, its ``stage1`` and
``final`` scores at the GT resolution, and the prediction's JSON
(:func:`socioseg.outputs.prediction_to_json`: raw responses, answers, parse problems,
``final_source``, targets, timings). A sample the data or the pipeline cannot use gets
``status="skipped"`` and a ``reason`` when the dataset was opened with ``on_error="skip"``
(otherwise the error stops the run); it is listed in the report, never scored as zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from socioseg.data.dataset import DataError, Sample, SocioSegDataset
from socioseg.eval.files import (
    ROWS_FILE,
    RUN_FILE,
    SHARD_DIR,
    EvalError,
    RowWriter,
    claim_dir,
    id_file,
    n_selected,
    parse_shard,
    read_json,
    read_rows,
    result_dir,
    run_differences,
    run_info,
    scored_row,
    shard_dir,
    skipped_row,
    write_rows,
)
from socioseg.eval.report import (
    CONTACT_SAMPLES,
    TILES_DIR,
    at_gt,
    contact_indices,
    save_contact_tile,
    summarize,
    write_summary,
)
from socioseg.metrics import score_sample
from socioseg.outputs import config_to_json, prediction_to_json
from socioseg.publish import write_text_atomic
from socioseg.render import mask_image
from socioseg.torchrun import barrier, rank_and_world
from socioseg.types import CONCEPT_MODE, InputError, Prediction

__all__ = ["evaluate", "merge", "result_dir"]

MASKS_DIR = "masks"
STAGE1_MASKS_DIR = "masks-stage1"


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
        reasoner: a :class:`~socioseg.socioreasoner.SocioReasoner`, or SAM 3 alone
            (:class:`socioseg.models.concept.ConceptBaseline`); ``segment_batch`` and
            ``config`` are used.
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
        The summary written to ``metrics.json`` (see :func:`socioseg.eval.report.summarize`): of
        this shard, or of the merged run on torchrun's rank 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inference = replace(reasoner.config, mode=mode or reasoner.config.mode)
    selected = n_selected(dataset, limit)
    distributed = shard is None and rank_and_world() is not None
    shard = parse_shard(shard) if shard is not None else rank_and_world()
    if shard is not None and shard[1] == 1:  # one shard of one: a plain run
        shard = None
    out_dir = Path(out_dir)
    work_dir = shard_dir(out_dir, shard)
    contact = contact_indices(selected, contact_samples)
    info = _run_record(inference, batch_size, dataset, limit, config_json, model_ids, selected)
    info.update(shard=list(shard) if shard else None, contact=contact)
    claim_dir(work_dir, info)
    mine = range(shard[0], selected, shard[1]) if shard else range(selected)
    rows_path = work_dir / ROWS_FILE
    done = {row["index"] for row in _read_own_rows(rows_path, dataset.ids, set(mine))}
    pending = [index for index in mine if index not in done]
    job = _Job(reasoner, dataset, inference.mode, out_dir, set(contact), save_masks)
    label = "eval" if shard is None else f"eval {shard[0]}/{shard[1]}"
    initial = len(mine) - len(pending)
    bar = tqdm(total=len(mine), initial=initial, desc=label, unit="sample", disable=not progress)
    with bar:
        _append_rows(job, rows_path, pending, batch_size, bar)
    summary = write_summary(work_dir, read_rows(rows_path), info, out_dir / TILES_DIR)
    if distributed:
        barrier()
        if shard[0] == 0:
            return merge(out_dir)
    return summary


def _append_rows(job: _Job, rows_path: Path, pending: list[int], batch_size: int, bar) -> None:
    """Run ``pending`` in batches, appending each finished row and advancing ``bar``."""
    with RowWriter(rows_path) as writer:
        for start in range(0, len(pending), batch_size):
            for row in job.run(pending[start : start + batch_size]):
                writer.write(row)
                bar.update(1)


def _run_record(inference, batch_size, dataset, limit, config_json, model_ids, selected) -> dict:
    """What ``run.json`` records of an evaluation: the resolved settings, data and models."""
    config = {
        "inference": config_to_json(inference),
        "mode": inference.mode,
        "batch_size": batch_size,
        "split": dataset.split,
        "limit": limit,
        **(config_json or {}),
    }
    return run_info("evaluate", stages(inference.mode), config, model_ids, dataset, selected)


def stages(mode: str) -> list[str]:
    """The rows of a run's report: stage 1 and the final mask, or the one mask of a baseline
    (``sam3-concept``), named so."""
    return [CONCEPT_MODE] if mode == CONCEPT_MODE else ["stage1", "final"]


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
        final = at_gt(prediction.mask, sample.mask)
        if self.mode == CONCEPT_MODE:
            masks, folders = {CONCEPT_MODE: final}, {MASKS_DIR: final}
        else:
            stage1 = at_gt(prediction.stage1.mask, sample.mask)
            masks = {"stage1": stage1, "final": final}
            folders = {STAGE1_MASKS_DIR: stage1, MASKS_DIR: final}
        scores = {stage: score_sample(mask, sample.mask) for stage, mask in masks.items()}
        if index in self.contact:
            save_contact_tile(self.out_dir, index, sample, masks, scores)
        if self.save_masks:
            for folder, mask in folders.items():
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
        match = SHARD_DIR.fullmatch(path.name)
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
