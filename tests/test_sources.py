"""Local path or Hub id, decided in one place; model types checked before anything is built."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import constants

from socioseg.hub import SourceNotFoundError, WrongSourceError, dataset_is_on_hub, looks_local
from socioseg.models.sources import QWEN_VL_TYPES, SAM_TYPES, model_source


def test_what_looks_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    local = [".", "./vlm", "../vlm", "/abs/vlm", "~/vlm", "vlm", "runs/x", "a/b/c", "a\\b", "-x/y"]
    hub = ["vvangfaye/SocioReasoner-3B", "facebook/sam2-hiera-large-hf", "nope/vlm"]
    assert [text for text in local if not looks_local(text)] == []
    assert [text for text in hub if looks_local(text)] == []


def _cache_model(cache, repo_id: str, model_type: str, repo_type: str = "model") -> None:
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": model_type}))


def test_hub_ids_are_checked_in_the_cache_without_a_request(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any request would fail
    _cache_model(tmp_path / "hub", "someone/sam", "sam2")
    _cache_model(tmp_path / "hub", "someone/qwen", "qwen2_5_vl")
    assert model_source("someone/qwen", QWEN_VL_TYPES, "Qwen2.5-VL (--vlm)") == "someone/qwen"
    assert model_source("someone/sam", SAM_TYPES, "SAM2 (--sam)") == "someone/sam"
    with pytest.raises(WrongSourceError, match=r"someone/sam holds a .sam2. model, not Qwen"):
        model_source("someone/sam", QWEN_VL_TYPES, "Qwen2.5-VL (--vlm)")
    with pytest.raises(SourceNotFoundError, match="not in the Hub cache, and HF_HUB_OFFLINE"):
        model_source("someone/absent", QWEN_VL_TYPES, "Qwen2.5-VL (--vlm)")
    (tmp_path / "hub" / "datasets--someone--data").mkdir()
    assert dataset_is_on_hub("someone/data")
    with pytest.raises(SourceNotFoundError, match="HF_HUB_OFFLINE"):
        dataset_is_on_hub("someone/other")


def test_local_folders(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(SourceNotFoundError, match=r"has no config\.json"):
        model_source(folder, SAM_TYPES, "SAM2 (--sam)")
    (folder / "config.json").write_text("[" * 100_000)
    with pytest.raises(WrongSourceError, match=r"unreadable config\.json"):
        model_source(folder, SAM_TYPES, "SAM2 (--sam)")
    (folder / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    assert model_source(folder, SAM_TYPES, "SAM2 (--sam)") == str(folder)
    with pytest.raises(SourceNotFoundError, match="no such file or folder"):
        dataset_is_on_hub(str(tmp_path / "missing"))
