"""Two-stage GRPO rollouts: the engine (:mod:`socioseg.engine`) at G responses with rewards.

Strategies (``RolloutSettings.strategy``):

- ``released`` (the released training code): every stage-1 sample is rendered and gets ONE
  stage-2 sample, so both stages have groups of G responses per prompt.
- ``paper`` (the paper's Algorithm 1): only the best stage-1 sample (highest stage-1 reward)
  is rendered, and G stage-2 samples are drawn from it.

Each satellite image is embedded by SAM2 once; all 2G SAM calls of its group reuse it. With
``rollout.share_prefix`` each distinct prompt is preprocessed, encoded and prefilled once for
its group, and the update reuses those encodings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from socioseg import engine
from socioseg.answers import answer_text, clean_response
from socioseg.engine import Prompt, PromptTooLongError
from socioseg.metrics import mask_iou
from socioseg.models.vlm import SamplingSettings, VisionLanguageModel
from socioseg.train.config import RolloutSettings
from socioseg.train.rewards import RewardParts, gt_boxes_from_mask, stage1_rewards, stage2_rewards

__all__ = ["PromptTooLongError", "Response", "Rollouts", "collect_rollouts"]


@dataclass(frozen=True)
class Response:
    """One sampled response with its reward; the unit the policy is updated on.

    ``group``: index of its GRPO group (responses of one group share the normalisation).
    ``iou``: IoU with the GT of the mask this response produced (coarse for stage 1, final
    for stage 2).
    """

    stage: str
    group: int
    prompt: int
    token_ids: tuple[int, ...]
    text: str
    reward: RewardParts
    iou: float
    truncated: bool


@dataclass(frozen=True)
class Rollouts:
    """All responses of one step: ``responses`` hold stage-1 rows, then stage-2 rows, each in
    contiguous groups of G; ``prompts`` (distinct, with their encodings when ``shared``) are
    indexed by ``Response.prompt``; ``timings``: seconds per phase of the rollout."""

    prompts: list[Prompt]
    responses: list[Response]
    group_size: int
    shared: bool
    timings: dict[str, float]

    def stage(self, name: str) -> list[Response]:
        return [r for r in self.responses if r.stage == name]


def collect_rollouts(
    policy: VisionLanguageModel,
    segmenter,
    samples: Sequence,
    settings: RolloutSettings,
    *,
    reward_variant: str = "released",
    min_pixels: int,
    max_pixels: int,
    seed: int,
) -> Rollouts:
    """Sample, segment and score both stages for ``samples`` (objects with ``query``, ``sat``,
    ``map`` and a ``mask`` H x W bool GT at the satellite's size)."""
    factor, answer_frame = policy.family.factor, policy.family.answer_frame
    jobs = [
        engine.prepare(segmenter, s.sat, s.map, s.query, min_pixels, max_pixels, factor)
        for s in samples
    ]
    gts = [np.asarray(s.mask, dtype=bool) for s in samples]
    gt_boxes = [_gt_boxes_vlm(job, gt) for job, gt in zip(jobs, gts, strict=True)]

    def reward(stage, index, text, mask, stage1_text):
        if stage == "stage1":
            # Scored in the VLM frame whatever the family's convention, so the thresholds
            # (IoU, mean L1 in VLM pixels) mean the same for every family.
            to_vlm = None
            if answer_frame != "vlm":
                to_vlm = partial(jobs[index].frames.points_array, src=answer_frame, dst="vlm")
            return stage1_rewards(text, gt_boxes[index], reward_variant, to_vlm=to_vlm)
        stage1_answer = answer_text(clean_response(stage1_text))
        return stage2_rewards(text, stage1_answer, mask, gts[index], reward_variant)

    sampling = SamplingSettings(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        max_new_tokens=settings.max_response_tokens,
        seed=seed,
        decoding=settings.decoding,
    )
    out = engine.run(
        policy,
        segmenter,
        jobs,
        engine.EngineSettings(
            group_size=settings.group_size,
            strategy=settings.strategy,
            stage1=sampling,
            stage2=replace(sampling, seed=seed + 1),
            share_prefix=settings.share_prefix,
            rows_per_call=settings.generation_batch_size,
            max_prompt_tokens=settings.max_prompt_tokens,
        ),
        reward,
    )
    g = settings.group_size
    responses = []
    for offset, rows in ((0, out.stage1), (len(jobs), out.stage2)):
        for k, row in enumerate(rows):
            truncated = len(row.generation.token_ids) >= settings.max_response_tokens
            responses.append(
                Response(
                    row.stage,
                    offset + k // g,
                    row.prompt,
                    row.generation.token_ids,
                    row.generation.text,
                    row.reward,
                    float(mask_iou(row.result.mask, gts[row.job])),
                    truncated,
                )
            )
    return Rollouts(out.prompts, responses, g, out.shared, out.timings)


def _gt_boxes_vlm(job: engine.Job, gt: np.ndarray) -> list[list[float]]:
    """The GT mask's boxes (SPEC §4) in the VLM frame."""
    boxes = np.asarray(gt_boxes_from_mask(gt), dtype=float).reshape(-1, 4)
    return job.frames.points_array(boxes, "image", "vlm").tolist()


def policy_logprobs(policy: VisionLanguageModel, rollouts: Rollouts, batch, ids, mask, model=None):
    """Log-probs (R x T float32) of a micro-batch of responses under ``policy``.

    Shared rollouts reuse their encoded prompts: no second preprocessing, the vision tower
    once per distinct prompt of the micro-batch, the LM head only at response positions. The
    reference path (``share_prefix=False``) encodes every row again, as G independent copies.
    """
    prompts = [rollouts.prompts[r.prompt] for r in batch]
    if not rollouts.shared:
        inputs = policy.encode([p.text for p in prompts], [list(p.images) for p in prompts])
        return policy.response_logprobs(inputs, ids, mask, model)
    distinct = list(dict.fromkeys(r.prompt for r in batch))
    rows = [distinct.index(r.prompt) for r in batch]
    encoded = [rollouts.prompts[i].encoded for i in distinct]
    return policy.grouped_logprobs(encoded, rows, ids, mask, model)
