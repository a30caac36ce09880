"""SocioSeg loading: both layouts, split discovery, the Hub path, validation and laziness."""

from __future__ import annotations

import io
import json
import re
import shutil

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import pytest
from PIL import Image

from socioseg.data import FUNCTION_NAMES, DataError, Sample, load_socioseg
from socioseg.data.synth import write_dataset

SIZE = 128
N = 10  # 6 train, 1 val, 3 test


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_dataset(root, N, seed=3, size=SIZE)
    return root


@pytest.fixture(scope="module")
def parquet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    write_dataset(root, N, seed=3, fmt="parquet", size=SIZE)
    return root


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf-cache"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_layout(folder_root):
    ds = load_socioseg(folder_root, "train", levels=folder_root / "levels.json")
    assert len(ds) == 6 and ds.split == "train"
    assert ds.ids == sorted(ds.ids) and ds.ids[0] == "synth-00000"
    sample = ds[0]
    assert isinstance(sample, Sample) and sample.id == "synth-00000"
    assert sample.sat.mode == "RGB" and sample.map.mode == "RGB" and sample.sat.size == (SIZE, SIZE)
    assert sample.mask.shape == (SIZE, SIZE) and sample.mask.dtype == bool and sample.mask.any()
    levels = json.loads((folder_root / "levels.json").read_text())
    assert (sample.level, sample.socio_class) == tuple(levels[sample.id].values())
    assert ds[-1].id == ds.ids[-1]
    assert [s.id for s in ds] == ds.ids
    assert ds.query(1) == ds[1].query and ds.level(1) == (ds[1].level, ds[1].socio_class)
    with pytest.raises(IndexError):
        ds[6]


def test_without_levels_only_function_queries_get_a_level(folder_root, tmp_path):
    shutil.copytree(folder_root / "train", tmp_path / "train")  # no levels.json beside it
    for sample in load_socioseg(tmp_path, "train"):
        expected = "socio-function" if sample.query in FUNCTION_NAMES else "unknown"
        assert sample.level == expected and sample.socio_class is None


def test_levels_json_beside_the_dataset_is_used_unless_levels_are_given(folder_root, tmp_path):
    written = json.loads((folder_root / "levels.json").read_text())
    found = load_socioseg(folder_root, "train")
    assert found.level_map.source == str(folder_root / "levels.json")
    assert [(s.level, s.socio_class) for s in found] == [
        (written[i]["level"], written[i]["class"]) for i in found.ids
    ]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({i: "socio-name" for i in found.ids}))
    given = load_socioseg(folder_root, "train", levels=other)
    assert given.level_map.source == str(other)
    assert {s.level for s in given} == {"socio-name"}


def test_parquet_layout_matches_folder_layout(folder_root, parquet_root, cache):
    for split, n in (("train", 6), ("val", 1), ("test", 3)):
        pq = load_socioseg(parquet_root, split, parquet_root / "levels.json", cache_dir=cache)
        fo = load_socioseg(folder_root, split, folder_root / "levels.json")
        assert len(pq) == n and pq.ids == fo.ids
    a, b = pq[0], fo[0]
    assert (a.id, a.query, a.level, a.socio_class) == (b.id, b.query, b.level, b.socio_class)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(np.asarray(a.sat), np.asarray(b.sat))
    assert np.array_equal(np.asarray(a.map), np.asarray(b.map))


def test_data_files_given_directly(parquet_root, cache):
    path = parquet_root / "data" / "test-00000-of-00001.parquet"
    assert len(load_socioseg(path, "test", cache_dir=cache)) == 3
    assert len(load_socioseg([str(path)], "test", cache_dir=cache)) == 3


def test_split_subfolders_and_validation_alias(parquet_root, tmp_path, cache):
    root = tmp_path / "hub-copy"
    (root / "test").mkdir(parents=True)
    shutil.copy(
        parquet_root / "data" / "test-00000-of-00001.parquet", root / "test" / "0000.parquet"
    )
    shutil.copy(parquet_root / "data" / "val-00000-of-00001.parquet", root / "validation.parquet")
    assert len(load_socioseg(root, "test", cache_dir=cache)) == 3
    assert len(load_socioseg(root, "val", cache_dir=cache)) == 1


def test_save_to_disk_and_arrow_files(parquet_root, tmp_path, cache):
    files = {
        s: str(parquet_root / "data" / f"{s}-00000-of-00001.parquet") for s in ("train", "test")
    }
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache))
    loaded.save_to_disk(str(tmp_path / "dict"))
    ds = load_socioseg(tmp_path / "dict", "test")
    assert len(ds) == 3 and ds[0].mask.any()
    with pytest.raises(DataError, match=r"no split 'val'.*\['train', 'test'\]"):
        load_socioseg(tmp_path / "dict", "val")

    loaded["test"].save_to_disk(str(tmp_path / "single"))
    assert len(load_socioseg(tmp_path / "single", "test")) == 3
    arrow = sorted((tmp_path / "single").glob("*.arrow"))
    assert arrow and load_socioseg(arrow, "test")[2].id == ds[2].id


def test_missing_split_lists_what_was_found(folder_root, parquet_root, cache, tmp_path):
    with pytest.raises(DataError, match=r"no split 'dev'.*\['test', 'train', 'val'\]"):
        load_socioseg(folder_root, "dev")
    with pytest.raises(DataError, match=r"holds sample folders itself: pass its parent"):
        load_socioseg(folder_root / "test", "test")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"test has no sample folders"):
        load_socioseg(tmp_path / "empty", "test")
    with pytest.raises(
        DataError, match=r"no split 'dev'.*\['test', 'train', 'val'\].*files: data/"
    ):
        load_socioseg(parquet_root, "dev", cache_dir=cache)


def test_hub_id_goes_to_load_dataset(monkeypatch, parquet_root, cache):
    calls = []
    path = str(parquet_root / "data" / "test-00000-of-00001.parquet")
    local = datasets.load_dataset(
        "parquet", data_files={"test": path}, split="test", cache_dir=str(cache)
    )

    def fake_load_dataset(name, split=None, cache_dir=None, **kwargs):
        calls.append((name, split))
        if split not in ("test", "validation"):
            raise ValueError(f"Unknown split \"{split}\". Should be one of ['test'].")
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", lambda *args, **kwargs: None)
    assert len(load_socioseg("vvangfaye/SocioSeg", "test")) == 3
    with pytest.raises(DataError, match=r"Hub dataset 'vvangfaye/SocioSeg': no split 'train'"):
        load_socioseg("vvangfaye/SocioSeg", "train")
    assert calls == [("vvangfaye/SocioSeg", "test"), ("vvangfaye/SocioSeg", "train")]
    assert load_socioseg("vvangfaye/SocioSeg", "val").ids == list(local["id"])
    assert calls[-2:] == [("vvangfaye/SocioSeg", "val"), ("vvangfaye/SocioSeg", "validation")]


def test_missing_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_socioseg(tmp_path / "nothing" / "here")
    with pytest.raises(ValueError, match="on_error"):
        load_socioseg(tmp_path, on_error="ignore")


# --- broken samples --------------------------------------------------------------------------


def _break(sample_dir, how):
    if how == "missing mask":
        (sample_dir / "mask.png").unlink()
    elif how == "unreadable png":
        (sample_dir / "sat.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    elif how == "mask size":
        Image.new("L", (SIZE // 2, SIZE // 2), 255).save(sample_dir / "mask.png")
    elif how == "map aspect":
        Image.new("RGB", (SIZE, SIZE // 2)).save(sample_dir / "map.png")
    elif how == "empty query":
        (sample_dir / "question.json").write_text(json.dumps({"problem": "  "}))
    elif how == "no question":
        (sample_dir / "question.json").unlink()


BREAKAGES = {
    "missing mask": r"'bad-missing-mask': mask\.png: file not found",
    "unreadable png": r"'bad-unreadable-png': sat\.png is not a readable image",
    "mask size": r"'bad-mask-size': mask\.png: mask size 64x64 differs from .* 128x128",
    "map aspect": r"'bad-map-aspect': map\.png: map size 128x64 has a different aspect ratio",
    "empty query": r"'bad-empty-query': question\.json 'problem': query is empty",
    "no question": r"'bad-no-question': question\.json: file not found",
}


@pytest.fixture
def broken_root(folder_root, tmp_path):
    """A test split with one good sample, one of each breakage, and another good one."""
    split = tmp_path / "broken" / "test"
    good = folder_root / "test" / "synth-00007"
    shutil.copytree(good, split / "a-good")
    for how in BREAKAGES:
        target = split / f"bad-{how.replace(' ', '-')}"
        shutil.copytree(good, target)
        _break(target, how)
    shutil.copytree(good, split / "z-good")
    return split.parent


def test_each_breakage_raises_a_data_error_naming_sample_file_and_problem(broken_root):
    ds = load_socioseg(broken_root, "test")
    assert len(ds) == len(BREAKAGES) + 2
    for how, pattern in BREAKAGES.items():
        index = ds.ids.index(f"bad-{how.replace(' ', '-')}")
        with pytest.raises(DataError, match=pattern):
            ds[index]
    with pytest.raises(DataError):
        list(ds)


def test_skip_mode_skips_and_records_reasons(broken_root):
    ds = load_socioseg(broken_root, "test", on_error="skip")
    assert [s.id for s in ds] == ["a-good", "z-good"]
    reasons = dict(ds.skipped)
    assert set(reasons) == {f"bad-{how.replace(' ', '-')}" for how in BREAKAGES}
    for how, pattern in BREAKAGES.items():
        assert re.search(pattern, reasons[f"bad-{how.replace(' ', '-')}"])
    list(ds)  # a second pass records each sample once
    assert len(ds.skipped) == len(BREAKAGES)
    with pytest.raises(DataError):  # indexing still raises
        ds[ds.ids.index("bad-mask-size")]


def test_broken_rows_in_the_hf_layout(tmp_path, cache):
    good = Image.new("RGB", (32, 32), (90, 120, 60))
    mask = Image.new("L", (32, 32), 0)
    image = {"bytes": _png(good), "path": None}
    rows = {
        "id": ["ok", "null-sat", "garbage-map", "blank"],
        "problem": ["Park", "Park", "Park", ""],
        "map_image": [image, image, {"bytes": b"garbage", "path": None}, image],
        "sat_image": [image, None, image, image],
        "mask_label": [{"bytes": _png(mask), "path": None}] * 4,
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
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    ds = load_socioseg(tmp_path, "test", on_error="skip", cache_dir=cache)
    sample = ds[0]
    assert sample.level == "unknown" and not sample.mask.any()  # empty GT is allowed
    with pytest.raises(DataError, match=r"'null-sat': column 'sat_image': image is missing"):
        ds[1]
    with pytest.raises(DataError, match=r"'garbage-map': column 'map_image' is not a readable"):
        ds[2]
    with pytest.raises(DataError, match=r"'blank': column 'problem': query is empty"):
        ds[3]
    assert [s.id for s in ds] == ["ok"] and len(ds.skipped) == 3


def test_wrong_columns_are_reported(tmp_path, cache):
    path = tmp_path / "test.parquet"
    datasets.Dataset.from_dict({"id": ["a"], "question": ["Park"]}).to_parquet(str(path))
    with pytest.raises(DataError, match=r"missing column\(s\) problem, map_image.*'question'"):
        load_socioseg(path, "test", cache_dir=cache)


# --- laziness --------------------------------------------------------------------------------


@pytest.fixture
def count_opens(monkeypatch):
    opened = []
    real_open = PIL.Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    return opened


def test_building_a_dataset_decodes_nothing(folder_root, tmp_path, count_opens):
    split = tmp_path / "many" / "test"
    for k in range(50):
        shutil.copytree(folder_root / "test" / "synth-00007", split / f"s{k:03d}")
    ds = load_socioseg(split.parent, "test")
    assert len(ds) == 50 and len(ds.ids) == 50
    assert ds.query(10) and count_opens == []
    ds[3]
    assert len(count_opens) == 3  # sat, map, mask of that sample only
    assert all("s003" in str(path) for path in count_opens)


def test_parquet_dataset_decodes_one_row_at_a_time(parquet_root, cache, count_opens):
    ds = load_socioseg(parquet_root, "train", cache_dir=cache)
    assert len(ds) == 6 and count_opens == []
    ds[4]
    assert len(count_opens) == 3
