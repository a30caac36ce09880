"""SAM 3's concept segmenter given the query text alone: the ``--mode sam3-concept`` baseline.

No VLM and no map: ``transformers.Sam3Model`` (image + a noun phrase -> up to Q instances, each
with a mask, a box and a score) sees the satellite image and the query. transformers'
``Sam3Processor`` needs torchvision, so its steps are written here:

- image: :func:`socioseg.models.segmenter.preprocess` at the model's square input (1008 for
  ``facebook/sam3``) with mean/std 0.5 (``Sam3ImageProcessor``'s: resize straight to the square,
  ``/ 255``, ``(x - 0.5) / 0.5``), as SAM 3's tracker is fed;
- text: the checkpoint's CLIP tokenizer, padded to :data:`TEXT_LENGTH` tokens with an attention
  mask, as ``Sam3Processor`` does (a longer query is cut there: the text encoder has 32
  positions);
- output (``Sam3ImageProcessor.post_process_instance_segmentation``'s rule): an instance's score
  is ``sigmoid(pred_logits) * sigmoid(presence_logits)``; instances scoring above
  :data:`SCORE_THRESHOLD` are kept, their mask probabilities (``sigmoid`` of the ``S/3.5``-side
  logits, 288 px for 1008) are upsampled bilinearly (``align_corners=False``) to the image size
  and thresholded at :data:`MASK_THRESHOLD`; the final mask is the union of the kept instances.
  Boxes are normalised XYXY, scaled by the image width and height.

The threshold is transformers' default for that function (0.3, ``image_processing_sam3.py``);
the mask threshold is its 0.5.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from socioseg.models.device import resolve_device, resolve_dtype
from socioseg.models.families import (
    CONCEPT_HUB_ID,
    CONCEPT_TEXT_LENGTH,
    CONCEPT_TITLE,
    CONCEPT_TYPES,
    SAM3_TRACKER,
)
from socioseg.models.segmenter import preprocess, read_preprocessing
from socioseg.types import (
    CONCEPT_MODE,
    Box,
    InputError,
    ParsedAnswer,
    Prediction,
    StageResult,
    Target,
)

if TYPE_CHECKING:
    from PIL import Image

CONCEPT_WHAT = "SAM 3 (--sam with --mode sam3-concept)"
SCORE_THRESHOLD = 0.3
MASK_THRESHOLD = 0.5
TEXT_LENGTH = CONCEPT_TEXT_LENGTH


@dataclass(frozen=True)
class ConceptResult:
    """One image and phrase. ``mask``: H x W bool, image frame, union of the kept instances.
    ``scores``: (Q,) float32 for every query slot; ``kept``: (Q,) bool, ``scores > threshold``;
    ``boxes``: (Q, 4) float32 XYXY in image pixels."""

    mask: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    boxes: np.ndarray


class ConceptSegmenter:
    """``Sam3Model`` with its CLIP tokenizer and the pre/post-processing above."""

    def __init__(self, model, tokenizer, preprocessing) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = CONCEPT_HUB_ID, device=None, dtype=None
    ) -> ConceptSegmenter:
        """Load a transformers-format SAM 3 (Hub id or folder). A folder of another model is a
        one-line :class:`~socioseg.hub.WrongSourceError` before anything loads."""
        from transformers import AutoTokenizer, Sam3Model

        from socioseg.models.sources import model_source

        source = model_source(name_or_path, CONCEPT_TYPES, CONCEPT_WHAT)
        torch_device = resolve_device(device)
        try:
            model = Sam3Model.from_pretrained(source, dtype=resolve_dtype(dtype, torch_device))
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as error:
            raise OSError(
                f"could not load {CONCEPT_TITLE} from {source!r} ({error}); pass a folder of "
                f"`socioseg tiny-models --sam-family sam3` or {CONCEPT_HUB_ID!r}"
            ) from error
        side = model.config.vision_config.backbone_config.image_size
        preprocessing = read_preprocessing(source, int(side), SAM3_TRACKER)  # mean/std 0.5
        return cls(model.to(torch_device), tokenizer, preprocessing)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def text_inputs(self, text: str) -> dict:
        """``input_ids`` and ``attention_mask``, both 1 x :data:`TEXT_LENGTH` int64."""
        padding = {"padding": "max_length", "max_length": TEXT_LENGTH, "truncation": True}
        encoded = self.tokenizer([text], return_tensors="pt", **padding)
        return {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def segment(
        self, image: Image.Image, text: str, threshold: float = SCORE_THRESHOLD
    ) -> ConceptResult:
        """The instances of ``text`` on ``image`` (any PIL mode), at ``image``'s size."""
        import torch
        import torch.nn.functional as F

        pixel_values = preprocess(image, self.preprocessing)
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            out = self.model(
                pixel_values=pixel_values.to(device=self.device, dtype=dtype),
                **self.text_inputs(text),
            )
        scores = out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()
        kept = scores > threshold
        width, height = image.size
        mask = np.zeros((height, width), dtype=bool)
        if kept.any():
            probs = out.pred_masks[0, kept].float().sigmoid()[None]
            probs = F.interpolate(probs, (height, width), mode="bilinear", align_corners=False)
            mask = (probs[0] > MASK_THRESHOLD).any(0).cpu().numpy()
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = out.pred_boxes[0].float().cpu() * scale
        return ConceptResult(mask, scores.cpu().numpy(), kept.cpu().numpy(), boxes.numpy())


@dataclass(frozen=True)
class ConceptConfig:
    """What decides a ``sam3-concept`` prediction besides the weights."""

    mode: str = CONCEPT_MODE
    score_threshold: float = SCORE_THRESHOLD

    def __post_init__(self) -> None:
        if self.mode != CONCEPT_MODE:
            raise ValueError(f"SAM 3 alone runs mode {CONCEPT_MODE!r} only, not {self.mode!r}")
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")


class ConceptBaseline:
    """The baseline with ``SocioReasoner``'s calls (``segment``, ``segment_batch``, ``config``),
    so ``socioseg segment`` and ``socioseg eval`` run it as they run the method."""

    def __init__(self, segmenter: ConceptSegmenter, config: ConceptConfig | None = None) -> None:
        self.segmenter = segmenter
        self.config = config or ConceptConfig()

    def segment(self, sat, map, query: str, mode: str | None = None) -> Prediction:
        return self.segment_batch([(sat, map, query)], mode=mode)[0]

    def segment_batch(self, items: Sequence[tuple], mode: str | None = None) -> list[Prediction]:
        """One :class:`Prediction` per ``(satellite, map, query)``; the map is not used.

        ``stage1`` holds the kept instances (boxes in image pixels, their scores as
        ``sam_scores``) and the union mask; ``stage2`` is None; ``final_source`` and ``mode``
        are ``"sam3-concept"``; ``vlm_size`` is the model's square input.
        """
        if mode not in (None, CONCEPT_MODE):
            raise ValueError(f"SAM 3 alone runs mode {CONCEPT_MODE!r} only, not {mode!r}")
        return [self._predict(sat, query, i) for i, (sat, _, query) in enumerate(items)]

    def _predict(self, sat, query: str, index: int) -> Prediction:
        from socioseg.images import ImageError, read_image

        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"item {index}: the query is empty")
        try:
            image = read_image(sat, str(sat) if isinstance(sat, str | Path) else "satellite image")
        except ImageError as error:
            raise InputError(str(error)) from error
        loaded = time.perf_counter()
        result = self.segmenter.segment(image, query.strip(), self.config.score_threshold)
        targets = tuple(Target(Box(*map(float, b))) for b in result.boxes[result.kept])
        stage = StageResult(
            name=CONCEPT_MODE,
            prompt_text=query.strip(),
            response="",
            parsed=ParsedAnswer(answer_text="", targets=()),
            targets_image=targets,
            mask=result.mask,
            sam_scores=tuple(float(s) for s in result.scores[result.kept]),
        )
        side = self.segmenter.preprocessing.size
        return Prediction(
            query=query.strip(),
            mode=CONCEPT_MODE,
            mask=result.mask,
            stage1=stage,
            stage2=None,
            image_size=image.size,
            vlm_size=(side, side),
            final_source=CONCEPT_MODE,
            timings={"load": loaded - started, "sam3": time.perf_counter() - loaded},
        )
