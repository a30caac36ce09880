"""Two-stage GRPO rollouts: G stage-1 samples per prompt, SAM, render, stage-2 samples, rewards.

Strategies (``RolloutSettings.strategy``):

- ``released`` (the released training code): every stage-1 sample is rendered and gets ONE
  stage-2 sample, so both stages have groups of G responses per prompt.
- ``paper`` (the paper's Algorithm 1): only the best stage-1 sample (highest stage-1 reward)
  is rendered, and G stage-2 samples are drawn from it.

Each satellite image is embedded by SAM2 once; all 2G SAM calls of its group reuse it. SAM2
works in the VLM frame and answers are read as in serving (:func:`socioseg.answers.parse_answer`),
so what is trained is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from socioseg import prompts
from socioseg.answers import answer_text, clean_response, parse_answer
from socioseg.geometry import Frames
from socioseg.metrics import mask_iou
from socioseg.pipeline import vlm_images
from socioseg.render import feedback_images
from socioseg.rl.config import RolloutSettings
from socioseg.rl.rewards import RewardParts, gt_boxes_from_mask, stage1_rewards, stage2_rewards
from socioseg.vlm import SamplingSettings, VisionLanguageModel


class PromptTooLongError(ValueError):
    """A prompt (mostly image tokens) exceeds ``rollout.max_prompt_tokens``."""


@dataclass(frozen=True)
class Prompt:
    """One chat prompt: user text and its two images (map, satellite) in the VLM frame."""

    text: str
    images: tuple[Image.Image, Image.Image]


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
    contiguous groups of G; ``prompts`` are indexed by ``Response.prompt``."""

    prompts: list[Prompt]
    responses: list[Response]
    group_size: int

    def stage(self, name: str) -> list[Response]:
        return [r for r in self.responses if r.stage == name]


@dataclass
class _Item:
    frames: Frames
    gt: np.ndarray
    gt_boxes_vlm: list[list[float]]
    embedding: object
    images: tuple[Image.Image, Image.Image]  # (map, satellite) in the VLM frame
    query: str


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
    items = [_prepare(segmenter, sample, min_pixels, max_pixels) for sample in samples]
    all_prompts = [Prompt(prompts.stage1_text(it.query), it.images) for it in items]
    responses, coarse = _stage1(
        policy, segmenter, items, all_prompts, settings, reward_variant, seed
    )
    responses += _stage2(
        policy, segmenter, items, all_prompts, responses, coarse, settings, reward_variant, seed + 1
    )
    return Rollouts(all_prompts, responses, settings.group_size)


def _stage1(policy, segmenter, items, all_prompts, settings, variant, seed):
    """G stage-1 responses per item, their coarse masks and rewards (groups = items)."""
    g = settings.group_size
    rows = [i for i in range(len(items)) for _ in range(g)]
    responses, coarse = [], []
    generations = _generate(policy, all_prompts, rows, settings, seed)
    for k, (index, generation) in enumerate(zip(rows, generations, strict=True)):
        item = items[index]
        parsed = parse_answer(generation.text, item.frames.vlm_size)
        mask = _segment(segmenter, item, parsed)
        coarse.append((parsed, mask))
        reward = stage1_rewards(generation.text, item.gt_boxes_vlm, variant)
        iou = mask_iou(mask, item.gt)
        responses.append(_response("stage1", k // g, index, generation, reward, iou, settings))
    return responses, coarse


def _stage2(policy, segmenter, items, all_prompts, stage1, coarse, settings, variant, seed):
    """Stage-2 responses: one per stage-1 response (released) or G from the best (paper)."""
    g = settings.group_size
    sources = []  # the stage-1 response each stage-2 row continues
    for b in range(len(items)):
        picks = list(range(b * g, (b + 1) * g))
        if settings.strategy == "paper":
            picks = [max(picks, key=lambda k: stage1[k].reward.total)] * g
        sources += picks
    prompt_of = {}
    for k in dict.fromkeys(sources):  # render each distinct stage-1 response once
        prompt_of[k] = len(all_prompts)
        all_prompts.append(_stage2_prompt(items[stage1[k].prompt], *coarse[k]))
    rows = [prompt_of[k] for k in sources]
    responses = []
    generations = _generate(policy, all_prompts, rows, settings, seed)
    for j, (k, index, generation) in enumerate(zip(sources, rows, generations, strict=True)):
        item = items[stage1[k].prompt]
        final = _segment(segmenter, item, parse_answer(generation.text, item.frames.vlm_size))
        stage1_answer = answer_text(clean_response(stage1[k].text))
        reward = stage2_rewards(generation.text, stage1_answer, final, item.gt, variant)
        group = len(items) + j // g
        responses.append(
            _response(
                "stage2", group, index, generation, reward, mask_iou(final, item.gt), settings
            )
        )
    return responses


def _prepare(segmenter, sample, min_pixels: int, max_pixels: int) -> _Item:
    frames = Frames.for_image(sample.sat.size, min_pixels, max_pixels)
    gt = np.asarray(sample.mask, dtype=bool)
    boxes = gt_boxes_from_mask(gt)
    boxes_vlm = frames.points_array(np.asarray(boxes, dtype=float).reshape(-1, 4), "image", "vlm")
    images = vlm_images(sample.sat, sample.map, frames)
    return _Item(
        frames=frames,
        gt=gt,
        gt_boxes_vlm=boxes_vlm.tolist(),
        embedding=segmenter.embed(images[1]),  # the satellite image in the VLM frame
        images=images,
        query=sample.query,
    )


def _segment(segmenter, item: _Item, parsed) -> np.ndarray:
    """SAM2's mask of a parsed answer (VLM frame) at the satellite's size, as in serving."""
    return item.frames.mask(segmenter.segment(item.embedding, parsed.targets), "vlm", "image")


def _stage2_prompt(item: _Item, parsed, mask) -> Prompt:
    boxes = [t.box for t in parsed.targets]
    images = feedback_images(*item.images, boxes, mask)
    return Prompt(prompts.stage2_text(item.query, parsed.answer_text), images)


def _generate(policy, all_prompts, rows, settings: RolloutSettings, seed: int):
    """Generate one response per entry of ``rows`` (indices into ``all_prompts``), in chunks."""
    out = []
    chunk = settings.generation_batch_size
    for start in range(0, len(rows), chunk):
        batch = [all_prompts[i] for i in rows[start : start + chunk]]
        inputs = policy.encode([p.text for p in batch], [list(p.images) for p in batch])
        check_prompt_length(inputs, settings.max_prompt_tokens)
        sampling = SamplingSettings(
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            max_new_tokens=settings.max_response_tokens,
            seed=seed * 1_000_003 + start,
        )
        out.extend(policy.generate(inputs, sampling))
    return out


def check_prompt_length(inputs, max_prompt_tokens: int) -> None:
    """Raise :class:`PromptTooLongError` when a prompt row exceeds the budget."""
    lengths = inputs["attention_mask"].sum(dim=1)
    longest = int(lengths.max())
    if longest > max_prompt_tokens:
        image_tokens = int(inputs["mm_token_type_ids"].sum(dim=1).max())
        raise PromptTooLongError(
            f"a prompt has {longest} tokens ({image_tokens} of them image tokens), over "
            f"rollout.max_prompt_tokens = {max_prompt_tokens}: lower model.max_pixels or raise "
            "the budget"
        )


def _response(stage, group, prompt, generation, reward, iou, settings) -> Response:
    truncated = len(generation.token_ids) >= settings.max_response_tokens
    return Response(
        stage, group, prompt, generation.token_ids, generation.text, reward, float(iou), truncated
    )
