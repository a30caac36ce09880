"""SocioReasoner inference: stage 1 -> SAM -> render -> stage 2 -> SAM (SPEC §3).

Per satellite image the SAM2 embedding is computed once and reused by every prompt of both
stages. SAM2 works in the VLM frame, as in the released system: it embeds the same resized
satellite image the VLM sees and takes the model's coordinates unchanged; each stage's mask is
moved to the satellite image's own size by :class:`~socioseg.geometry.Frames` (OpenCV nearest).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from socioseg import prompts
from socioseg.answers import parse_answer
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frames, check_same_aspect
from socioseg.model_defaults import ModelDefaults
from socioseg.render import feedback_images
from socioseg.types import MODES, Prediction, StageResult
from socioseg.vlm import DEFAULT_VLM, SamplingSettings, VisionLanguageModel

DEFAULT_SAM = "facebook/sam2-hiera-large-hf"

ImageInput = Image.Image | str | Path


class InputError(ValueError):
    """An input image or query that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that decides a prediction besides the weights.

    mode: ``two-stage`` (default), ``stage1`` (stop at the coarse mask) or ``single-stage``.
    min_pixels / max_pixels: bounds of the VLM frame area (``smart_resize``).
    sampling: decoding settings; the default is the released evaluation's, seeded.
    stage2_fallback: when stage 2 yields no usable object, use the stage-1 mask instead of the
        released behaviour (an empty mask). ``Prediction.final_source`` says which happened.
    """

    mode: str = "two-stage"
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stage2_fallback: bool = False

    @classmethod
    def for_model(cls, defaults: ModelDefaults, **kwargs) -> InferenceConfig:
        """The defaults, with a model folder's own frame and token limit where it sets them."""
        sampling = kwargs.pop("sampling", SamplingSettings())
        if defaults.token_limit is not None:
            sampling = replace(sampling, max_new_tokens=defaults.token_limit)
        return cls(
            min_pixels=defaults.min_pixels or DEFAULT_MIN_PIXELS,
            max_pixels=defaults.max_pixels or DEFAULT_MAX_PIXELS,
            sampling=sampling,
            **kwargs,
        )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}"
            )


def load_image(image: ImageInput, name: str) -> Image.Image:
    """An RGB PIL image from a PIL image or a path (:func:`socioseg.images.read_image`'s rules);
    ``InputError`` naming ``name`` otherwise."""
    from socioseg.images import ImageError, read_image

    try:
        return read_image(image, name)
    except ImageError as error:
        raise InputError(str(error)) from error


def vlm_images(
    sat: Image.Image, map_: Image.Image, frames: Frames
) -> tuple[Image.Image, Image.Image]:
    """``(map, satellite)`` as RGB in the satellite's VLM frame.

    Both images take the satellite's VLM frame size (Qwen's BICUBIC resample), so the
    processor's own resize is the identity and both images share one coordinate frame.
    """
    size = frames.vlm_size
    resample = Image.Resampling.BICUBIC
    return map_.convert("RGB").resize(size, resample), sat.convert("RGB").resize(size, resample)


@dataclass
class _Job:
    """One sample moving through the stages (internal)."""

    query: str
    sat: Image.Image
    frames: Frames
    vlm_map: Image.Image
    vlm_sat: Image.Image
    embedding: object
    timings: dict[str, float] = field(default_factory=dict)


class SocioReasoner:
    """The two-stage socio-semantic segmenter: a Qwen2.5-VL policy plus a frozen SAM2."""

    def __init__(self, vlm: VisionLanguageModel, segmenter, config: InferenceConfig | None = None):
        self.vlm = vlm
        self.segmenter = segmenter
        self.config = config or InferenceConfig()

    @classmethod
    def from_pretrained(
        cls,
        vlm: str = DEFAULT_VLM,
        sam: str = DEFAULT_SAM,
        device: str | None = None,
        dtype: str | None = None,
        config: InferenceConfig | None = None,
    ) -> SocioReasoner:
        """Load both models by Hub id or local folder (see ``socioseg tiny-models`` offline).

        ``vlm="mini"`` / ``sam="mini"``: socioseg-mini (:mod:`socioseg.sources`). Without a
        ``config``, the VLM folder's own frame and decoding limits apply
        (:mod:`socioseg.model_defaults`), else the global defaults.
        """
        from socioseg.segmenter import Segmenter

        frame = (config.min_pixels, config.max_pixels) if config else (None, None)
        policy = VisionLanguageModel.from_pretrained(vlm, device, dtype, *frame)
        return cls(
            policy,
            Segmenter.from_pretrained(sam, device=device, dtype=dtype),
            config or InferenceConfig.for_model(policy.processor.defaults),
        )

    def segment(
        self, sat: ImageInput, map: ImageInput, query: str, mode: str | None = None
    ) -> Prediction:
        """Segment ``query`` on one satellite image with its map; see :meth:`segment_batch`."""
        return self.segment_batch([(sat, map, query)], mode=mode)[0]

    def segment_batch(
        self, items: Sequence[tuple[ImageInput, ImageInput, str]], mode: str | None = None
    ) -> list[Prediction]:
        """Segment many samples with batched (left-padded) generation and SAM per image.

        Args:
            items: ``(satellite, map, query)`` triples; images as PIL or file paths. Map and
                satellite must have the same aspect ratio.
            mode: overrides ``config.mode`` for this call.

        Returns:
            One :class:`Prediction` per item; masks are H x W bool at each satellite's size.
            Timings of batched steps are the batch's time divided by the batch size.
        """
        config = self.config if mode is None else replace(self.config, mode=mode)
        jobs = [
            self._prepare(sat, map_, query, config, i) for i, (sat, map_, query) in enumerate(items)
        ]
        if not jobs:
            return []
        single = config.mode == "single-stage"
        first_text = prompts.single_stage_text if single else prompts.stage1_text
        stage1 = self._run_stage(
            jobs,
            [first_text(job.query) for job in jobs],
            "stage1",
            config,
            images=[[job.vlm_map, job.vlm_sat] for job in jobs],
            seed_offset=0,
        )
        if config.mode == "two-stage":
            return self._refine(jobs, stage1, config)
        source = "single-stage" if single else "stage1"
        return [
            self._prediction(job, config, s1, None, s1.mask, source)
            for job, s1 in zip(jobs, stage1, strict=True)
        ]

    def _refine(self, jobs, stage1, config: InferenceConfig) -> list[Prediction]:
        """Stage 2: draw the stage-1 results, ask for points per box, segment again."""
        started = time.perf_counter()
        feedback = [self._feedback(job, s1) for job, s1 in zip(jobs, stage1, strict=True)]
        self._share_time(jobs, "render", started)
        texts = [
            prompts.stage2_text(job.query, s1.parsed.answer_text)
            for job, s1 in zip(jobs, stage1, strict=True)
        ]
        stage2 = self._run_stage(jobs, texts, "stage2", config, images=feedback, seed_offset=1)
        predictions = []
        for job, s1, s2, (fb_map, fb_sat) in zip(jobs, stage1, stage2, feedback, strict=True):
            mask, source = s2.mask, "stage2"
            if not s2.parsed.targets:  # released behaviour: empty; optionally the coarse mask
                fallback = config.stage2_fallback
                mask = s1.mask if fallback else np.zeros_like(s1.mask)
                source = "stage1-fallback" if fallback else "empty"
            predictions.append(self._prediction(job, config, s1, s2, mask, source, fb_map, fb_sat))
        return predictions

    def _prepare(self, sat, map_, query: str, config: InferenceConfig, index: int) -> _Job:
        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"item {index}: the query is empty")
        sat_name, map_name = _input_name(sat, "satellite image"), _input_name(map_, "map image")
        sat_image, map_image = load_image(sat, sat_name), load_image(map_, map_name)
        try:
            check_same_aspect(sat_image.size, map_image.size, sat_name, map_name)
        except ValueError as error:
            raise InputError(str(error)) from error
        frames = Frames.for_image(sat_image.size, config.min_pixels, config.max_pixels)
        vlm_map, vlm_sat = vlm_images(sat_image, map_image, frames)
        loaded = time.perf_counter()
        embedding = self.segmenter.embed(vlm_sat)
        timings = {"load": loaded - started, "sam_embed": time.perf_counter() - loaded}
        return _Job(query.strip(), sat_image, frames, vlm_map, vlm_sat, embedding, timings)

    def _run_stage(self, jobs, texts, name, config, images, seed_offset):
        started = time.perf_counter()
        sampling = config.sampling
        if sampling.seed is not None:
            sampling = replace(sampling, seed=sampling.seed + seed_offset)
        generations = self.vlm.generate(self.vlm.encode(texts, images), sampling)
        self._share_time(jobs, f"{name}_generate", started)
        results = []
        for job, text, generation in zip(jobs, texts, generations, strict=True):
            started = time.perf_counter()
            parsed = parse_answer(generation.text, job.frames.vlm_size)
            targets = job.frames.targets(parsed.targets, "vlm", "image")
            mask_vlm, scores = self.segmenter.segment_scored(job.embedding, parsed.targets)
            mask = job.frames.mask(mask_vlm, "vlm", "image")
            job.timings[f"{name}_sam"] = time.perf_counter() - started
            logprob = generation.mean_logprob
            stage = StageResult(name, text, generation.text, parsed, targets, mask, scores, logprob)
            results.append(stage)
        return results

    @staticmethod
    def _feedback(job: _Job, stage1: StageResult) -> tuple[Image.Image, Image.Image]:
        boxes = [target.box for target in stage1.parsed.targets]
        return feedback_images(job.vlm_map, job.vlm_sat, boxes, stage1.mask)

    @staticmethod
    def _share_time(jobs: list[_Job], key: str, started: float) -> None:
        share = (time.perf_counter() - started) / len(jobs)
        for job in jobs:
            job.timings[key] = share

    @staticmethod
    def _prediction(job, config, stage1, stage2, mask, source, fb_map=None, fb_sat=None):
        return Prediction(
            query=job.query,
            mode=config.mode,
            mask=mask,
            stage1=stage1,
            stage2=stage2,
            image_size=job.frames.image_size,
            vlm_size=job.frames.vlm_size,
            final_source=source,
            feedback_map=fb_map,
            feedback_sat=fb_sat,
            timings=dict(job.timings),
        )


def _input_name(image: ImageInput, default: str) -> str:
    return str(image) if isinstance(image, str | Path) else default
