"""Run folders and checkpoints from elsewhere: no unpickling, fallback, refusal to mix runs."""

import json
import pathlib
import shutil

import pytest
import torch

from socioseg.cli import main
from socioseg.train import checkpoint
from tests.test_trainer import config, trainer


class Payload:
    """Pickled, it asks the loader to create ``path``: code running on load."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def two_checkpoints(tiny_models, synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer(config(tiny_models, synth_dir, "steps=2", "save_every=1"), out).train()
    return out


def copy_run(source, tmp_path):
    shutil.copytree(source, tmp_path / "run")
    return tmp_path / "run"


def record_size(ckpt, name):
    """Make ``complete.json`` agree with the file as it is now (the attacker can too)."""
    marker = ckpt / checkpoint.COMPLETE_FILE
    sizes = json.loads(marker.read_text())
    sizes["files"][name] = (ckpt / name).stat().st_size
    marker.write_text(json.dumps(sizes))


@pytest.mark.parametrize("name", ["optimizer.pt", "rng-rank0.pt"])
def test_a_pickle_payload_in_a_checkpoint_never_runs(
    tiny_models,
    synth_dir,
    two_checkpoints,
    tmp_path,
    name,
):
    run = copy_run(two_checkpoints, tmp_path)
    ran = tmp_path / "payload-ran"
    torch.save({"optimizer": Payload(ran), "scheduler": {}}, run / "checkpoint-2" / name)
    record_size(run / "checkpoint-2", name)
    resumed = trainer(config(tiny_models, synth_dir, "steps=3"), run, resume=True)
    assert not ran.exists()
    assert resumed.resume_from == run / "checkpoint-1" and resumed.step == 1
    (note,) = resumed.resume_notes
    assert note.startswith(f"checkpoint-2 skipped: {name} cannot be loaded safely")
    # the payload is live: an unsafe load would have run it
    torch.load(run / "checkpoint-2" / name, weights_only=False)
    assert ran.exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "model.safetensors is missing or truncated"),
        ("unmark", "incomplete (no complete.json)"),
        ("corrupt", "optimizer.pt cannot be loaded safely"),
    ],
)
def test_resume_falls_back_to_the_newest_complete_checkpoint(
    two_checkpoints, tmp_path, damage, reason
):
    run = copy_run(two_checkpoints, tmp_path)
    newest = run / "checkpoint-2"
    if damage == "truncate":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "unmark":
        (newest / checkpoint.COMPLETE_FILE).unlink()
    else:
        (newest / "optimizer.pt").write_bytes(b"\0" * (newest / "optimizer.pt").stat().st_size)
    path, notes = checkpoint.latest(run)
    assert path == run / "checkpoint-1"
    assert len(notes) == 1 and notes[0].startswith(f"checkpoint-2 skipped: {reason}")


def test_an_existing_run_folder_is_refused_unless_resumed_or_overwritten(
    tiny_models, tmp_path, capsys
):
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "config.yaml").write_text("steps: 4\n")
    (run / "notes.txt").write_text("mine")
    args = ["train", "--out", str(run), f"model.vlm={tiny_models[0]}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err
    assert main([*args, "--resume", "--overwrite"]) == 2
    checkpoint.prepare_run_dir(run, resume=True, overwrite=False)  # resuming is allowed
    checkpoint.prepare_run_dir(run, resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # only the run's files went
    checkpoint.prepare_run_dir(run, resume=False, overwrite=False)  # now a fresh folder
