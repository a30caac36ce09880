"""``--mode sam3-concept``: SAM 3's concept segmenter given the query text alone.

The reference in these tests is written from transformers' own pieces (``Sam3Model`` loaded
directly, the CLIP tokenizer, ``torch.nn.functional.interpolate``) and the published rule of
``Sam3ImageProcessor.post_process_instance_segmentation``: score = sigmoid(logit) *
sigmoid(presence), kept when above the threshold, mask probabilities upsampled bilinearly and
thresholded at 0.5, the final mask their union.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import noise_image

W, H = 150, 100  # a non-square satellite image: frames must not be mixed up
CONCEPT_ARGS = ("segment", "--example", "0", "--mode", "sam3-concept", "--sam")


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory):
    from socioseg.models.builders import build_tiny_segmenter

    return build_tiny_segmenter(tmp_path_factory.mktemp("sam3") / "sam", "sam3")


@pytest.fixture(scope="module")
def concept(concept_dir):
    from socioseg.models.concept import ConceptSegmenter

    return ConceptSegmenter.from_pretrained(str(concept_dir), device="cpu")


def reference(folder, image: Image.Image, text: str, threshold: float):
    """(scores (Q,), kept (Q,), union mask H x W, boxes (Q, 4) in image pixels) by hand."""
    from transformers import AutoTokenizer, Sam3Model

    model = Sam3Model.from_pretrained(folder).eval()
    side = model.config.vision_config.backbone_config.image_size
    tokens = AutoTokenizer.from_pretrained(folder)(
        [text], padding="max_length", max_length=32, return_tensors="pt"
    )
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    rgb = F.interpolate(rgb, (side, side), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        out = model(
            pixel_values=(rgb - 0.5) / 0.5,
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
        )
    scores = torch.sigmoid(out.pred_logits[0]) * torch.sigmoid(out.presence_logits[0, 0])
    kept = scores > threshold
    probs = torch.sigmoid(out.pred_masks[0])[None]
    probs = F.interpolate(probs, (image.height, image.width), mode="bilinear")[0]
    union = np.zeros((image.height, image.width), dtype=bool)
    for q in np.flatnonzero(kept.numpy()):
        union |= (probs[q] > 0.5).numpy()
    boxes = out.pred_boxes[0] * torch.tensor([image.width, image.height] * 2)
    return scores.numpy(), kept.numpy(), union, boxes.numpy()


def test_union_of_instances_above_the_score_threshold(concept, concept_dir):
    from socioseg.models.concept import SCORE_THRESHOLD

    assert SCORE_THRESHOLD == 0.3  # transformers' post_process_instance_segmentation default
    image = noise_image(W, H, seed=3)
    scores, _, _, _ = reference(concept_dir, image, "school", 0.0)
    # A threshold between the scores, so that some instances are kept and some are not.
    threshold = float(np.median(scores))
    scores, kept, union, boxes = reference(concept_dir, image, "school", threshold)
    assert 0 < kept.sum() < len(kept)

    result = concept.segment(image, "school", threshold)
    assert result.mask.shape == (H, W) and result.mask.dtype == bool
    np.testing.assert_allclose(result.scores, scores, atol=1e-4)
    assert (result.kept == kept).all()
    np.testing.assert_allclose(result.boxes, boxes, atol=1e-2)
    assert 0 < union.sum() < union.size
    assert (result.mask == union).mean() > 0.999
    # Every instance alone would give a different mask: the union is of the kept ones only.
    everything = reference(concept_dir, image, "school", -1.0)[2]
    assert (everything != union).sum() > 0.01 * union.size
    assert not concept.segment(image, "school", float(scores.max()) + 1e-3).mask.any()


def test_prediction_is_in_the_satellite_frame(concept, concept_dir):
    from socioseg.models.concept import ConceptBaseline, ConceptConfig

    sat = noise_image(W, H, seed=4)
    scores = reference(concept_dir, sat, "Jinan Zoo", 0.0)[0]
    threshold = float(np.median(scores))
    baseline = ConceptBaseline(concept, ConceptConfig(score_threshold=threshold))
    prediction = baseline.segment(sat, noise_image(W // 2, H // 2), "Jinan Zoo")
    _, kept, union, boxes = reference(concept_dir, sat, "Jinan Zoo", threshold)

    assert prediction.mode == prediction.final_source == "sam3-concept"
    assert prediction.stage2 is None and prediction.image_size == (W, H)
    assert prediction.vlm_size == (112, 112)  # the tiny model's square input
    assert (prediction.mask == union).mean() > 0.999
    got = np.array([t.box.as_list() for t in prediction.stage1.targets_image])
    np.testing.assert_allclose(got, boxes[kept], atol=1e-2)
    assert len(prediction.stage1.sam_scores) == kept.sum()
    with pytest.raises(ValueError, match="sam3-concept"):
        baseline.segment(sat, sat, "Jinan Zoo", mode="two-stage")


def test_segment_and_eval_from_the_command_line(concept_dir, synth_dir, tmp_path, capsys):
    """``segment --mode sam3-concept`` writes a mask at the image size; ``eval`` reports one
    row named ``sam3-concept``; the VLM is neither loaded nor recorded."""
    from socioseg.cli import main

    out = tmp_path / "one"
    code = main(
        [*CONCEPT_ARGS, str(concept_dir), "--vlm", str(tmp_path / "no-vlm"), "--out", str(out)]
    )
    assert code == 0
    assert "sam3-concept" in capsys.readouterr().out
    from socioseg.data import load_example

    with Image.open(out / "mask.png") as mask:
        assert mask.size == load_example(0).sat.size
    assert json.loads((out / "result.json").read_text())["models"] == {"sam": str(concept_dir)}

    run = tmp_path / "eval"
    args = ["eval", "--data", str(synth_dir), "--split", "test", "--limit", "3", "--out", str(run)]
    assert main([*args, "--mode", "sam3-concept", "--sam", str(concept_dir)]) == 0
    report = (run / "report.md").read_text()
    assert "| sam3-concept | " in report
    assert "| stage 1 |" not in report and "| final |" not in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["metrics"]) == ["sam3-concept"]
    assert metrics["config"]["mode"] == "sam3-concept" and "vlm" not in metrics["models"]
    assert metrics["counts"]["scored"] == 3


def test_a_folder_that_is_not_sam3_is_one_line(tiny_models, tmp_path, capsys):
    from socioseg.cli import main

    code = main([*CONCEPT_ARGS, str(tiny_models[1]), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'sam2' model, not SAM 3" in err[0] and "--mode sam3-concept" in err[0]
    assert not (tmp_path / "out").exists()
