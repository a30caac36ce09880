"""The synthetic city generator: determinism, queries, multi-instance share, writers, examples."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from socioseg.data import FUNCTION_NAMES, examples, generate_sample, load_example, load_socioseg
from socioseg.data._catalog import KINDS
from socioseg.data.synth import MULTI_SHARE, _generate, _plan, split_counts, write_dataset

SIZE = 128
CLASSES = {k.socio_class for k in KINDS}


def _digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generate_sample_is_deterministic_per_seed_and_index():
    a = generate_sample(5, 2, size=SIZE)
    b = generate_sample(5, 2, size=SIZE)
    c = generate_sample(5, 3, size=SIZE)
    assert a.id == "synth-00002" and c.id == "synth-00003"
    assert a.query == b.query and np.array_equal(a.mask, b.mask)
    assert np.array_equal(np.asarray(a.sat), np.asarray(b.sat))
    assert np.array_equal(np.asarray(a.map), np.asarray(b.map))
    assert not np.array_equal(np.asarray(a.sat), np.asarray(c.sat))
    rng_sample = generate_sample(np.random.default_rng([5, 2]), 2, size=SIZE)
    assert np.array_equal(np.asarray(rng_sample.sat), np.asarray(a.sat))


def test_sample_fields():
    sample = generate_sample(0, 0, size=SIZE)
    assert sample.sat.size == sample.map.size == (SIZE, SIZE)
    assert sample.sat.mode == sample.map.mode == "RGB"
    assert sample.mask.shape == (SIZE, SIZE) and sample.mask.dtype == bool
    assert 0 < sample.mask.mean() < 0.6
    with pytest.raises(ValueError, match="size must be 128 to 4096 pixels, got 64"):
        generate_sample(0, 0, size=64)


def test_plans_keep_queries_unambiguous_and_about_eleven_percent_multi():
    plans = [_plan(np.random.default_rng([1, i])) for i in range(1000)]
    multi = [p for p in plans if p.n_targets > 1]
    assert abs(len(multi) / len(plans) - MULTI_SHARE) < 0.03
    assert {p.level for p in multi} == {"socio-class", "socio-function"}
    assert {p.level for p in plans} == {"socio-name", "socio-class", "socio-function"}
    for p in plans:
        assert 3 <= len(p.kinds) <= 5 and p.n_targets < len(p.kinds)
        targets = p.kinds[: p.n_targets]
        if p.level == "socio-class":
            assert p.query in CLASSES and p.socio_class == p.query
            assert sum(k.socio_class == p.query for k in p.kinds) == p.n_targets
        elif p.level == "socio-function":
            assert p.query in FUNCTION_NAMES
            assert sum(k.function == p.query for k in p.kinds) == p.n_targets
        else:
            assert p.n_targets == 1 and p.query == "" and p.socio_class == targets[0].socio_class


def test_masks_hold_one_component_per_target_and_name_queries_are_names():
    for index in range(8):
        sample, n_targets = _generate(np.random.default_rng([11, index]), index, SIZE)
        count, _ = cv2.connectedComponents(sample.mask.astype(np.uint8), connectivity=8)
        assert count - 1 == n_targets, sample.id
        if sample.level == "socio-name":
            assert sample.query not in CLASSES and sample.query not in FUNCTION_NAMES


def test_split_counts():
    assert split_counts(10) == [6, 1, 3]
    assert split_counts(7) == [4, 1, 2] and sum(split_counts(7)) == 7
    assert split_counts(5, (1, 1, 0)) == [3, 2, 0]
    assert split_counts(0) == [0, 0, 0]
    with pytest.raises(ValueError):
        split_counts(3, (0, 0, 0))


def test_write_dataset_folder_is_byte_identical_on_rerun(tmp_path):
    summary = write_dataset(tmp_path / "a", n=5, seed=4, size=SIZE, split_ratios=(3, 1, 1))
    assert summary["splits"] == {"train": 3, "val": 1, "test": 1}
    assert sum(summary["levels"].values()) == 5
    write_dataset(tmp_path / "b", n=5, seed=4, size=SIZE, split_ratios=(3, 1, 1), workers=2)
    first = _digest(tmp_path / "a")
    assert first == _digest(tmp_path / "b")
    write_dataset(tmp_path / "a", n=5, seed=4, size=SIZE, split_ratios=(3, 1, 1))
    assert first == _digest(tmp_path / "a")  # rewriting replaces, leaves nothing stale
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == [
        "synth-00000",
        "synth-00001",
        "synth-00002",
    ]
    sample_dir = tmp_path / "a" / "test" / "synth-00004"
    assert sorted(p.name for p in sample_dir.iterdir()) == [
        "map.png",
        "mask.png",
        "question.json",
        "sat.png",
    ]
    levels = json.loads((tmp_path / "a" / "levels.json").read_text())
    assert set(levels) == {f"synth-{i:05d}" for i in range(5)}
    assert all(set(v) == {"level", "class"} for v in levels.values())


def test_write_dataset_parquet_is_byte_identical_and_loadable(tmp_path):
    write_dataset(tmp_path / "a", n=4, seed=9, fmt="parquet", size=SIZE, split_ratios=(1, 1, 2))
    write_dataset(tmp_path / "b", n=4, seed=9, fmt="parquet", size=SIZE, split_ratios=(1, 1, 2))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a" / "data").iterdir())
    assert files == [f"{s}-00000-of-00001.parquet" for s in ("test", "train", "val")]
    ds = load_socioseg(tmp_path / "a", "test", cache_dir=tmp_path / "cache")
    direct = generate_sample(9, 2, size=SIZE)
    assert ds.ids == ["synth-00002", "synth-00003"]
    assert ds[0].query == direct.query and np.array_equal(ds[0].mask, direct.mask)
    assert np.array_equal(np.asarray(ds[0].sat), np.asarray(direct.sat))


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_dataset(tmp_path, n=1, fmt="zip")
    with pytest.raises(ValueError, match="workers"):
        write_dataset(tmp_path, n=1, workers=0)


def test_shipped_examples_cover_the_three_levels():
    folders = examples()
    assert len(folders) == 3
    samples = [load_example(i) for i in range(3)]
    assert {s.level for s in samples} == {"socio-name", "socio-class", "socio-function"}
    for folder, sample in zip(folders, samples, strict=True):
        assert sample.id == folder.name and sample.mask.any()
        assert sample.sat.size == sample.map.size == sample.mask.shape[::-1]
        assert sum(p.stat().st_size for p in folder.iterdir()) < 650_000
    assert load_example(folders[1].name).query == samples[1].query
    with pytest.raises(KeyError, match="available"):
        load_example("no-such-example")
    with pytest.raises(IndexError):
        load_example(3)
