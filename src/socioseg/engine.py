"""The method, once: stage 1 -> SAM -> render -> stage 2 -> SAM for N prompts x G responses.

Serving (:class:`socioseg.socioreasoner.SocioReasoner`) is this engine at G = 1 without rewards;
GRPO rollouts (:func:`socioseg.train.rollout.collect_rollouts`) are the engine at G with a reward
callable. The engine imports neither of them.

What a group shares is computed once for it:

- preparation: frames, the two VLM-frame images and the SAM2 embedding, once per satellite.
  SAM2 works in the VLM frame, as in the released system: it embeds the same resized
  satellite image the VLM sees and takes the model's coordinates unchanged (a family that
  answers in relative 0-1000 coordinates, Qwen3-VL, has them moved to the VLM frame first);
  each mask moves to the satellite image's own size through
  :class:`~socioseg.geometry.Frames`;
- each distinct prompt is templated, tokenized and preprocessed once (:class:`Prompt`
  keeps the result, so the update needs no second preprocessing), and with ``share_prefix``
  its vision tower and prefill run once, the cache serving its G continuations;
- stage 2: ``released`` renders every stage-1 response and samples ONE stage-2 response from
  each; ``paper`` (Algorithm 1) renders only the best stage-1 response of a group (highest
  reward) and samples G stage-2 responses from that one prompt, sharing its prefill too.

``share_prefix=False`` is the reference path: every row is preprocessed, encoded and
prefilled on its own, as G independent copies of its prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from socioseg import prompts
from socioseg.answers import parse_answer
from socioseg.geometry import VLM_FACTOR, Frames
from socioseg.models.processor import EncodedPrompt
from socioseg.models.vlm import Generation, SamplingSettings, VisionLanguageModel
from socioseg.render import feedback_images
from socioseg.types import MODES, ParsedAnswer, StageResult

STRATEGIES = ("released", "paper")

# (stage, sample index, response text, mask at the satellite's size, stage-1 response text or
# None) -> a reward object with a float ``total``.
RewardFn = Callable[[str, int, str, np.ndarray, str | None], object]


class PromptTooLongError(ValueError):
    """A prompt (mostly image tokens) exceeds the prompt token budget."""


def vlm_images(
    sat: Image.Image, map_: Image.Image, frames: Frames
) -> tuple[Image.Image, Image.Image]:
    """``(map, satellite)`` as RGB in the satellite's VLM frame.

    Both images take the satellite's VLM frame size (Qwen's BICUBIC resample), so the
    processor's own resize is the identity and both images share one coordinate frame.
    """
    return vlm_image(map_, frames), vlm_image(sat, frames)


def vlm_image(image: Image.Image, frames: Frames) -> Image.Image:
    """``image`` as RGB in the VLM frame (Qwen's BICUBIC resample): what the policy reads and
    what SAM2 embeds."""
    return image.convert("RGB").resize(frames.vlm_size, Image.Resampling.BICUBIC)


@dataclass
class Job:
    """One sample's shared state: query, satellite (image frame), frames, VLM-frame images
    and the SAM2 embedding; ``timings`` collects its seconds per phase."""

    query: str
    sat: Image.Image
    frames: Frames
    vlm_map: Image.Image
    vlm_sat: Image.Image
    embedding: object
    timings: dict[str, float] = field(default_factory=dict)


def prepare(
    segmenter,
    sat: Image.Image,
    map_: Image.Image,
    query: str,
    min_pixels: int,
    max_pixels: int,
    factor: int = VLM_FACTOR,
) -> Job:
    """Frames, VLM-frame images and the SAM2 embedding of one sample (once per satellite).

    ``factor``: the policy family's frame multiple (``vlm.family.factor``)."""
    started = time.perf_counter()
    frames = Frames.for_image(sat.size, min_pixels, max_pixels, factor)
    vlm_map, vlm_sat = vlm_images(sat, map_, frames)
    resized = time.perf_counter()
    embedding = segmenter.embed(vlm_sat)  # SAM2 sees the image the VLM sees
    timings = {"resize": resized - started, "sam_embed": time.perf_counter() - resized}
    return Job(query, sat, frames, vlm_map, vlm_sat, embedding, timings)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs.

    mode: ``two-stage``, ``stage1`` or ``single-stage`` (stage 1 with the single-stage prompt).
    group_size: G responses per sample. strategy: stage-2 groups, ``released`` or ``paper``.
    stage1 / stage2: sampling per stage (``max_new_tokens`` and seed included).
    share_prefix: encode, preprocess and prefill each distinct prompt once (False: the
        reference path, one independent copy per row).
    rows_per_call: most response rows per ``generate`` call (None: all of a stage at once).
    max_prompt_tokens: prompt budget; longer prompts raise :class:`PromptTooLongError`.
    """

    mode: str = "two-stage"
    group_size: int = 1
    strategy: str = "released"
    stage1: SamplingSettings = field(default_factory=SamplingSettings)
    stage2: SamplingSettings = field(default_factory=SamplingSettings)
    share_prefix: bool = True
    rows_per_call: int | None = None
    max_prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.group_size < 1 or (self.rows_per_call is not None and self.rows_per_call < 1):
            raise ValueError("group_size and rows_per_call must be >= 1")


@dataclass(frozen=True)
class Prompt:
    """One chat prompt: user text and its two images (map, satellite) in the VLM frame.

    In an engine run, ``job`` is the sample it asks about and ``encoded`` its tokenized,
    preprocessed form when the run shares prefixes (None on the reference path, which encodes
    every row on its own). Supervised training builds prompts with the text and images only.
    """

    text: str
    images: tuple[Image.Image, Image.Image]
    job: int = 0
    encoded: EncodedPrompt | None = None


@dataclass(frozen=True)
class Sampled:
    """One response row. ``prompt`` indexes :attr:`Run.prompts`; ``source`` is the stage-1
    row a stage-2 row continues; ``reward`` is the reward callable's result (or None)."""

    stage: str
    job: int
    prompt: int
    source: int | None
    generation: Generation
    result: StageResult
    reward: object | None


@dataclass
class Run:
    """Everything one engine call produced. ``stage1`` and ``stage2`` hold N x G rows each,
    sample-major (``stage2`` is empty unless the mode is two-stage); ``shared``: the prompts
    carry their encodings (``settings.share_prefix``); ``timings`` are the call's seconds per
    phase."""

    jobs: list[Job]
    shared: bool
    prompts: list[Prompt]
    stage1: list[Sampled]
    stage2: list[Sampled]
    timings: dict[str, float]


def run(
    vlm: VisionLanguageModel,
    segmenter,
    jobs: Sequence[Job],
    settings: EngineSettings,
    reward: RewardFn | None = None,
) -> Run:
    """Run the method for every job with ``settings.group_size`` responses per stage."""
    if settings.strategy == "paper" and settings.mode == "two-stage" and reward is None:
        raise ValueError("the paper strategy picks the best stage-1 response: it needs rewards")
    out = Run(list(jobs), settings.share_prefix, [], [], [], {})
    first_text = (
        prompts.single_stage_text if settings.mode == "single-stage" else prompts.stage1_text
    )
    entries = [(i, first_text(j.query), (j.vlm_map, j.vlm_sat)) for i, j in enumerate(jobs)]
    firsts = _add_prompts(vlm, out, entries)
    g = settings.group_size
    out.stage1 = _stage(vlm, segmenter, out, "stage1", firsts, g, settings, reward)
    if settings.mode == "two-stage":
        out.stage2 = _stage2(vlm, segmenter, out, settings, reward)
    return out


def _stage2(vlm, segmenter, out: Run, settings: EngineSettings, reward) -> list[Sampled]:
    """Render the continued stage-1 responses (all, or each group's best), then stage 2."""
    g = settings.group_size
    sources = list(range(len(out.stage1)))
    if settings.strategy == "paper":
        sources = [
            max(range(b * g, (b + 1) * g), key=lambda k: out.stage1[k].reward.total)
            for b in range(len(out.jobs))
        ]
    started = time.perf_counter()
    entries = []
    for k in sources:  # render each continued stage-1 response once
        s1 = out.stage1[k]
        job = out.jobs[s1.job]
        boxes = [target.box for target in s1.result.parsed.targets]
        images = feedback_images(job.vlm_map, job.vlm_sat, boxes, s1.result.mask)
        text = prompts.stage2_text(job.query, s1.result.parsed.answer_text)
        entries.append((s1.job, text, images))
    _share_time(out, "render", started)
    rendered = _add_prompts(vlm, out, entries)
    # released: each rendered prompt continues one stage-1 row (the group is the stage-1
    # group); paper: the group's G responses share the one rendered prompt.
    per_prompt = g if settings.strategy == "paper" else 1
    return _stage(vlm, segmenter, out, "stage2", rendered, per_prompt, settings, reward, sources)


def _add_prompts(vlm, out: Run, entries) -> list[int]:
    """Append ``(job, text, images)`` prompts, encoded once each when the run shares
    prefixes; returns their indices."""
    started = time.perf_counter()
    encoded = [None] * len(entries)
    if out.shared and entries:
        encoded = vlm.encode_prompts([t for _, t, _ in entries], [list(i) for _, _, i in entries])
    first = len(out.prompts)
    for (job, text, images), enc in zip(entries, encoded, strict=True):
        out.prompts.append(Prompt(text, tuple(images), job, enc))
    _share_time(out, "preprocess", started)
    return list(range(first, len(out.prompts)))


def _stage(vlm, segmenter, out, name, prompt_ids, per_prompt, settings, reward, sources=None):
    """``per_prompt`` responses per prompt, their SAM masks and (optionally) rewards."""
    sampling = settings.stage1 if name == "stage1" else settings.stage2
    started = time.perf_counter()
    chosen = [out.prompts[i] for i in prompt_ids]
    generations = _generate(vlm, chosen, per_prompt, sampling, settings, out.shared)
    _share_time(out, f"{name}_generate", started)
    rows = [i for i in prompt_ids for _ in range(per_prompt)]
    results = []
    for k, (index, generation) in enumerate(zip(rows, generations, strict=True)):
        prompt = out.prompts[index]
        job = out.jobs[prompt.job]
        started = time.perf_counter()
        parsed = parse_in_vlm_frame(vlm, generation.text, job.frames)
        targets = job.frames.targets(parsed.targets, "vlm", "image")
        mask_vlm, scores = segmenter.segment_scored(job.embedding, parsed.targets)
        mask = job.frames.mask(mask_vlm, "vlm", "image")
        _add_time(out, job, f"{name}_sam", started)
        result = StageResult(
            name,
            prompt.text,
            generation.text,
            parsed,
            targets,
            mask,
            scores,
            generation.mean_logprob,
        )
        source = None if sources is None else sources[k // per_prompt]
        score = None
        if reward is not None:
            started = time.perf_counter()
            stage1_text = None if source is None else out.stage1[source].generation.text
            score = reward(name, prompt.job, generation.text, mask, stage1_text)
            _add_time(out, job, "rewards", started)
        results.append(Sampled(name, prompt.job, index, source, generation, result, score))
    return results


def parse_in_vlm_frame(vlm, text: str, frames: Frames) -> ParsedAnswer:
    """Parse a response in its family's coordinate convention; targets in the VLM frame.

    Problems (boxes leaving the frame) are judged in the frame the model answered in.
    """
    answer_frame = vlm.family.answer_frame
    parsed = parse_answer(text, frames.size(answer_frame))
    if answer_frame == "vlm":
        return parsed
    return replace(parsed, targets=frames.targets(parsed.targets, answer_frame, "vlm"))


def _generate(vlm, stage_prompts, per_prompt, sampling, settings, shared) -> list[Generation]:
    """``per_prompt`` generations per prompt, prompt-major, in calls of at most
    ``rows_per_call`` rows (at least one prompt's group per call); ``shared``: the run's
    choice (:attr:`Run.shared`), whether the prompts carry their encodings."""
    per_call = settings.rows_per_call or len(stage_prompts) * per_prompt
    step = max(1, per_call // per_prompt)
    out = []
    for start in range(0, len(stage_prompts), step):
        chunk = stage_prompts[start : start + step]
        call = sampling
        if sampling.seed is not None:
            call = replace(sampling, seed=sampling.seed + 1_000_003 * start)
        if shared:
            inputs = vlm.collate([p.encoded for p in chunk])
            _check_length(inputs, settings.max_prompt_tokens)
            out.extend(vlm.generate(inputs, call, per_prompt))
        else:
            copies = [p for p in chunk for _ in range(per_prompt)]
            inputs = vlm.encode([p.text for p in copies], [list(p.images) for p in copies])
            _check_length(inputs, settings.max_prompt_tokens)
            out.extend(vlm.generate(inputs, call))
    return out


def _check_length(inputs, max_prompt_tokens: int | None) -> None:
    lengths = inputs["attention_mask"].sum(dim=1)
    longest = int(lengths.max())
    if max_prompt_tokens is not None and longest > max_prompt_tokens:
        image_tokens = int(inputs["mm_token_type_ids"].sum(dim=1).max())
        raise PromptTooLongError(
            f"a prompt has {longest} tokens ({image_tokens} of them image tokens), over "
            f"rollout.max_prompt_tokens = {max_prompt_tokens}: lower model.max_pixels or raise "
            "the budget"
        )


def _share_time(out: Run, key: str, started: float) -> None:
    """Add a batched phase's seconds to the run and an equal share to every job."""
    seconds = time.perf_counter() - started
    out.timings[key] = out.timings.get(key, 0.0) + seconds
    for job in out.jobs:
        job.timings[key] = job.timings.get(key, 0.0) + seconds / max(len(out.jobs), 1)


def _add_time(out: Run, job: Job, key: str, started: float) -> None:
    seconds = time.perf_counter() - started
    out.timings[key] = out.timings.get(key, 0.0) + seconds
    job.timings[key] = job.timings.get(key, 0.0) + seconds
