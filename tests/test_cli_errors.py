"""Bad input on the command line: exit 2 and exactly one line on stderr naming what to fix.

Every case here fails before a model loads (the tiny models are only named, except where a
model folder is the bad input), so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from huggingface_hub import constants

from socioseg.cli import main
from socioseg.data.synth import write_dataset
from tests.conftest import noise_image

PROGRESS = re.compile(r"\[\d\d:\d\d")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny folder-layout dataset (train 6, val 1, test 3) with levels.json."""
    root = tmp_path_factory.mktemp("cli-data")
    write_dataset(root, 10, seed=3, size=128)
    return root


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one command (argparse's exits included), without the
    lines of a progress bar the error interrupted."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, message_lines(capsys.readouterr().err)


def message_lines(err: str) -> list[str]:
    """stderr without blank lines and progress bars (tqdm's ``[00:00<...]`` lines)."""
    return [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]


def one_line(argv, capsys, *expected: str) -> str:
    code, lines = run(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    return lines[0]


def models(tiny_models) -> list[str]:
    return ["--vlm", tiny_models[0], "--sam", tiny_models[1]]


def eval_args(data, out, *extra) -> list:
    return ["eval", "--data", data, "--out", out, *extra]


def test_missing_and_relative_dataset_paths_never_reach_the_hub(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    one_line(eval_args(tmp_path / "nothing", "o"), capsys, "nothing: no such file or folder")
    one_line(eval_args("./nothing", "o"), capsys, "./nothing: no such file or folder")
    # "data/synth" looks like a Hub id, but the folder data/ exists: a missing local path.
    one_line(eval_args("data/synth", "o"), capsys, "data/synth: no such file or folder")
    # A Hub id that is not cached, offline: one line at once instead of retries.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_line(eval_args("someone/socioseg", "o"), capsys, "not in the Hub cache", "HF_HUB_OFFLINE")


def test_bad_levels_files(data, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "level.json").write_text(json.dumps({"synth-00007": "socio-banana"}))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "levels.txt").write_text("id,level\n")
    cases = {
        "missing.csv": "level file not found",
        "bad.json": "bad.json: not valid JSON",
        "level.json": "socio-banana",
        "deep.json": "deep.json: not valid JSON (nested too deeply)",
        "levels.txt": "levels.txt: unsupported level file type",
    }
    for name, message in cases.items():
        argv = eval_args(data, tmp_path / "o", "--levels", tmp_path / name)
        one_line(argv, capsys, message)


def test_out_that_is_a_file(data, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file"
    one_line(eval_args(data, out), capsys, f"--out {out} is a file; pass a folder path")
    one_line(eval_args(data, out / "sub"), capsys, f"is inside {out}, which is a file")
    argv = ["score", "--pred-dir", tmp_path, "--data", data, "--out", out]
    one_line(argv, capsys, "--out")
    one_line(["synth", out, "--n", "3"], capsys, f"OUT {out} is a file")
    one_line(["segment", "--example", "0", "--out", out], capsys, "--out")
    one_line(["train", "--out", out], capsys, "--out")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be an integer from 1 to 1,024, got '0'"),
        (["--limit", "-1"], "argument --limit: must be an integer >= 0, got '-1'"),
        (["--limit", "many"], "argument --limit: must be an integer >= 0, got 'many'"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens"),
        (["--max-pixels", "-3"], "argument --max-pixels"),
        (["--shard", "3/2"], "argument --shard: shard 3/2: need 0 <= i < n"),
        (["--max-image-pixels", "0"], "argument --max-image-pixels"),
    ],
)
def test_bad_sizes_fail_while_parsing(tmp_path, capsys, extra, message):
    # The dataset does not even exist: parsing fails first, long before any model would load.
    line = one_line(eval_args(tmp_path / "none", tmp_path / "o", *extra), capsys, message)
    assert line.startswith("socioseg eval: error:") and line.endswith("(see socioseg eval --help)")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "-5"], "argument --n: must be an integer from 1 to 10,000,000, got '-5'"),
        (["--size", "100000"], "argument --size: must be an integer from 128 to 4,096"),
        (["--workers", "0"], "argument --workers"),
    ],
)
def test_synth_bounds(tmp_path, capsys, extra, message):
    one_line(["synth", tmp_path / "s", *extra], capsys, message)
    assert not (tmp_path / "s").exists()


def test_demo_options(capsys):
    one_line(["demo", "--port", "70000"], capsys, "argument --port: must be an integer from 1 to")
    one_line(["demo", "--max-file-size", "lots"], capsys, "--max-file-size: must look like 50mb")


def test_invalid_yaml_names_the_file(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: {vlm: [unclosed\n")
    one_line(
        ["train", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "run"],
        capsys,
        "bad.yaml: not valid YAML",
    )
    one_line(["train", "--out", tmp_path / "run", "optim.lr=[1"], capsys, "override 'optim.lr=[1'")


def test_deep_question_json_is_one_line_or_skipped(data, tmp_path, capsys):
    root = tmp_path / "deep"
    shutil.copytree(data / "test", root / "test")
    (root / "test" / "synth-00008" / "question.json").write_text("[" * 100_000 + "]" * 100_000)
    preds = tmp_path / "preds"
    preds.mkdir()
    for sample in ("synth-00007", "synth-00008", "synth-00009"):
        noise_image(128, 128).convert("L").save(preds / f"{sample}.png")
    argv = ["score", "--pred-dir", preds, "--data", root, "--out", tmp_path / "s"]
    one_line(argv, capsys, "'synth-00008': question.json: unreadable (nested too deeply)")
    assert main([str(a) for a in [*argv, "--on-error", "skip"]]) == 0
    rows = (tmp_path / "s" / "predictions.jsonl").read_text().splitlines()
    statuses = {json.loads(r)["id"]: json.loads(r)["status"] for r in rows}
    assert statuses == {"synth-00007": "ok", "synth-00008": "skipped", "synth-00009": "ok"}


def test_image_inputs(tiny_models, tmp_path, capsys):
    noise_image(100, 80).save(tmp_path / "sat.png")
    base = ["segment", "--map", tmp_path / "sat.png", "--query", "x", "--out", tmp_path / "o"]
    base += models(tiny_models)
    one_line([*base, "--sat", tmp_path], capsys, "is a folder, not an image file")
    one_line(
        [*base, "--sat", tmp_path / "sat.png", "--max-image-pixels", "7999"],
        capsys,
        "sat.png: 100 x 80 pixels is over the limit of 7,999 pixels",
    )
    (tmp_path / "cut.png").write_bytes((tmp_path / "sat.png").read_bytes()[:2000])
    one_line([*base, "--sat", tmp_path / "cut.png"], capsys, "cut.png is not a readable image")
    assert not (tmp_path / "o").exists()


def test_model_folders_of_the_wrong_kind(tiny_models, tmp_path, capsys, monkeypatch):
    noise_image(64, 64).save(tmp_path / "sat.png")
    base = ["segment", "--sat", tmp_path / "sat.png", "--map", tmp_path / "sat.png"]
    base += ["--query", "x", "--out", tmp_path / "o"]
    vlm, sam = tiny_models
    one_line([*base, "--vlm", sam, "--sam", sam], capsys, "holds a 'sam2' model, not Qwen2.5-VL")
    one_line([*base, "--vlm", vlm, "--sam", vlm], capsys, "holds a 'qwen2_5_vl' model, not SAM2")
    one_line([*base, "--vlm", tmp_path / "sat.png"], capsys, "is a file, not a Qwen2.5-VL")
    monkeypatch.chdir(tmp_path)
    one_line([*base, "--vlm", "./nope/vlm"], capsys, "folder not found: ./nope/vlm")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # "nope/vlm" may be a Hub id
    one_line([*base, "--vlm", "nope/vlm"], capsys, "nope/vlm is no local path and not in the Hub")


def test_score_names_the_cli_flag_not_the_python_argument(data, tmp_path, capsys):
    (tmp_path / "preds").mkdir()
    argv = ["score", "--pred-dir", tmp_path / "preds", "--data", data, "--out", tmp_path / "s"]
    line = one_line(argv, capsys, "--missing skip", "--missing empty")
    assert "missing=" not in line


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_defaults(capsys):
    synth = help_text("synth", capsys)
    assert "number of tiles (default: 200)" in synth and "tile side (px) (default: 768)" in synth
    evaluate = help_text("eval", capsys)
    assert "train, val or test (default: test)" in evaluate
    assert "(default: vvangfaye/SocioReasoner-3B)" in evaluate
    assert "samples per batch (default: 1)" in evaluate
    assert "tile side in pixels (default: 768)" in help_text("segment-area", capsys)


def test_unreadable_run_json_in_the_out_folder(data, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "run.json").write_text('{"kind": "evaluate", "con')  # cut off
    argv = ["score", "--pred-dir", tmp_path, "--data", data, "--out", tmp_path / "o"]
    one_line([*argv, "--missing", "empty"], capsys, "run.json: unreadable")


def test_corrupt_parquet_and_crossed_pixel_bounds(tmp_path, capsys, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "bad.parquet").write_text("garbage")
    argv = eval_args(tmp_path / "bad.parquet", tmp_path / "o")
    one_line(argv, capsys, "bad.parquet: not a readable data file")
    argv = ["segment", "--example", "0", "--out", tmp_path / "o"]
    one_line([*argv, "--min-pixels", "2000", "--max-pixels", "1000"], capsys, "--min-pixels 2000")


@pytest.mark.parametrize(
    "command, config, override, message",
    [
        ("train-sam", None, "steps", "must look like field=value (e.g. steps=1000)"),
        ("train-sam", "", None, "is empty; give the fields to change"),
        ("sft", "batch_size: 99999999\n", None, "batch_size must be from 1 to 1,024"),
        ("sft", None, "batch_size=99999999", "batch_size must be from 1 to 1,024"),
        ("train-sam", "steps: 100000000000000000000000\n", None, "steps must be from 1 to"),
        ("train", "optim:\n  micro_batch_size: 5000\n", None, "micro_batch_size must be from"),
    ],
)
def test_config_files_and_overrides_share_the_flags_bounds(
    tmp_path, capsys, command, config, override, message
):
    argv = [command, "--out", tmp_path / "out"]
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        argv += ["--config", tmp_path / "c.yaml"]
    if override is not None:
        argv.append(override)
    code, err = run(argv, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
