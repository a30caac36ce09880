"""Sample ids become file names: hostile ids are refused when a split opens, before any file.

``eval --save-masks`` writes ``masks/<id>.png`` and ``score`` reads ``<pred-dir>/<id>.png``;
an id like ``../../x`` or ``/abs/x`` would write or read anywhere, and duplicates would
overwrite each other. Every case must exit 2 with one line naming the id and the dataset, and
leave every file outside the run folders as it was.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import datasets
import pytest
from PIL import Image

from socioseg.cli import main
from socioseg.data import DataError, load_socioseg
from socioseg.data.synth import write_dataset
from socioseg.eval.files import EvalError, id_file
from tests.test_cli_errors import message_lines

HOSTILE = {
    "relative": (["ok", "../../escape"], "'../../escape', which contains a path separator"),
    "absolute": (["ok", "/tmp/escape"], "'/tmp/escape', which contains a path separator"),
    "backslash": (["ok", "a\\..\\..\\escape"], "which contains a path separator"),
    "separator": (["ok", "a/b"], "'a/b', which contains a path separator"),
    "dot-dot": (["ok", ".."], "'..', which starts with '.'"),
    "hidden": (["ok", ".escape"], "'.escape', which starts with '.'"),
    "empty": (["ok", ""], "sample 1 has id '', which is empty"),
    "duplicate": (["dup", "x", "dup"], "sample 2 has id 'dup', which duplicates the id of sample"),
    "control": (["ok", "a\nb"], "contains a control character"),
    "null": (["ok", None], "sample 1 has id None, which is not a string"),
}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _parquet(root: Path, ids: list) -> Path:
    image = {"bytes": _png(Image.new("RGB", (32, 32), (90, 120, 60))), "path": None}
    mask = {"bytes": _png(Image.new("L", (32, 32), 255)), "path": None}
    rows = {
        "id": ids,
        "problem": ["Park"] * len(ids),
        "map_image": [image] * len(ids),
        "sat_image": [image] * len(ids),
        "mask_label": [mask] * len(ids),
    }
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "problem": datasets.Value("string"),
            "map_image": datasets.Image(),
            "sat_image": datasets.Image(),
            "mask_label": datasets.Image(),
        }
    )
    path = root / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "hf-cache" not in p.parts
    }


def _run_both(data: Path, split: str, work: Path, capsys) -> list[str]:
    """eval --save-masks and score on ``data``; returns their stderr lines (one each)."""
    preds = work / "preds"
    preds.mkdir()
    (work / "escape.png").write_bytes(_png(Image.new("L", (32, 32), 255)))  # bait for score
    before = _tree(work)
    out = work / "runs" / "a" / "b"
    common = ["--data", data, "--split", split]
    lines = []
    for argv in (
        ["eval", *common, "--out", out / "eval", "--save-masks", "--vlm", work / "none"],
        ["score", *common, "--pred-dir", preds, "--out", out / "score"],
    ):
        assert main([str(a) for a in argv]) == 2
        err = message_lines(capsys.readouterr().err)
        assert len(err) == 1, err
        lines.append(err[0])
    assert _tree(work) == before  # nothing written, no run folder made
    assert not (work / "runs").exists()
    return lines


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_ids_in_a_parquet_dataset(case, tmp_path, capsys, monkeypatch):
    ids, message = HOSTILE[case]
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    data = _parquet(tmp_path / "data-root", ids)
    for line in _run_both(data, "test", tmp_path, capsys):
        assert message in line and "fix the dataset's ids" in line, line
        assert "data-root" in line  # the dataset is named


def test_hostile_id_in_a_folder_dataset(tmp_path, capsys):
    data = tmp_path / "data-root"
    write_dataset(data, 4, seed=1, size=128)
    sample = sorted((data / "train").iterdir())[0]
    shutil.move(sample, data / "train" / "x\\..\\..\\escape")  # one name on POSIX
    for line in _run_both(data, "train", tmp_path, capsys):
        assert "'x\\\\..\\\\..\\\\escape', which contains a path separator" in line, line
        assert "folder layout at" in line


def test_the_library_refuses_them_too(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(DataError, match="duplicates the id of sample 0"):
        load_socioseg(_parquet(tmp_path / "d", ["dup", "dup"]), "test")
    assert id_file(tmp_path, "synth-00001") == tmp_path / "synth-00001.png"
    for sample_id in ("../x", "/abs", "a\\b", ".x", ""):
        with pytest.raises(EvalError, match="cannot name a file"):
            id_file(tmp_path, sample_id)
