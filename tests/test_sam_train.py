"""SAM2 supervised training: entities and prompts from GT masks, SAM's loss, `train-sam`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from socioseg.cli import main
from socioseg.data.synth import generate_sample, write_dataset
from socioseg.models.builders import build_tiny_sam
from socioseg.models.segmenter import Preprocessing, Segmenter, preprocess
from socioseg.train.config import ConfigError
from socioseg.train.rewards import gt_boxes_from_mask
from socioseg.train.sam import SamTrainConfig, entities, make_batch, sam_loss, sample_target
from tests.runs import Killed, kill_at, metric_rows


def _two_blobs() -> np.ndarray:
    mask = np.zeros((64, 80), dtype=bool)
    mask[5:20, 10:30] = True  # 15 x 20
    mask[40:60, 50:75] = True  # 20 x 25
    mask[2:4, 70:72] = True  # area 1 by contour: dropped, as for the reward's GT boxes
    return mask


def test_entities_are_the_reward_gt_boxes_with_their_pixels():
    mask = _two_blobs()
    found = entities(mask)
    assert sorted(box for box, _ in found) == sorted(gt_boxes_from_mask(mask))
    assert sorted(int(e.sum()) for _, e in found) == [15 * 20, 20 * 25]
    for box, entity in found:
        ys, xs = np.nonzero(entity)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box


def test_prompt_points_lie_in_the_entity_and_box_jitter_is_bounded():
    (box, entity), _ = entities(_two_blobs())
    rng = np.random.default_rng(0)
    for _ in range(20):
        target = sample_target(rng, box, entity, 3, 0.1)
        assert all(entity[int(p.y), int(p.x)] for p in target.points)
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        assert np.all(np.abs(np.array(target.box.as_list()) - box) <= 0.1 * side + 1e-9)


def test_batch_prompts_are_in_the_sam_frame():
    sample = generate_sample(3, size=128)
    config = SamTrainConfig(point_prob=0.0, box_noise=0.0)
    batch = make_batch([sample], np.random.default_rng(0), config, 256, Preprocessing(size=256))
    boxes = {tuple(2.0 * np.array(b, dtype=float)) for b, _ in entities(sample.mask)}
    assert tuple(batch["input_points"][0, 0].flatten().tolist()) in boxes  # 128 -> 256: twice
    assert batch["input_labels"].tolist() == [[[2, 3]]]  # box corners, as the segmenter sends
    assert batch["pixel_values"].shape == (1, 3, 256, 256)
    assert batch["target"].shape == (1, 256, 256)
    assert abs(batch["target"].sum().item() / 4 - sample.mask.sum()) < 0.1 * sample.mask.sum()


def test_loss_of_a_perfect_prediction_is_near_zero_and_a_wrong_one_is_not():
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    good = (target * 2 - 1) * 20  # logits: +20 inside, -20 outside
    masks = torch.stack([good, -good, -good], dim=1)  # 1 x 3 x 16 x 16
    config = SamTrainConfig()
    loss, stats = sam_loss(masks, torch.tensor([[1.0, 0.0, 0.0]]), target, config)
    assert loss.item() < 1e-3 and stats["miou"] == 1.0
    loss, stats = sam_loss(masks, torch.tensor([[0.0, 1.0, 1.0]]), target, config)
    assert stats["iou_mse"] == pytest.approx(1.0) and stats["miou"] == 0.0
    # "all": the two inverted masks count too. Each: every pixel wrong by 20 logits, so the
    # focal term is alpha-weighted CE 20 (64 target pixels x 0.25, 192 others x 0.75) and
    # dice 1 - 1 / (192 + 64 + 1); the mean over three masks is 2/3 of that.
    config.multimask_loss = "all"
    loss, _ = sam_loss(masks, torch.tensor([[1.0, 0.0, 0.0]]), target, config)
    focal = (64 * 0.25 * 20 + 192 * 0.75 * 20) / 256
    assert loss.item() == pytest.approx(2 / 3 * (20 * focal + 1 - 1 / 257), rel=1e-3)


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    segmenter = Segmenter.from_pretrained(str(build_tiny_sam(tmp_path / "sam", 128)), device="cpu")
    model = segmenter.model.train()
    samples = [generate_sample(i, size=128) for i in range(2)]
    config = SamTrainConfig(point_prob=1.0)
    batch = make_batch(samples, np.random.default_rng(0), config, 128, segmenter.preprocessing)
    target = batch.pop("target")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        output = model(**batch, multimask_output=True)
        loss, _ = sam_loss(output.pred_masks[:, 0], output.iou_scores[:, 0], target, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_train_sam_command_writes_a_loadable_segmenter_and_guards_its_folder(tmp_path, capsys):
    write_dataset(tmp_path / "data", n=6, seed=0, size=128)
    sam = build_tiny_sam(tmp_path / "sam0", 128)
    out = tmp_path / "sam"
    args = ["train-sam", "--out", str(out), f"sam={sam}", f"data={tmp_path / 'data'}"]
    args += ["steps=2", "batch_size=2", "log_every=1"]
    assert main(args) == 0
    assert "sam step 2: loss" in capsys.readouterr().out
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,") and len(rows) == 3
    trained = Segmenter.from_pretrained(str(out), device="cpu")
    assert trained.input_size == 128
    before = Segmenter.from_pretrained(str(sam), device="cpu").model.state_dict()
    after = trained.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    (out / "my-notes.txt").write_text("mine")  # the user's file in a folder socioseg wrote
    assert main([*args, "--overwrite"]) == 0
    assert (out / "my-notes.txt").read_text() == "mine"  # --overwrite replaced only the model
    assert "my-notes.txt" not in json.loads((out / "training.json").read_text())["files"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main([*args[:2], str(foreign), *args[3:], "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep"


def test_embedding_weight_adds_the_embedding_penalty_to_the_same_forward(tmp_path, capsys):
    write_dataset(tmp_path / "data", n=6, seed=0, size=128)
    sam = build_tiny_sam(tmp_path / "sam0", 128)
    rows = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"sam-{weight}"
        args = ["train-sam", "--out", str(out), f"sam={sam}", f"data={tmp_path / 'data'}"]
        assert main([*args, "steps=1", "batch_size=2", f"embedding_weight={weight}"]) == 0
        header, row = (out / "metrics.csv").read_text().splitlines()
        rows[weight] = dict(zip(header.split(","), map(float, row.split(",")), strict=True))
    assert rows[0.0]["embedding_std"] == rows[1.0]["embedding_std"] > 0  # same step, same input
    assert rows[1.0]["loss"] > rows[0.0]["loss"]
    assert rows[1.0]["focal"] == rows[0.0]["focal"]
    assert main([*args, "embedding_weight=-1"]) == 2
    assert "embedding_weight must be >= 0" in capsys.readouterr().err


def test_a_failed_train_sam_leaves_nothing_beside_out_and_the_rerun_works(tmp_path, capsys):
    write_dataset(tmp_path / "data", n=4, seed=0, size=128)
    sam = build_tiny_sam(tmp_path / "sam0", 128)
    out = tmp_path / "runs" / "sam"
    args = ["train-sam", "--out", str(out), f"sam={sam}", "steps=1", "batch_size=1"]
    assert main([*args, f"data={tmp_path / 'missing'}"]) == 2  # fails after the folder is made
    assert "missing" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["sam"]  # nothing beside --out
    assert main([*args, f"data={tmp_path / 'data'}"]) == 0  # no --overwrite needed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert Segmenter.from_pretrained(str(out), device="cpu").input_size == 128


def test_a_batch_in_the_vlm_frame_is_the_image_the_pipeline_embeds():
    """With min/max pixels, SAM trains on the satellite image resized to the VLM frame (as
    ``engine.prepare`` embeds it) and the prompt lands on the same place of SAM's input."""
    from PIL import Image

    from socioseg.engine import prepare

    sample = generate_sample(3, size=128)
    frame = {"min_pixels": 112 * 112, "max_pixels": 112 * 112}  # 128 px tile -> 112 px frame
    prep = Preprocessing(size=256)
    tile = make_batch([sample], np.random.default_rng(0), SamTrainConfig(), 256, prep)
    vlm = make_batch([sample], np.random.default_rng(0), SamTrainConfig(**frame), 256, prep)
    assert torch.allclose(vlm["input_points"], tile["input_points"], atol=1e-4)
    assert torch.equal(vlm["target"], tile["target"])
    # the pixels: the tile resized to 112 px (bicubic), then to SAM's 256 px input
    small = sample.sat.convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)
    assert torch.equal(vlm["pixel_values"][0], preprocess(small, prep)[0])
    assert not torch.equal(vlm["pixel_values"], tile["pixel_values"])

    class Embeds:  # records what the pipeline hands SAM2
        def embed(self, image):
            return image

    job = prepare(Embeds(), sample.sat, sample.map, "q", 112 * 112, 112 * 112)
    assert job.embedding.size == (112, 112)
    assert torch.equal(preprocess(job.embedding, prep)[0], vlm["pixel_values"][0])
    with pytest.raises(ConfigError, match="give both"):
        SamTrainConfig(min_pixels=112 * 112)


def test_a_killed_train_sam_resumes_to_the_weights_and_log_of_an_uninterrupted_run(
    tmp_path, capsys
):
    from socioseg.train.sam import train_sam

    write_dataset(tmp_path / "data", n=6, seed=0, size=128)
    sam = build_tiny_sam(tmp_path / "sam0", 128)
    config = SamTrainConfig(
        sam=str(sam),
        data=str(tmp_path / "data"),
        steps=5,
        batch_size=2,
        log_every=1,
        save_every=2,
    )
    whole = train_sam(config, tmp_path / "whole")
    with pytest.raises(Killed):  # killed while logging step 3: the state of step 2 is kept
        train_sam(config, tmp_path / "cut", on_log=kill_at(3))
    assert not (tmp_path / "cut" / "metrics.csv").exists()  # nothing published
    args = ["train-sam", "--out", str(tmp_path / "cut"), f"sam={sam}"]
    args += [f"data={tmp_path / 'data'}", "steps=5", "batch_size=2", "log_every=1"]
    assert main([*args, "save_every=3", "--resume"]) == 2  # not the run it was
    assert "another config (save_every)" in capsys.readouterr().err
    assert main([*args, "save_every=2", "--resume"]) == 0
    assert "sam step 2:" not in capsys.readouterr().out  # from step 3 on
    # steps 1-5 once each, the same values
    assert metric_rows(tmp_path / "cut") == metric_rows(whole)
    ours, theirs = (
        Segmenter.from_pretrained(str(folder), device="cpu").model.state_dict()
        for folder in (tmp_path / "cut", whole)
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir() if "resume" in p.name) == []
