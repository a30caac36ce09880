"""Training logs: one CSV row per logged step beside the TensorBoard events; resume-safe."""

import csv

import pytest

from socioseg.train.runlog import RunLog


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_rows_follow_steps_and_a_resume_drops_rows_after_its_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.log(step, {"reward": step / 2, "elapsed_s": 10.0 * step}, csv_only=("elapsed_s",))
    log.close()
    assert [r["step"] for r in _rows(tmp_path / "metrics.csv")] == ["1", "2", "3"]
    assert _rows(tmp_path / "metrics.csv")[1] == {"step": "2", "reward": "1", "elapsed_s": "20"}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    resumed = RunLog(tmp_path, start_step=2)  # the last checkpoint was step 2
    resumed.log(3, {"reward": 9.0, "elapsed_s": 1.0})
    resumed.close()
    assert [(r["step"], r["reward"]) for r in _rows(tmp_path / "metrics.csv")] == [
        ("1", "0.5"),
        ("2", "1"),
        ("3", "9"),
    ]


def test_a_metric_missing_from_the_first_row_is_an_error_not_dropped(tmp_path):
    log = RunLog(tmp_path)
    log.log(1, {"giou": 0.5}, table="validation")
    with pytest.raises(ValueError):
        log.log(2, {"giou": 0.5, "ciou": 0.4}, table="validation")
    log.close()
