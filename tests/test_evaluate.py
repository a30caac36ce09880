"""Evaluation runs: files, resuming, shards and merging, torchrun, scoring other masks."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socioseg.data import DataError, load_socioseg
from socioseg.data.synth import write_dataset
from socioseg.eval.files import EvalError, parse_shard, read_rows
from socioseg.eval.report import TILE_WIDTH, results_table, summarize
from socioseg.eval.run import evaluate, merge
from socioseg.eval.score import score_predictions
from socioseg.models.vlm import Generation, VisionLanguageModel
from socioseg.socioreasoner import InferenceConfig, InputError, SocioReasoner
from socioseg.types import ParsedAnswer, Prediction, StageResult

REPO = Path(__file__).resolve().parents[1]
N_SAMPLES = 6
SIZE = 256
TINY_LIMIT = 3  # samples through the tiny models: SAM2 embeds a 1024 x 1024 input on CPU


class Killed(Exception):
    """Stands in for a run that dies mid-way."""


def _key(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def _stage(name: str, mask: np.ndarray, problems: tuple[str, ...] = ()) -> StageResult:
    return StageResult(
        name, "prompt", f"<answer>{name}</answer>", ParsedAnswer(name, (), problems), (), mask
    )


class FakeReasoner:
    """A deterministic stand-in for SocioReasoner that knows the ground truth.

    Stage 1 is the GT shifted right by 8 pixels; the final mask is the GT's left three
    quarters, or empty (``final_source="empty"``) for a third of the queries. It counts its
    calls and items, can die after ``fail_after`` calls, and refuses the images in ``refuse``.
    """

    def __init__(self, dataset, fail_after: int | None = None, refuse: tuple[str, ...] = ()):
        self.config = InferenceConfig()
        self.truth = {_key(sample.sat): sample.mask for sample in dataset}
        self.ids = {_key(sample.sat): sample.id for sample in dataset}
        self.fail_after, self.refuse = fail_after, refuse
        self.calls = 0
        self.seen: list[str] = []

    def segment_batch(self, items, mode=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Killed
        self.calls += 1
        for sat, _, _ in items:
            if self.ids[_key(sat)] in self.refuse:
                raise InputError(f"{self.ids[_key(sat)]}: refused")
        self.seen += [self.ids[_key(sat)] for sat, _, _ in items]
        return [self._predict(sat, query, mode or self.config.mode) for sat, _, query in items]

    def _predict(self, sat, query, mode):
        gt = self.truth[_key(sat)]
        stage1 = np.roll(gt, 8, axis=1)
        final = gt & (np.arange(gt.shape[1]) < gt.shape[1] * 3 // 4)[None, :]
        source = "stage2"
        if zlib.crc32(query.encode()) % 3 == 0:
            final, source = np.zeros_like(gt), "empty"
        problems = ("no <answer>",) if source == "empty" else ()
        return Prediction(
            query=query,
            mode=mode,
            mask=final,
            stage1=_stage("stage1", stage1),
            stage2=_stage("stage2", final, problems),
            image_size=sat.size,
            vlm_size=sat.size,
            final_source=source,
            timings={"stage1_generate": 0.25, "stage2_generate": 0.5},
        )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, N_SAMPLES, seed=0, size=SIZE, split_ratios=(0, 0, 1))
    return root


def _dataset(root: Path, on_error: str = "raise"):
    return load_socioseg(root, "test", levels=root / "levels.json", on_error=on_error)


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """One uninterrupted single-process run with the fake reasoner."""
    dataset = _dataset(data_root)
    out = tmp_path_factory.mktemp("reference")
    summary = evaluate(FakeReasoner(dataset), dataset, out, batch_size=2, progress=False)
    return out, summary


def _scores(summary: dict) -> dict:
    return {key: summary[key] for key in ("metrics", "per_class", "counts", "final_source")}


def _rows_without_timings(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "timings_s"} for row in read_rows(path)]


# --- the real pipeline (tiny random-weight models, rule-based answers) ----------------------


class RuleVLM(VisionLanguageModel):
    """The tiny VLM with fixed answers per prompt kind (its processor still runs)."""

    STAGE1 = '<think>t</think><answer>[{"bbox_2d": [20, 30, 140, 150]}]</answer>'
    STAGE2 = (
        '<think>t</think><answer>[{"bbox_2d": [20, 30, 140, 150], "points": [[60, 80], '
        "[100, 120]]}]</answer>"
    )

    def __init__(self, base: VisionLanguageModel):
        super().__init__(base.model, base.processor, name="rules")
        self.texts: list[str] = []

    def encode_prompts(self, user_texts, images):
        self.texts = list(user_texts)
        return super().encode_prompts(user_texts, images)

    def generate(self, inputs, sampling, group_size=1):
        answers = []
        for text in self.texts:
            if "add some points" not in text:
                answers.append(self.STAGE1)
            elif zlib.crc32(text.encode()) % 3 == 0:
                answers.append("<think>lost</think>")
            else:
                answers.append(self.STAGE2)
        return [Generation(answer, ()) for answer in answers]


@pytest.mark.slow
def test_tiny_pipeline_files_and_shards_match_a_single_run(
    tiny_vlm, tiny_segmenter, data_root, tmp_path
):
    dataset = _dataset(data_root)
    model = SocioReasoner(RuleVLM(tiny_vlm), tiny_segmenter, InferenceConfig(min_pixels=56 * 56))
    ids = {"vlm": "tiny/vlm", "sam": "tiny/sam"}
    extra = {"data": str(data_root), "levels": str(data_root / "levels.json")}
    single = tmp_path / "single"
    run = {"limit": TINY_LIMIT, "config_json": extra, "model_ids": ids, "progress": False}
    summary = evaluate(model, dataset, single, batch_size=2, save_masks=True, **run)

    for name in ("run.json", "predictions.jsonl", "metrics.json", "report.md", "contact_sheet.png"):
        assert (single / name).is_file(), name
    rows = read_rows(single / "predictions.jsonl")
    assert [row["index"] for row in rows] == list(range(TINY_LIMIT))
    row = rows[0]
    assert {"id", "query", "level", "socio_class", "final_source", "stage1", "stage2"} <= set(row)
    assert set(row["score"]) == {"stage1", "final"}
    assert {"iou", "intersection", "union", "tp", "fp", "fn"} <= set(row["score"]["final"])
    assert row["stage1"]["response"] == RuleVLM.STAGE1 and "problems" in row["stage2"]
    assert {r["final_source"] for r in rows} <= {"stage2", "empty"}

    metrics = json.loads((single / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    assert metrics["complete"] and metrics["counts"]["scored"] == TINY_LIMIT
    assert set(metrics["metrics"]) == {"stage1", "final"}
    assert set(metrics["metrics"]["final"]["all"]) == {"cIoU", "gIoU", "F1", "n"}
    assert metrics["config"]["inference"]["min_pixels"] == 56 * 56
    assert metrics["config"]["mode"] == "two-stage" and metrics["config"]["batch_size"] == 2
    assert metrics["config"]["data"] == str(data_root) and metrics["config"]["split"] == "test"
    assert metrics["models"] == ids
    assert {"torch", "transformers", "socioseg"} <= set(metrics["versions"])
    assert {r["level"] for r in rows} == {"socio-name", "socio-class", "socio-function"}
    class_rows = [r for r in rows if r["level"] == "socio-class"]
    assert set(metrics["per_class"]["final"]) == {r["socio_class"] for r in class_rows}
    assert len(list((single / "masks").glob("*.png"))) == TINY_LIMIT
    report = (single / "report.md").read_text()
    assert "| stage 1 |" in report and "| final |" in report and "contact_sheet.png" in report

    # The saved final masks scored by `score_predictions` give the final metrics again.
    rescored = score_predictions(
        single / "masks", dataset, tmp_path / "rescored", limit=TINY_LIMIT, progress=False
    )
    assert rescored["metrics"]["final"] == metrics["metrics"]["final"]

    sharded = tmp_path / "sharded"
    for i, batch in ((0, 1), (1, 3)):
        evaluate(model, dataset, sharded, batch_size=batch, shard=(i, 2), **run)
    merged = merge(sharded)
    assert _scores(merged) == _scores(summary)
    assert _rows_without_timings(sharded / "predictions.jsonl") == _rows_without_timings(
        single / "predictions.jsonl"
    )
    assert (sharded / "contact_sheet.png").is_file()


# --- resuming -------------------------------------------------------------------------------


def test_killed_run_resumes_without_redoing_finished_samples(data_root, reference, tmp_path):
    dataset = _dataset(data_root)
    dying = FakeReasoner(dataset, fail_after=2)
    with pytest.raises(Killed):
        evaluate(dying, dataset, tmp_path, batch_size=2, progress=False)
    finished = [row["id"] for row in read_rows(tmp_path / "predictions.jsonl")]
    assert finished == dying.seen and len(finished) == 4
    assert not (tmp_path / "metrics.json").exists()

    again = FakeReasoner(dataset)
    summary = evaluate(again, dataset, tmp_path, batch_size=2, progress=False)
    assert again.seen == dataset.ids[4:]
    assert _scores(summary) == _scores(reference[1])


def test_partial_last_line_is_cut_and_its_sample_redone(data_root, reference, tmp_path):
    dataset = _dataset(data_root)
    ref_dir = reference[0]
    for name in ("run.json", "predictions.jsonl"):
        (tmp_path / name).write_bytes((ref_dir / name).read_bytes())
    lines = (tmp_path / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    (tmp_path / "predictions.jsonl").write_bytes(b"".join(lines[:-1]) + torn)
    assert len(read_rows(tmp_path / "predictions.jsonl")) == N_SAMPLES - 1

    again = FakeReasoner(dataset)
    summary = evaluate(again, dataset, tmp_path, batch_size=2, progress=False)
    assert again.seen == [dataset.ids[-1]]
    assert (tmp_path / "predictions.jsonl").read_bytes().endswith(b"\n")
    assert _scores(summary) == _scores(reference[1])


def test_a_broken_middle_line_is_an_error_naming_it(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"index": 0}\n{"index": \n{"index": 2}\n')
    with pytest.raises(EvalError, match="line 2"):
        read_rows(path)


def test_rerun_with_other_settings_is_refused(data_root, reference, tmp_path):
    dataset = _dataset(data_root)
    for name in ("run.json", "predictions.jsonl"):
        (tmp_path / name).write_bytes((reference[0] / name).read_bytes())
    with pytest.raises(EvalError, match=r"config\.mode"):
        evaluate(FakeReasoner(dataset), dataset, tmp_path, mode="stage1", progress=False)
    with pytest.raises(EvalError, match=r"config\.limit"):
        evaluate(FakeReasoner(dataset), dataset, tmp_path, limit=3, progress=False)
    # the batch size may change: nothing is left to do
    summary = evaluate(FakeReasoner(dataset), dataset, tmp_path, batch_size=5, progress=False)
    assert _scores(summary) == _scores(reference[1])


def test_a_folder_of_the_users_files_is_never_written_into(data_root, hand_made, tmp_path):
    dataset = _dataset(data_root)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")  # a name evaluate writes
    with pytest.raises(EvalError, match=r"holds files but no run\.json \(report\.md\)"):
        evaluate(FakeReasoner(dataset), dataset, mine, progress=False)
    scored, preds = hand_made
    with pytest.raises(EvalError, match=r"holds files but no run\.json \(report\.md\)"):
        score_predictions(preds, scored, mine, missing="skip", progress=False)
    with pytest.raises(EvalError, match=r"no run\.json"):  # nor into the predictions themselves
        score_predictions(preds, scored, preds, missing="skip", progress=False)
    assert [p.name for p in mine.iterdir()] == ["report.md"]
    assert (mine / "report.md").read_text() == "my notes"


# --- shards ---------------------------------------------------------------------------------


def test_merge_needs_every_shard_and_row(data_root, tmp_path):
    dataset = _dataset(data_root)
    with pytest.raises(EvalError, match="no shard folders"):
        merge(tmp_path)
    evaluate(FakeReasoner(dataset), dataset, tmp_path, shard="0/3", progress=False)
    with pytest.raises(EvalError, match=r"shard\(s\) \[1, 2\]"):
        merge(tmp_path)
    partial = merge(tmp_path, allow_incomplete=True)
    assert partial["counts"]["pending"] == 4 and not partial["complete"]
    assert "NOT YET RUN" in (tmp_path / "report.md").read_text()


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4) and parse_shard((0, 1)) == (0, 1)
    for bad in ("4/4", "-1/2", "x", "1/2/3"):
        with pytest.raises(EvalError):
            parse_shard(bad)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TORCHRUN_WORKER = """
import sys
from socioseg.data import load_socioseg
from socioseg.eval.run import evaluate
from tests.test_evaluate import FakeReasoner

root, out = sys.argv[1], sys.argv[2]
dataset = load_socioseg(root, "test", levels=root + "/levels.json")
evaluate(FakeReasoner(dataset), dataset, out, batch_size=2, progress=False)
"""


@pytest.mark.slow
def test_torchrun_ranks_shard_and_rank0_merges(data_root, reference, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", TORCHRUN_WORKER, str(data_root), str(out)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()[-2000:]
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-0-of-2", "shard-1-of-2"]
    merged = json.loads((out / "metrics.json").read_text())
    assert _scores(merged) == json.loads(json.dumps(_scores(reference[1])))


# --- skipped samples ------------------------------------------------------------------------


def test_broken_and_refused_samples_are_listed_not_scored(data_root, tmp_path):
    root = tmp_path / "data"
    write_dataset(root, 4, seed=0, size=SIZE, split_ratios=(0, 0, 1))
    broken = sorted((root / "test").iterdir())[1]
    (broken / "mask.png").unlink()
    with pytest.raises(DataError, match=r"mask\.png"):
        evaluate(FakeReasoner(_dataset(root, "skip")), _dataset(root), tmp_path / "a")

    dataset = _dataset(root, "skip")
    refused = dataset.ids[2]
    model = FakeReasoner(dataset, refuse=(refused,))
    summary = evaluate(model, dataset, tmp_path / "b", batch_size=4, progress=False)
    assert model.seen == [dataset.ids[0], dataset.ids[3]]  # the good ones of the failed batch
    counts = {"selected": 4, "scored": 2, "skipped": 2, "missing": 0, "pending": 0}
    assert summary["counts"] == counts
    assert summary["metrics"]["final"]["all"]["n"] == 2
    reasons = {entry["id"]: entry["reason"] for entry in summary["skipped"]}
    assert "mask.png" in reasons[broken.name] and "refused" in reasons[refused]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Skipped samples (2)" in report and broken.name in report


# --- scoring masks made elsewhere -----------------------------------------------------------


def _rect(mask: np.ndarray, y0: int, x0: int, h: int, w: int) -> None:
    mask[y0 : y0 + h, x0 : x0 + w] = True


def _write_sample(root: Path, sample_id: str, query: str, gt: np.ndarray) -> None:
    folder = root / "test" / sample_id
    folder.mkdir(parents=True)
    image = Image.new("RGB", (gt.shape[1], gt.shape[0]), (90, 90, 90))
    image.save(folder / "sat.png")
    image.save(folder / "map.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(folder / "mask.png")
    (folder / "question.json").write_text(json.dumps({"problem": query}))


@pytest.fixture
def hand_made(tmp_path):
    """Four 32 x 32 samples with rectangle masks and predictions for three of them."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    preds.mkdir()
    gts, predictions = {}, {}
    gts["a"], predictions["a"] = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    _rect(gts["a"], 0, 0, 10, 10)  # 100 px
    _rect(predictions["a"], 0, 0, 10, 5)  # its left half: I 50, U 100, one TP
    gts["b"], predictions["b"] = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    _rect(gts["b"], 0, 0, 4, 4)
    _rect(gts["b"], 20, 20, 4, 4)
    _rect(predictions["b"], 0, 0, 4, 4)  # one GT instance found
    _rect(predictions["b"], 10, 10, 2, 2)  # a false one: I 16, U 36, TP 1, FP 1, FN 1
    gts["c"] = predictions["c"] = np.zeros((32, 32), bool)  # both empty: IoU 1
    gts["d"] = np.zeros((32, 32), bool)
    _rect(gts["d"], 5, 5, 3, 3)  # 9 px, no prediction file
    queries = {"a": "Jinan Zoo", "b": "School", "c": "Educational", "d": "Wuhan University"}
    for sample_id, gt in gts.items():
        _write_sample(root, sample_id, queries[sample_id], gt)
    (root / "levels.json").write_text(
        json.dumps({"a": "socio-name", "b": {"level": "socio-class", "class": "School"}})
    )
    # prediction "a" is stored at twice the resolution: it is resized back (nearest)
    big = np.kron(predictions["a"], np.ones((2, 2), bool))
    Image.fromarray(big.astype(np.uint8) * 255).save(preds / "a.png")
    Image.fromarray(predictions["b"].astype(np.uint8) * 7).save(preds / "b.png")  # any value > 0
    Image.fromarray(predictions["c"].astype(np.uint8)).save(preds / "c.png")
    return load_socioseg(root, "test", levels=root / "levels.json"), preds


def test_score_predictions_matches_hand_computed_metrics(hand_made, tmp_path):
    dataset, preds = hand_made
    with pytest.raises(EvalError, match="'d'"):
        score_predictions(preds, dataset, tmp_path / "err", progress=False)

    summary = score_predictions(preds, dataset, tmp_path / "skip", missing="skip", progress=False)
    final = summary["metrics"]["final"]
    assert final["all"]["cIoU"] == pytest.approx(66 / 136)
    assert final["all"]["gIoU"] == pytest.approx((0.5 + 16 / 36 + 1) / 3)
    assert final["all"]["F1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert final["all"]["n"] == 3
    assert final["socio-name"] == {"cIoU": 0.5, "gIoU": 0.5, "F1": 1.0, "n": 1}
    assert final["socio-class"]["cIoU"] == pytest.approx(16 / 36)
    assert final["socio-class"]["F1"] == pytest.approx(0.5)
    assert final["socio-function"] == {"cIoU": 1.0, "gIoU": 1.0, "F1": 1.0, "n": 1}
    assert summary["per_class"]["final"]["School"]["gIoU"] == pytest.approx(16 / 36)
    assert summary["missing"] == [{"index": 3, "id": "d", "scored_as": "not scored"}]
    assert "unknown" not in final

    summary = score_predictions(preds, dataset, tmp_path / "empty", missing="empty", progress=False)
    final = summary["metrics"]["final"]
    assert final["all"]["n"] == 4 and final["unknown"]["n"] == 1
    assert final["all"]["cIoU"] == pytest.approx(66 / 145)
    assert final["all"]["F1"] == pytest.approx(4 / (4 + 1 + 2))
    assert summary["counts"]["missing"] == 1
    report = (tmp_path / "empty" / "report.md").read_text()
    assert "| | socio-name | socio-class | socio-function | unknown | all |" in report
    assert "| final | 50.0 / 50.0 / 100.0 |" in report
    assert "## Missing predictions (1)" in report


def test_score_refuses_an_evaluation_folder(data_root, reference, hand_made):
    dataset, preds = hand_made
    with pytest.raises(EvalError, match="evaluation run"):
        score_predictions(preds, dataset, reference[0], missing="skip", progress=False)


# --- summaries ------------------------------------------------------------------------------


def _row(index, level, iou, socio_class=None):
    score = {"intersection": int(iou * 100), "union": 100, "iou": iou, "tp": 1, "fp": 0, "fn": 0}
    row = {"index": index, "id": f"s{index}", "status": "ok", "query": "q", "level": level}
    return {**row, "socio_class": socio_class, "score": {"final": score}}


def test_summary_table_layout_and_exact_merging():
    info = {"stages": ["final"], "dataset": {"n_selected": 3}, "shard": None}
    rows = [_row(0, "socio-name", 0.5), _row(1, "socio-class", 0.25, "Park"), _row(2, "x", 1.0)]
    summary = summarize(rows, info)
    table = results_table(summary).splitlines()
    assert table[0] == "| | socio-name | socio-class | socio-function | all |"
    assert (
        table[2]
        == "| final | 50.0 / 50.0 / 100.0 | 25.0 / 25.0 / 100.0 | – | 58.3 / 58.3 / 100.0 |"
    )
    assert table[3] == "| n | 1 | 1 | 0 | 3 |"
    assert summarize(reversed(rows), info)["metrics"] == summary["metrics"]
    with pytest.raises(ValueError, match="two rows for sample index 1"):
        summarize([*rows, rows[1]], info)


def test_contact_sheet_has_a_row_per_chosen_sample(reference):
    out, summary = reference
    assert summary["contact"] == [0, 1, 2, 3, 4, 5]
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width == 5 * (TILE_WIDTH + 4)
        assert sheet.height == 16 + N_SAMPLES * (16 + TILE_WIDTH + 4)
