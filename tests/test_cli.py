"""The socioseg command end to end on tiny models: files written, one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from socioseg.cli import main
from tests.conftest import noise_image


def models(tiny_models):
    return ["--vlm", str(tiny_models[0]), "--sam", str(tiny_models[1])]


def test_segment_example_writes_every_file(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            "--example",
            "0",
            "--out",
            str(out),
            "--max-new-tokens",
            "8",
            "--min-pixels",
            "3136",
            "--max-pixels",
            "50176",
            *models(tiny_models),
        ]
    )
    assert code == 0
    for name in ("mask", "stage1_mask", "overlay", "feedback_map", "feedback_sat"):
        assert (out / f"{name}.png").is_file()
    assert Image.open(out / "mask.png").size == (768, 768)
    assert set(np.unique(np.asarray(Image.open(out / "mask.png")))) <= {0, 255}
    assert Image.open(out / "feedback_sat.png").size == (196, 196)  # the VLM frame
    result = json.loads((out / "result.json").read_text())
    assert result["query"] == "Stadium" and result["mode"] == "two-stage"
    assert result["vlm_size"] == [196, 196] and result["image_size"] == [768, 768]
    assert {"response", "answer", "problems", "targets_image"} <= set(result["stage1"])
    assert result["models"]["vlm"] == str(tiny_models[0])
    assert "stage1_generate" in result["timings_s"]
    assert "wrote" in capsys.readouterr().out


def test_segment_never_overwrites_a_file_it_did_not_write(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlay.png").write_bytes(b"my own drawing")  # a name segment writes
    (out / "notes.txt").write_text("mine")
    base = ["segment", "--example", "0", "--max-new-tokens", "4", *models(tiny_models)]
    assert main([*base, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        len(error) == 1
        and "holds files socioseg did not write (notes.txt, overlay.png)" in error[0]
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "overlay.png"]
    assert (out / "overlay.png").read_bytes() == b"my own drawing"
    # A folder of its own earlier run is replaced, file by file, and nothing is left staged.
    fresh = tmp_path / "fresh"
    assert main([*base, "--out", str(fresh)]) == 0
    first = json.loads((fresh / "result.json").read_text())
    assert main([*base, "--out", str(fresh), "--query", "School"]) == 0
    assert json.loads((fresh / "result.json").read_text())["query"] == "School" != first["query"]
    assert sorted(p.name for p in fresh.iterdir()) == sorted(
        ["feedback_map.png", "feedback_sat.png", "mask.png", "overlay.png", "result.json",
         "stage1_mask.png"]
    )  # fmt: skip


def test_segment_with_files_and_stage1_mode(tiny_models, tmp_path):
    noise_image(120, 90).save(tmp_path / "sat.png")
    noise_image(240, 180, 1).save(tmp_path / "map.jpg")
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            "--sat",
            str(tmp_path / "sat.png"),
            "--map",
            str(tmp_path / "map.jpg"),
            "--query",
            "School",
            "--mode",
            "stage1",
            "--greedy",
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--min-pixels",
            "3136",
            *models(tiny_models),
        ]
    )
    assert code == 0
    assert Image.open(out / "mask.png").size == (120, 90)
    assert not (out / "feedback_map.png").exists()
    assert json.loads((out / "result.json").read_text())["stage2"] is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "file not found"),
        ("not-image", "is not a readable image"),
        ("aspect", "same aspect ratio"),
    ],
)
def test_bad_inputs_give_one_line_errors(tiny_models, tmp_path, capsys, setup, message):
    sat, map_ = tmp_path / "sat.png", tmp_path / "map.png"
    noise_image(100, 100).save(sat)
    noise_image(100, 100 if setup != "aspect" else 50).save(map_)
    if setup == "missing":
        sat = tmp_path / "nope.png"
    if setup == "not-image":
        sat.write_text("hello")
    code = main(
        [
            "segment",
            "--sat",
            str(sat),
            "--map",
            str(map_),
            "--query",
            "x",
            "--out",
            str(tmp_path / "o"),
            *models(tiny_models),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    noise_image(10, 10).save(tmp_path / "s.png")
    code = main(
        [
            "segment",
            "--sat",
            str(tmp_path / "s.png"),
            "--map",
            str(tmp_path / "s.png"),
            "--query",
            "x",
            "--out",
            str(tmp_path / "out"),
            "--vlm",
            "./no-such-model",
        ]
    )
    assert code == 2 and "folder not found: ./no-such-model" in capsys.readouterr().err


@pytest.mark.slow
def test_synth_then_eval_produces_every_file_and_resumes(tiny_models, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "eval"
    assert main(["synth", str(data), "--n", "10", "--size", "128", "--seed", "3"]) == 0
    args = [
        "eval",
        "--data",
        str(data),
        "--split",
        "test",
        "--levels",
        str(data / "levels.json"),
        "--out",
        str(out),
        "--limit",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "4",
        "--greedy",
        "--min-pixels",
        "3136",
        *models(tiny_models),
    ]
    assert main(args) == 0
    for name in ("predictions.jsonl", "metrics.json", "report.md"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["scored"] == 2
    assert set(metrics["metrics"]) == {"stage1", "final"}
    assert "cIoU" in (out / "report.md").read_text()
    rows = (out / "predictions.jsonl").read_text()
    assert main(args) == 0  # a rerun finds everything done
    assert (out / "predictions.jsonl").read_text() == rows
    assert "socio-" in capsys.readouterr().out


def test_train_config_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "rollout.group_size=1"]) == 2
    assert "group_size must be >= 2" in capsys.readouterr().err


def test_segment_area_on_plain_images(tiny_models, tmp_path, capsys):
    noise_image(300, 200).save(tmp_path / "sat.png")
    noise_image(300, 200, 1).save(tmp_path / "map.png")
    out = tmp_path / "area"
    args = [
        "segment-area",
        "--sat",
        str(tmp_path / "sat.png"),
        "--map",
        str(tmp_path / "map.png"),
        "--query",
        "Park",
        "--out",
        str(out),
        "--tile",
        "160",
        "--overlap",
        "32",
        "--max-new-tokens",
        "4",
        "--min-pixels",
        "3136",
        "--no-progress",
        *models(tiny_models),
    ]
    assert main(args) == 0
    assert Image.open(out / "mask.png").size == (300, 200)
    assert json.loads((out / "entities.geojson").read_text())["type"] == "FeatureCollection"
    # 160 px tiles with >= 32 px overlap: 3 columns over 300 px, 2 rows over 200 px
    assert len((out / "tiles.jsonl").read_text().splitlines()) == 6
    noise_image(300, 100, 1).save(tmp_path / "map.png")
    assert main([*args, "--out", str(tmp_path / "other")]) == 2  # the last --out wins
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("socioseg segment-area: error:") and "map" in err
