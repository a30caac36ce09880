"""SocioReasoner inference: the engine (:mod:`socioseg.engine`) at one response per sample.

This module checks inputs, runs the engine without rewards and turns its rows into
:class:`~socioseg.types.Prediction`; the method itself (stages, SAM, rendering) lives in the
engine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from socioseg import engine
from socioseg.engine import EngineSettings
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, check_same_aspect
from socioseg.models.defaults import ModelDefaults
from socioseg.models.vlm import DEFAULT_VLM, SamplingSettings, VisionLanguageModel
from socioseg.types import MODES, InputError, Prediction

DEFAULT_SAM = "facebook/sam2-hiera-large-hf"

ImageInput = Image.Image | str | Path


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that decides a prediction besides the weights.

    mode: ``two-stage`` (default), ``stage1`` (stop at the coarse mask) or ``single-stage``.
    min_pixels / max_pixels: bounds of the VLM frame area (``smart_resize``).
    sampling: decoding settings; the default is the released evaluation's, seeded.
    stage2_fallback: when stage 2 yields no usable object, use the stage-1 mask instead of the
        released behaviour (an empty mask). ``Prediction.final_source`` says which happened.
    stage2_max_new_tokens: the stage-2 token limit (None: ``sampling.max_new_tokens``).
    """

    mode: str = "two-stage"
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stage2_fallback: bool = False
    stage2_max_new_tokens: int | None = None

    @classmethod
    def for_model(cls, defaults: ModelDefaults, **kwargs) -> InferenceConfig:
        """The defaults, with a model folder's own frame and per-stage token limits where it
        sets them (stage 1's limit also serves single-stage answers)."""
        sampling = kwargs.pop("sampling", SamplingSettings())
        limits = defaults.max_new_tokens
        if "stage1" in limits:
            sampling = replace(sampling, max_new_tokens=limits["stage1"])
        kwargs.setdefault("stage2_max_new_tokens", limits.get("stage2"))
        return cls(
            min_pixels=defaults.min_pixels or DEFAULT_MIN_PIXELS,
            max_pixels=defaults.max_pixels or DEFAULT_MAX_PIXELS,
            sampling=sampling,
            **kwargs,
        )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.stage2_max_new_tokens is not None and self.stage2_max_new_tokens < 1:
            raise ValueError(
                f"stage2_max_new_tokens must be >= 1, got {self.stage2_max_new_tokens}"
            )
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

        ``vlm="mini"`` / ``sam="mini"``: socioseg-mini (:mod:`socioseg.models.sources`). Without a
        ``config``, the VLM folder's own frame and decoding limits apply
        (:mod:`socioseg.models.defaults`), else the global defaults.
        """
        from socioseg.models.segmenter import Segmenter

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
        sampling = config.sampling
        stage2 = sampling
        if sampling.seed is not None:
            stage2 = replace(stage2, seed=sampling.seed + 1)
        if config.stage2_max_new_tokens is not None:
            stage2 = replace(stage2, max_new_tokens=config.stage2_max_new_tokens)
        settings = EngineSettings(mode=config.mode, stage1=sampling, stage2=stage2)
        out = engine.run(self.vlm, self.segmenter, jobs, settings)
        if config.mode != "two-stage":
            source = "single-stage" if config.mode == "single-stage" else "stage1"
            return [
                self._prediction(job, config, s1.result, None, s1.result.mask, source)
                for job, s1 in zip(jobs, out.stage1, strict=True)
            ]
        predictions = []
        for job, s1, s2 in zip(jobs, out.stage1, out.stage2, strict=True):
            mask, source = s2.result.mask, "stage2"
            if not s2.result.parsed.targets:  # released: empty; optionally the coarse mask
                fallback = config.stage2_fallback
                mask = s1.result.mask if fallback else np.zeros_like(s1.result.mask)
                source = "stage1-fallback" if fallback else "empty"
            fb_map, fb_sat = out.prompts[s2.prompt].images
            predictions.append(
                self._prediction(job, config, s1.result, s2.result, mask, source, fb_map, fb_sat)
            )
        return predictions

    def _prepare(self, sat, map_, query: str, config: InferenceConfig, index: int) -> engine.Job:
        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"item {index}: the query is empty")
        sat_name, map_name = _input_name(sat, "satellite image"), _input_name(map_, "map image")
        sat_image, map_image = load_image(sat, sat_name), load_image(map_, map_name)
        try:
            check_same_aspect(sat_image.size, map_image.size, sat_name, map_name)
        except ValueError as error:
            raise InputError(str(error)) from error
        loaded = time.perf_counter() - started
        job = engine.prepare(
            self.segmenter,
            sat_image,
            map_image,
            query.strip(),
            config.min_pixels,
            config.max_pixels,
            self.vlm.family.factor,
        )
        job.timings["load"] = loaded
        return job

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
