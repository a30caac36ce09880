"""Confidences carried by predictions: answer token log-probs and SAM's predicted IoUs."""

from __future__ import annotations

import pytest
import torch

from socioseg.models.vlm import SamplingSettings
from socioseg.types import Box, Point, Target
from tests.conftest import noise_image


@pytest.mark.parametrize("greedy", [True, False])
def test_mean_logprob_is_the_policy_probability_of_the_answer(tiny_vlm, greedy):
    inputs = tiny_vlm.encode(["short", "a much longer prompt"], [[noise_image(56, 84)] * 2] * 2)
    sampling = SamplingSettings(greedy=greedy, top_k=3, max_new_tokens=8, seed=1)
    generations = tiny_vlm.generate(inputs, sampling)
    config = tiny_vlm._generation_config(sampling)
    config.output_logits, config.return_dict_in_generate = True, True
    torch.manual_seed(1)
    with torch.no_grad():
        out = tiny_vlm.model.generate(**inputs, generation_config=config)
    response = out.sequences[:, inputs["input_ids"].shape[1] :]
    for row, generation in enumerate(generations):
        assert tuple(response[row, : len(generation.token_ids)].tolist()) == generation.token_ids
        total = 0.0
        for step, token in enumerate(generation.token_ids):
            logits = out.logits[step][row].float().clone()  # raw: before top-k or temperature
            logits[tiny_vlm.processor.vision_token_ids] = -torch.inf  # never generated
            total += float(torch.log_softmax(logits, -1)[token])
        assert generation.mean_logprob == pytest.approx(total / len(generation.token_ids), abs=1e-4)


def test_sam_scores_follow_target_order(tiny_segmenter):
    image = noise_image(96, 80)
    embedding = tiny_segmenter.embed(image)
    targets = [
        Target(Box(10, 10, 50, 40), (Point(20, 20),)),
        Target(Box(30, 20, 90, 70)),
        Target(Box(5, 30, 40, 75), (Point(15, 50),)),
    ]
    mask, scores = tiny_segmenter.segment_scored(embedding, targets)
    assert len(scores) == 3 and (mask == tiny_segmenter.segment(embedding, targets)).all()
    for target, score in zip(targets, scores, strict=True):
        alone = tiny_segmenter.segment_scored(embedding, [target])[1]
        assert alone == pytest.approx((score,), abs=1e-5)
