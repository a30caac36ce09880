"""The synthetic city generator: determinism, queries, multi-instance share, writers, examples."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from socioseg.data import (
    FUNCTION_NAMES,
    examples,
    load_example,
    load_socioseg,
)
from socioseg.data.synth import generate_sample, generate_tile
from socioseg.data.synth.catalog import KINDS
from socioseg.data.synth.city import clip_to_tile, polygon_area
from socioseg.data.synth.generate import (
    MULTI_SHARE,
    _layout,
    _plan,
    _tile,
    sample_with_targets,
    split_counts,
    write_dataset,
)

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
        sample, n_targets = sample_with_targets(np.random.default_rng([11, index]), index, SIZE)
        count, _ = cv2.connectedComponents(sample.mask.astype(np.uint8), connectivity=8)
        assert count - 1 == n_targets, sample.id
        if sample.level == "socio-name":
            assert sample.query not in CLASSES and sample.query not in FUNCTION_NAMES


def _most_visible_entity_is_a_target(placement: str) -> tuple[float, float]:
    """Over 300 tiles: how often the entity with the largest share inside the tile is a
    target, and how often chance (targets / entities) would make it one."""
    hits, chance = 0.0, 0.0
    for index in range(300):
        rng = np.random.default_rng([21, index])
        plan = _plan(rng)
        _, regions, _ = _layout(rng, plan, 256, placement)
        ents = sorted((r for r in regions if r.entity is not None), key=lambda r: r.entity)
        shares = [polygon_area(clip_to_tile(r.poly, 256)) / polygon_area(r.poly) for r in ents]
        if placement == "random":  # every entity mostly on the tile
            assert all(share > 0.3 for share in shares)
        best = [k for k, share in enumerate(shares) if share > max(shares) - 1e-9]
        hits += sum(k < plan.n_targets for k in best) / len(best)  # ties shared out
        chance += plan.n_targets / len(ents)
    return hits, chance


def test_random_placement_gives_position_no_say_in_which_entity_is_the_target():
    hits, chance = _most_visible_entity_is_a_target("random")
    assert abs(hits - chance) < 20, (hits, chance)
    hits, chance = _most_visible_entity_is_a_target("prominent")  # the prior "prominent" leaves
    assert hits > 2 * chance, (hits, chance)
    with pytest.raises(ValueError, match="placement must be one of"):
        generate_sample(0, 0, SIZE, placement="central")


def test_tiles_ask_several_questions_one_entity_each():
    for index in range(6):
        tile = _tile(np.random.default_rng([11, index]), index, SIZE, 5, "prominent")
        assert [s.id for s in generate_tile(11, index, SIZE, 5)] == [s.id for s, _ in tile]
        (first, n_targets), *others = tile
        alone = sample_with_targets(np.random.default_rng([11, index]), index, SIZE)[0]
        assert first.id == alone.id == f"synth-{index:05d}" and first.query == alone.query
        assert np.array_equal(first.mask, alone.mask)  # more questions change nothing drawn
        assert np.array_equal(np.asarray(first.sat), np.asarray(alone.sat))
        queries = [first.query] + [s.query for s, _ in others]
        assert len(set(queries)) == len(queries)
        seen = first.mask.copy()
        assert 2 <= len(others) <= 4
        for k, (sample, n) in enumerate(others, start=1):
            assert sample.id == f"synth-{index:05d}-{k}" and n == 1
            assert sample.level == "socio-name" and sample.sat is first.sat
            count, _ = cv2.connectedComponents(sample.mask.astype(np.uint8), connectivity=8)
            assert count - 1 == 1
            if k <= len(others) - (n_targets - (first.level == "socio-name")):
                assert not (sample.mask & seen).any()  # a distractor: outside the answer
            seen |= sample.mask


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


def test_write_dataset_with_queries_keeps_tiles_in_one_split(tmp_path):
    summary = write_dataset(
        tmp_path / "q", n=4, seed=4, size=SIZE, split_ratios=(2, 1, 1), queries=3
    )
    assert summary["splits"] == {"train": 2, "val": 1, "test": 1}
    assert summary["samples"] == {"train": 6, "val": 3, "test": 3}  # every tile has 3+ entities
    train = load_socioseg(tmp_path / "q", "train")
    assert train.ids == [f"synth-0000{i}{k}" for i in (0, 1) for k in ("", "-1", "-2")]
    test = load_socioseg(tmp_path / "q", "test")
    assert {i.split("-")[1] for i in test.ids} == {"00003"}
    levels = json.loads((tmp_path / "q" / "levels.json").read_text())
    assert levels["synth-00003-2"]["level"] == "socio-name"


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_dataset(tmp_path, n=1, fmt="zip")
    with pytest.raises(ValueError, match="workers"):
        write_dataset(tmp_path, n=1, workers=0)
    with pytest.raises(ValueError, match="queries must be 1 to 5"):
        write_dataset(tmp_path, n=1, queries=6)
    with pytest.raises(ValueError, match="queries must be 1 to 5"):
        generate_tile(0, 0, SIZE, queries=0)


def test_shipped_examples_cover_the_three_levels_in_both_placements():
    folders = examples()
    assert [f.name.startswith("synth-random-") for f in folders] == [False] * 3 + [True] * 3
    samples = [load_example(i) for i in range(len(folders))]
    for part in (samples[:3], samples[3:]):
        assert {s.level for s in part} == {"socio-name", "socio-class", "socio-function"}
    for folder, sample in zip(folders, samples, strict=True):
        assert sample.id == folder.name and sample.mask.any()
        assert sample.sat.size == sample.map.size == sample.mask.shape[::-1]
        assert sum(p.stat().st_size for p in folder.iterdir()) < 650_000
    assert [s.sat.size for s in samples] == [(768, 768)] * 3 + [(256, 256)] * 3
    # The randomly placed ones are what the generator draws for them, pixel for pixel.
    for sample in samples[3:]:
        index = int(sample.id.rsplit("-", 1)[1])
        drawn, targets = sample_with_targets(
            np.random.default_rng([2026, index]), index, 256, "random"
        )
        assert targets == 1 and drawn.query == sample.query
        assert np.array_equal(np.asarray(drawn.sat), np.asarray(sample.sat))
        assert np.array_equal(np.asarray(drawn.mask, bool), np.asarray(sample.mask, bool))
    assert load_example(folders[1].name).query == samples[1].query
    with pytest.raises(KeyError, match="available"):
        load_example("no-such-example")
    with pytest.raises(IndexError):
        load_example(len(folders))


def test_synth_command_asks_several_questions_on_randomly_placed_tiles(tmp_path, capsys):
    from socioseg.cli import main

    argv = ["synth", str(tmp_path / "d"), "--n", "3", "--size", "128", "--queries", "2"]
    assert main([*argv, "--placement", "random"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 synthetic tiles" in out and "samples: train 4, val 0, test 2" in out
    direct = generate_sample(0, 2, 128, placement="random")
    sample = load_socioseg(tmp_path / "d", "test")[0]
    assert sample.id == "synth-00002" and np.array_equal(sample.mask, direct.mask)
    with pytest.raises(SystemExit) as exit_info:  # at most 5 entities on a tile
        main([*argv, "--queries", "6"])
    assert exit_info.value.code == 2 and "from 1 to 5, got '6'" in capsys.readouterr().err


def test_synth_refuses_a_folder_that_is_no_socioseg_dataset(tmp_path, capsys):
    from socioseg.cli import main

    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "photo.png").write_bytes(b"not ours")
    assert main(["synth", str(mine), "--n", "2", "--size", "128"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "holds files that are no socioseg dataset (train)" in error[0]
    assert (mine / "train" / "photo.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in mine.iterdir()) == ["train"]
    ours = tmp_path / "ours"  # a dataset synth wrote is regenerated in place
    assert main(["synth", str(ours), "--n", "2", "--size", "128"]) == 0
    assert main(["synth", str(ours), "--n", "3", "--size", "128"]) == 0
    assert len(json.loads((ours / "levels.json").read_text())) == 3


@pytest.mark.parametrize("placement", ["prominent", "random"])
def test_tile_labels_name_every_entity_of_the_tile(placement):
    from socioseg.data.synth import MAX_QUERIES, tile_labels

    for index in range(4):
        tile = generate_tile(21, index, 256, MAX_QUERIES, placement=placement)
        placed = tile_labels(21, index, 256, placement=placement)
        majors = [p.label.text for p in placed if p.label.major]
        assert {s.query for s in tile if s.level == "socio-name"} <= set(majors)
        assert len(majors) == len(set(majors)) >= 3  # one per entity, each of its own


def test_placed_labels_hold_every_pixel_their_text_changes():
    """On a blank map, the pixels that drawing the labels changes lie in the text boxes and
    pins ``draw_map`` reports; each text box is written at both ends, and its first word's
    box (a left part of it) is written too. Four labels crowd one corner, so some move."""
    from socioseg.data.synth.paint import MAP_BACKGROUND, Label, draw_map, pin_box

    labels = [
        Label((40.0, 40.0), "Heping University", (245, 124, 0)),
        Label((60.0, 44.0), "Qinghe No. 3 Middle School", (63, 81, 181)),
        Label((200.0, 120.0), "Jade Spring Park", (56, 160, 72)),
        Label((44.0, 60.0), "Pharmacy", (150, 150, 150), major=False),
    ]
    image, placed = draw_map(256, [], [], labels)
    changed = (np.asarray(image).astype(int) != MAP_BACKGROUND).any(-1)
    allowed = np.zeros_like(changed)
    assert {p.label.text for p in placed} <= {label.text for label in labels}
    assert {p.label.text for p in placed if p.label.major} == {lb.text for lb in labels[:3]}
    for p in placed:
        for x0, y0, x1, y1 in (p.box, pin_box(p.label, 256 / 768)):
            allowed[int(y0) : int(np.ceil(y1)) + 1, int(x0) : int(np.ceil(x1)) + 1] = True
        x0, y0, x1, y1 = (round(v) for v in p.box)
        assert changed[y0:y1, x0 : x0 + 3].any() and changed[y0:y1, x1 - 3 : x1].any(), p
        a0, b0, a1, b1 = p.first_word
        assert (a0, b0, b1) == p.box[:2] + p.box[3:]
        assert a1 < p.box[2] - 10 if " " in p.label.text else p.box[2] - 3 < a1 <= p.box[2]
        assert changed[round(b0) : round(b1), round(a0) : round(a1)].mean() > 0.2
    assert changed.any() and not (changed & ~allowed).any()
