"""Rollouts on the engine: the shared path and the reference path give the same responses,
rewards and update log-probs."""

import pytest
import torch

from socioseg.data import load_example
from socioseg.models.vlm import VisionLanguageModel, pad_right
from socioseg.train.config import RolloutSettings
from socioseg.train.rollout import collect_rollouts, policy_logprobs
from tests.test_trainer import scripted_generate


@pytest.mark.parametrize("strategy", ["released", "paper"])
def test_shared_and_reference_rollouts_agree(tiny_models, tiny_segmenter, strategy):
    policy = VisionLanguageModel.from_pretrained(str(tiny_models[0]), device="cpu")
    scripted_generate(policy)  # the same texts on both paths: same seed, same row count
    samples = [load_example(0), load_example(1)]
    out = {}
    for share in (True, False):
        settings = RolloutSettings(group_size=3, strategy=strategy, share_prefix=share)
        out[share] = collect_rollouts(
            policy, tiny_segmenter, samples, settings, min_pixels=3136, max_pixels=12544, seed=3
        )
    a, b = out[True], out[False]
    assert [(r.text, r.reward, r.iou, r.group) for r in a.responses] == [
        (r.text, r.reward, r.iou, r.group) for r in b.responses
    ]
    assert all(p.encoded is not None for p in a.prompts)
    assert all(p.encoded is None for p in b.prompts)
    pad = policy.processor.tokenizer.pad_token_id
    for start in range(0, len(a.responses), 4):  # micro-batches mixing prompts and stages
        logps = []
        for rollouts in (a, b):
            batch = rollouts.responses[start : start + 4]
            ids, mask = pad_right([r.token_ids for r in batch], pad)
            with torch.no_grad():
                logps.append(policy_logprobs(policy, rollouts, batch, ids, mask) * mask)
        torch.testing.assert_close(logps[0], logps[1], rtol=1e-5, atol=1e-5)
