"""Evaluation summaries: metrics recomputed from per-sample rows, ``report.md`` and a contact sheet.

Everything here reads the rows of a ``predictions.jsonl`` (see :mod:`socioseg.eval.run`) and
never a model or a mask, so a resumed run, a merged set of shards and a single pass give the
same numbers. A row's ``score`` holds one :class:`~socioseg.metrics.SampleScore` dict per stage
(``"stage1"``, ``"final"``); rows with ``status`` other than ``"ok"`` are listed, never scored.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from socioseg.geometry import resize_mask_nearest
from socioseg.metrics import SampleScore, SegmentationScores
from socioseg.publish import write_text_atomic
from socioseg.render import render_overlay

# Columns of the results table, in the paper's order; "unknown" shows only when present.
LEVEL_COLUMNS = ("socio-name", "socio-class", "socio-function", "unknown")
STAGE_LABELS = {"stage1": "stage 1", "final": "final"}
METRIC_NAMES = ("cIoU", "gIoU", "F1")
CONTACT_SHEET = "contact_sheet.png"
TILES_DIR = "contact"
CONTACT_SAMPLES = 6
TILE_WIDTH = 160  # pixels per panel of a contact-sheet row
_LABEL_HEIGHT = 16
_GAP = 4


def summarize(rows: Iterable[Mapping[str, Any]], run_info: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``metrics.json``: scores per stage, level and socio-class, plus the run.

    Args:
        rows: predictions.jsonl rows (any order; indices must be unique).
        run_info: the run's ``run.json`` (``stages``, ``config``, ``models``, ``versions``,
            ``dataset`` with ``n_selected``, ``shard``); copied into the result.

    Returns:
        ``{"complete", "counts", "metrics": {stage: {"all" | level: {"cIoU", "gIoU", "F1",
        "n"}}}, "per_class": {stage: {class: {...}}}, "final_source", "parse_problems",
        "seconds_per_sample", "skipped", "missing", **run_info}``. Scores are fractions in
        [0, 1]; ``None`` where no sample was scored.
    """
    rows = _sorted_unique(rows)
    stages = list(run_info["stages"])
    ok = [row for row in rows if row["status"] == "ok"]
    overall = {stage: SegmentationScores() for stage in stages}
    per_class: dict[str, dict[str, SegmentationScores]] = {stage: {} for stage in stages}
    for row in ok:
        for stage in stages:
            score = SampleScore.from_dict(row["score"][stage])
            overall[stage].add(score, row["level"])
            if row["level"] == "socio-class":
                name = row.get("socio_class") or row["query"]
                per_class[stage].setdefault(name, SegmentationScores()).add(score)
    expected = _expected_indices(run_info)
    done = {row["index"] for row in rows}
    skipped = [_listing(row, "reason") for row in rows if row["status"] == "skipped"]
    missing = [_listing(row, "scored_as") for row in rows if row.get("missing_prediction")]
    return {
        "complete": done >= expected,
        "counts": {
            "selected": len(expected),
            "scored": len(ok),
            "skipped": len(skipped),
            "missing": len(missing),
            "pending": len(expected - done),
        },
        "metrics": {stage: _finite(overall[stage].compute()) for stage in stages},
        "per_class": {
            stage: {name: _finite(s.compute()["all"]) for name, s in sorted(classes.items())}
            for stage, classes in per_class.items()
        },
        "final_source": dict(Counter(r["final_source"] for r in ok if "final_source" in r)),
        "parse_problems": _problem_counts(ok),
        "seconds_per_sample": _mean_seconds(ok),
        "skipped": skipped,
        "missing": missing,
        **run_info,
    }


def _sorted_unique(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rows = sorted(rows, key=lambda row: row["index"])
    for before, after in itertools.pairwise(rows):
        if before["index"] == after["index"]:
            raise ValueError(
                f"two rows for sample index {after['index']} (ids {before['id']!r}, "
                f"{after['id']!r}); were shards of different runs mixed?"
            )
    return rows


def _expected_indices(run_info: Mapping[str, Any]) -> set[int]:
    n = run_info["dataset"]["n_selected"]
    shard = run_info.get("shard")
    if shard is None:
        return set(range(n))
    i, count = shard
    return set(range(i, n, count))


def _listing(row: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {"index": row["index"], "id": row["id"], key: row.get(key)}


def _problem_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Samples whose stage answer had at least one parse problem, per stage."""
    counts = {}
    for stage in ("stage1", "stage2"):
        with_stage = [row[stage] for row in rows if row.get(stage)]
        if with_stage:
            counts[stage] = sum(bool(stage_json["problems"]) for stage_json in with_stage)
    return counts


def _mean_seconds(rows: Sequence[Mapping[str, Any]]) -> float | None:
    times = [math.fsum(row["timings_s"].values()) for row in rows if row.get("timings_s")]
    return round(math.fsum(times) / len(times), 4) if times else None


def _finite(value: Any) -> Any:
    """NaN -> None, recursively (``metrics.json`` stays strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- report.md ------------------------------------------------------------------------------


def _cell(scores: Mapping[str, Any] | None) -> str:
    if not scores or scores.get("n", 0) == 0:
        return "–"
    return " / ".join(
        "–" if scores[name] is None else f"{100 * scores[name]:.1f}" for name in METRIC_NAMES
    )


def results_table(summary: Mapping[str, Any]) -> str:
    """The paper's table as Markdown: one row per stage, columns per level then ``all``.

    Cells are cIoU / gIoU / F1 in percent with one decimal; a last row gives the sample counts.
    """
    metrics = summary["metrics"]
    present = {level for stage in metrics.values() for level in stage}
    columns = [c for c in LEVEL_COLUMNS if c != "unknown" or c in present]
    columns.append("all")
    lines = [
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for stage, scores in metrics.items():
        cells = [_cell(scores.get(column)) for column in columns]
        lines.append(f"| {STAGE_LABELS.get(stage, stage)} | " + " | ".join(cells) + " |")
    first = next(iter(metrics.values()), {})
    counts = [str(first.get(column, {}).get("n", 0)) for column in columns]
    lines.append("| n | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def _class_table(summary: Mapping[str, Any]) -> str:
    per_class = summary["per_class"]
    stages = list(per_class)
    names = sorted({name for classes in per_class.values() for name in classes})
    lines = [
        "| class | n | " + " | ".join(STAGE_LABELS.get(s, s) for s in stages) + " |",
        "|---" * (len(stages) + 2) + "|",
    ]
    for name in names:
        n = per_class[stages[0]][name]["n"]
        cells = [_cell(per_class[stage].get(name)) for stage in stages]
        lines.append(f"| {_md(name)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(summary: Mapping[str, Any], sheet_file: str | None = None) -> str:
    """``report.md``: the results table, per-class rows, skipped/missing samples, the run."""
    counts, data = summary["counts"], summary["dataset"]
    shard = summary.get("shard")
    where = f", shard {shard[0]} of {shard[1]} (index % {shard[1]} == {shard[0]})" if shard else ""
    missing = f", {counts['missing']} without a prediction" if counts["missing"] else ""
    pending = f", {counts['pending']} NOT YET RUN" if counts["pending"] else ""
    lines = [
        f"# SocioSeg evaluation: {data['split']} split",
        "",
        f"- data: {data['description']}",
        f"- samples: {counts['selected']} selected{where}, {counts['scored']} scored, "
        f"{counts['skipped']} skipped{missing}{pending}",
    ]
    if summary["models"]:
        lines.append("- models: " + ", ".join(f"{k} `{v}`" for k, v in summary["models"].items()))
    if "pred_dir" in summary["config"]:
        lines.append(f"- predictions: `{summary['config']['pred_dir']}`")
    if "mode" in summary["config"]:
        lines.append(f"- mode: {summary['config']['mode']}")
    if summary["final_source"]:
        sources = ", ".join(f"{k} {v}" for k, v in sorted(summary["final_source"].items()))
        lines.append(f"- final mask from: {sources}")
    if summary["parse_problems"]:
        problems = ", ".join(f"{k} {v}" for k, v in summary["parse_problems"].items())
        lines.append(f"- samples with answer parse problems: {problems}")
    if summary["seconds_per_sample"] is not None:
        lines.append(f"- inference time: {summary['seconds_per_sample']:.2f} s per sample")
    lines += ["", "## Results (cIoU / gIoU / F1, %)", "", results_table(summary), ""]
    if any(summary["per_class"].values()):
        lines += ["## Socio-class queries by class (cIoU / gIoU / F1, %)", ""]
        lines += [_class_table(summary), ""]
    lines += _listing_section("Skipped samples", summary["skipped"], "reason")
    lines += _listing_section("Missing predictions", summary["missing"], "scored_as")
    if sheet_file:
        lines += ["## Examples", "", f"![contact sheet]({sheet_file})", ""]
    config = {key: summary[key] for key in ("config", "models", "versions")}
    lines += ["## Run", "", "```json", json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)


def _listing_section(title: str, entries: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    if not entries:
        return []
    lines = [f"## {title} ({len(entries)})", "", f"| index | id | {key} |", "|---|---|---|"]
    lines += [f"| {e['index']} | {_md(e['id'])} | {_md(e[key])} |" for e in entries]
    return [*lines, ""]


# --- contact sheet --------------------------------------------------------------------------


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ascii(text: str) -> str:
    # The fallback bitmap font cannot draw every character; keep labels drawable everywhere.
    return text.encode("ascii", "replace").decode("ascii")


def contact_tile(
    sat: Image.Image, map_image: Image.Image, masks: Mapping[str, np.ndarray], label: str
) -> Image.Image:
    """One labelled contact-sheet row: map | satellite | one overlay per mask.

    ``masks``: name -> H x W bool in the satellite frame (ground truth first, then stages);
    each is drawn over the satellite image. Panels are :data:`TILE_WIDTH` pixels wide.
    """
    height = max(1, round(TILE_WIDTH * sat.height / sat.width))
    sat_small = sat.resize((TILE_WIDTH, height), Image.Resampling.BILINEAR)
    panels = [map_image.resize((TILE_WIDTH, height), Image.Resampling.BILINEAR), sat_small]
    panels += [render_overlay(sat_small, mask) for mask in masks.values()]
    tile = Image.new("RGB", (len(panels) * (TILE_WIDTH + _GAP), _LABEL_HEIGHT + height), "white")
    ImageDraw.Draw(tile).text((2, 2), _ascii(label), fill="black", font=_font())
    for k, panel in enumerate(panels):
        tile.paste(panel, (k * (TILE_WIDTH + _GAP), _LABEL_HEIGHT))
    return tile


def contact_sheet(tiles: Sequence[Image.Image], columns: Sequence[str]) -> Image.Image:
    """Stack :func:`contact_tile` rows under a header naming the ``columns``."""
    width = max(tile.width for tile in tiles)
    sheet = Image.new("RGB", (width, _LABEL_HEIGHT + sum(t.height + _GAP for t in tiles)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(columns):
        draw.text((k * (TILE_WIDTH + _GAP) + 2, 2), name, fill="black", font=_font())
    y = _LABEL_HEIGHT
    for tile in tiles:
        sheet.paste(tile, (0, y))
        y += tile.height + _GAP
    return sheet


def write_summary(
    directory: str | Path,
    rows: Iterable[Mapping[str, Any]],
    run_info: Mapping[str, Any],
    tiles_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``report.md`` and (when tiles exist) ``contact_sheet.png``.

    The sheet shows the tiles ``tiles_dir/<index:07d>.png`` of the scored rows whose index is
    in ``run_info["contact"]``. Returns the summary.
    """
    directory = Path(directory)
    rows = list(rows)
    summary = summarize(rows, run_info)
    contact = set(run_info.get("contact", ()))
    tiles = []
    if tiles_dir is not None:
        for row in sorted(rows, key=lambda r: r["index"]):
            path = tile_path(tiles_dir, row["index"])
            if row["status"] == "ok" and row["index"] in contact and path.is_file():
                with Image.open(path) as tile:
                    tiles.append(tile.convert("RGB"))
    sheet_name = None
    if tiles:
        stages = [STAGE_LABELS.get(s, s) for s in summary["stages"]]
        sheet = contact_sheet(tiles, ["map", "satellite", "ground truth", *stages])
        sheet.save(directory / CONTACT_SHEET)
        sheet_name = CONTACT_SHEET
    write_text_atomic(directory / "metrics.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(directory / "report.md", render_report(summary, sheet_name))
    return summary


def tile_path(tiles_dir: str | Path, index: int) -> Path:
    """Where the contact-sheet tile of dataset sample ``index`` lives."""
    return Path(tiles_dir) / f"{index:07d}.png"


def save_contact_tile(out_dir, index, sample, masks, scores) -> None:
    """The contact-sheet tile of sample ``index`` (its GT and ``masks``) under ``out_dir``."""
    ious = ", ".join(f"{STAGE_LABELS.get(k, k)} = {s.iou:.2f}" for k, s in scores.items())
    label = f"#{index} {sample.id} [{sample.level}] {sample.query} | IoU: {ious}"
    tile = contact_tile(sample.sat, sample.map, {"ground truth": sample.mask, **masks}, label)
    path = tile_path(out_dir / TILES_DIR, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tile.save(path)


def contact_indices(n: int, count: int) -> list[int]:
    """``count`` evenly spaced indices of ``n`` samples: the rows of the contact sheet."""
    if n == 0 or count <= 0:
        return []
    return sorted({round(x) for x in np.linspace(0, n - 1, min(count, n))})


def at_gt(mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``mask`` at the GT's resolution (OpenCV nearest), as the metrics compare them."""
    return resize_mask_nearest(mask, (gt.shape[1], gt.shape[0]))
