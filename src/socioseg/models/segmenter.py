"""The only module that touches the segmenter: embed a satellite image once, prompt it many times.

:class:`Segmenter` wraps a promptable segmenter of a family in :mod:`socioseg.models.families`
(``transformers.Sam2Model`` for SAM2 and SAM 2.1, ``Sam3TrackerModel`` for SAM 3's tracker,
which has SAM2's prompt API) and feeds it exactly what the official
``SAM2ImagePredictor`` (package ``sam2``, used by the released system) feeds SAM2; that
predictor and transformers' ``Sam2Processor`` both need torchvision, so the transforms are
written here:

- image (:func:`preprocess`): uint8 RGB -> float32 in [0, 1] (``ToTensor``: ``/ 255``) ->
  bilinear resize WITH antialias of that float tensor to the model's square input S x S (what
  torchvision's ``Resize`` does to a float tensor: no rounding to uint8, the same on every CPU)
  -> ``(x - mean) / std``;
- prompts: one decoder call per target; its box enters as two corner points (labels 2 and 3)
  followed by its points (label 1), and the prompt encoder appends one padding point (label
  -1), as the official predictor's ``_predict`` does. Coordinates are normalised in float32 on
  the model's device with the official ops (``x / W * S``, ``y / H * S``; W, H: the embedded
  image), the model adds its own half-pixel shift;
- output: ``multimask_output=True``, the mask with the highest predicted IoU is kept, its
  low-resolution logits (S/4 x S/4) are upsampled straight to the embedded image's size
  (bilinear, ``align_corners=False``) and thresholded at ``> 0``; the targets are OR-ed.

SAM 3's tracker goes through the same transforms with its own input side (1008), mean/std
(0.5) and 288 px logits: its processor (transformers' ``Sam3TrackerProcessor``) scales prompts
by ``side / W`` and ``side / H`` and resizes straight to the square, as SAM2's does.

The pipeline embeds the satellite image in the VLM frame (the image the VLM sees), so boxes
and points go to SAM unchanged and masks come out in the VLM frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from socioseg.models.device import resolve_device, resolve_dtype
from socioseg.models.families import SAM2, SegmenterFamily, read_model_type, segmenter_family
from socioseg.types import Target

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_SAM = "facebook/sam2-hiera-large-hf"
PREPROCESSOR_FILE = "preprocessor_config.json"
IMAGENET_MEAN: tuple[float, float, float] = SAM2.image_mean
IMAGENET_STD: tuple[float, float, float] = SAM2.image_std
DEFAULT_RESCALE = 1 / 255
# SAM2's point labels: a positive (foreground) point 1, a box's top-left and bottom-right
# corners 2 and 3 (the official predictor passes a box as these two points).
POSITIVE_LABEL = 1
BOX_CORNER_LABELS = (2, 3)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes ``pixel_values``: square ``size``, ``rescale_factor``, mean/std."""

    size: int = 1024
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    rescale_factor: float = DEFAULT_RESCALE

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"SAM input size must be positive, got {self.size}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 values (R, G, B)")

    @classmethod
    def for_family(cls, family: SegmenterFamily, size: int) -> Preprocessing:
        """The family's own preprocessing at a square input of ``size``."""
        return cls(size=size, image_mean=family.image_mean, image_std=family.image_std)

    @classmethod
    def from_dict(
        cls, data: dict, default_size: int, family: SegmenterFamily = SAM2
    ) -> Preprocessing:
        """Read a transformers ``preprocessor_config.json`` dict (keys absent -> the family's
        defaults)."""
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if data.get(flag, True) is False:
                raise ValueError(f"{PREPROCESSOR_FILE} sets {flag}=false, which SAM never uses")
        size = data.get("size") or {}
        height = size.get("height", default_size)
        width = size.get("width", default_size)
        if height != width:
            raise ValueError(
                f"{PREPROCESSOR_FILE} asks for a {width}x{height} input; SAM2's is square"
            )
        return cls(
            size=int(height),
            image_mean=tuple(float(v) for v in data.get("image_mean", family.image_mean)),
            image_std=tuple(float(v) for v in data.get("image_std", family.image_std)),
            rescale_factor=float(data.get("rescale_factor", DEFAULT_RESCALE)),
        )

    def to_dict(self, family: SegmenterFamily = SAM2) -> dict:
        """The ``preprocessor_config.json`` content the family's transformers processor reads."""
        side = {"height": self.size, "width": self.size}
        mask = family.mask_side(self.size)
        return {
            "image_processor_type": family.processor_type,
            "do_convert_rgb": True,
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "size": side,
            "mask_size": {"height": mask, "width": mask},
            "resample": 2,  # PIL.Image.BILINEAR
            "rescale_factor": self.rescale_factor,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM2's encoding of one image, reusable for any number of prompts.

    ``features``: the multi-scale tensors of ``Sam2Model.get_image_embeddings`` (batch 1, on the
    model's device and dtype). ``image_size``: ``(width, height)`` of the encoded image, the
    frame of every prompt and mask of this embedding.
    """

    features: tuple[torch.Tensor, ...]
    image_size: tuple[int, int]


def preprocess(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """PIL image -> ``pixel_values``: ``1 x 3 x S x S`` float32 on the CPU, S = ``size``.

    The official predictor's transform: RGB (PIL ``convert``) uint8 -> float32 ``/ 255`` ->
    bilinear antialiased resize of the float values (torchvision ``Resize`` on a float tensor:
    ``align_corners=False``, no rounding to uint8) -> ``(x - mean) / std`` in float32. The
    aspect ratio is not kept.
    """
    import torch

    chw = torch.from_numpy(np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy())
    values = chw.to(torch.float32).div(1 / preprocessing.rescale_factor)
    side = preprocessing.size
    if tuple(values.shape[-2:]) != (side, side):
        # Width first, then height, as torch does; each pass resizes rows of a contiguous tensor.
        values = _resize_rows(values.double().transpose(1, 2).contiguous(), side)
        values = _resize_rows(values.transpose(1, 2).contiguous(), side).float()
    mean = torch.as_tensor(preprocessing.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(preprocessing.image_std, dtype=torch.float32)[:, None, None]
    return ((values - mean) / std)[None]


def _resize_rows(values: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear antialiased resize of float64 ``C x H x W`` along H to ``size`` rows.

    The filter of ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
    align_corners=False)`` (PIL's triangle filter, widened by the scale when shrinking), applied
    as fixed-order element-wise float64 products and sums: torch's own float32 kernels differ
    in the last bit between CPU capabilities (AVX2, AVX-512, none), these do not.
    """
    import torch

    index, weight = _triangle_taps(values.shape[1], size)
    out = None
    for tap in range(index.shape[1]):
        term = values.index_select(1, torch.from_numpy(index[:, tap]))
        term.mul_(torch.from_numpy(weight[:, tap])[:, None])
        out = term if out is None else out.add_(term)
    return out


def _triangle_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)``, both ``out_size x taps``: input samples and normalised weights.

    Output sample i is centred at ``scale * (i + 0.5)`` input pixels (``scale = in / out``);
    the triangle filter has half-width ``max(scale, 1)``; weights that fall outside the input
    are dropped and the rest renormalised (torch's and PIL's antialiased rule). Unused taps
    point at sample 0 with weight 0.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size) + 0.5)
    # int() truncates toward zero, as the C++ cast in torch does.
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    offsets = np.arange(int((last - first).max()))
    positions = first[:, None] + offsets[None, :]
    used = positions < last[:, None]
    weight = np.maximum(0.0, 1.0 - np.abs((positions - center[:, None] + 0.5) * inverse))
    weight = np.where(used, weight, 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=weight.copy(), where=total != 0)
    return np.where(used, positions, 0), weight


def upsample_logits(logits: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``N x h x w`` low-resolution logits -> ``N x H x W`` float32 for ``(W, H) = image_size``."""
    import torch.nn.functional as F

    width, height = image_size
    return F.interpolate(
        logits[:, None].float(), (height, width), mode="bilinear", align_corners=False
    )[:, 0]


class Segmenter:
    """SAM behind two calls: :meth:`embed` once per image, :meth:`segment` per prompt set.

    ``encoder_calls`` counts image-encoder runs (one per :meth:`embed`); ``family`` comes
    from the model's config.
    """

    def __init__(self, model, preprocessing: Preprocessing) -> None:
        prompt_size = _prompt_image_size(model.config)
        if prompt_size != preprocessing.size:
            raise ValueError(
                f"the model's prompt encoder works at {prompt_size}x{prompt_size} but its "
                f"preprocessing resizes to {preprocessing.size}x{preprocessing.size}; fix the "
                f"size in {PREPROCESSOR_FILE}"
            )
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.family = segmenter_family(model.config.model_type)
        self.encoder_calls = 0

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_SAM,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Segmenter:
        """Load a transformers-format SAM2, SAM 2.1 or SAM 3 tracker checkpoint (Hub id or
        folder) with its preprocessing.

        ``device`` None -> CUDA when available, else CPU; ``dtype`` None -> bfloat16 on CUDA,
        float32 elsewhere. The input size, mean, std and rescale factor come from the
        checkpoint's ``preprocessor_config.json`` when it has one, else from its config
        (size) and the family's defaults (SAM2: ImageNet mean/std; SAM 3: 0.5; 1/255).
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = _check_source(name_or_path)
        family = segmenter_family(read_model_type(source) or "sam2")
        try:
            model = family.model_cls().from_pretrained(source, dtype=torch_dtype)
        except OSError as error:
            raise OSError(
                f"could not load {family.title} from {source!r} ({error}); pass a folder "
                f"written by {family.model_class}.save_pretrained or `socioseg tiny-models`, or "
                f"the Hub id of a transformers-format checkpoint such as {family.hub_example!r}"
            ) from error
        preprocessing = read_preprocessing(source, _prompt_image_size(model.config), family)
        return cls(model.to(torch_device), preprocessing)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def input_size(self) -> int:
        """Side S of SAM's square input (the image is resized to S x S inside SAM)."""
        return self.preprocessing.size

    def embed(self, image: Image.Image) -> ImageEmbedding:
        """Run the image encoder once on ``image`` (any PIL mode; converted to RGB).

        The pipeline passes the satellite image in the VLM frame; prompts and masks of the
        returned embedding are in that image's pixels.
        """
        import torch

        pixel_values = preprocess(image, self.preprocessing)
        with torch.inference_mode():
            features = self.model.get_image_embeddings(
                pixel_values.to(device=self.device, dtype=self.dtype)
            )
        self.encoder_calls += 1
        return ImageEmbedding(features=tuple(features), image_size=image.size)

    def segment(self, embedding: ImageEmbedding, targets: Sequence[Target]) -> np.ndarray:
        """Mask of all ``targets`` on the embedded image.

        ``targets``: boxes (XYXY, as given: inverted or out-of-image boxes are not changed) and
        positive points in the pixels of the embedded image. Returns ``H x W`` bool at that
        image's size (``(W, H) = embedding.image_size``); all False when ``targets`` is empty.
        """
        return self.segment_scored(embedding, targets)[0]

    def segment_scored(
        self, embedding: ImageEmbedding, targets: Sequence[Target]
    ) -> tuple[np.ndarray, tuple[float, ...]]:
        """:meth:`segment` plus SAM's predicted IoU of each target's kept mask (target order)."""
        width, height = embedding.image_size
        mask = np.zeros((height, width), dtype=bool)
        scores = []
        for target in targets:
            logits, score = self._best_logits(embedding, target)
            mask |= (upsample_logits(logits[None], embedding.image_size)[0] > 0).cpu().numpy()
            scores.append(score)
        return mask, tuple(scores)

    def _best_logits(self, embedding: ImageEmbedding, target: Target) -> tuple[torch.Tensor, float]:
        """``S/4 x S/4`` low-resolution logits of one target's best-IoU mask, and that IoU."""
        import torch

        xy, labels = point_prompt(target)
        points = self._prompt_coords(xy, embedding.image_size)
        with torch.inference_mode():
            # No input_boxes: the prompt encoder then pads the points with one label -1 point,
            # giving the official predictor's sparse prompt [corner, corner, points..., pad].
            output = self.model(
                image_embeddings=list(embedding.features),
                input_points=points[None, None],
                input_labels=torch.tensor([[labels]], dtype=torch.int32, device=self.device),
                multimask_output=True,
            )
        # pred_masks: 1 x 1 x 3 x h x w; iou_scores: 1 x 1 x 3.
        best = output.iou_scores[0, 0].argmax()
        return output.pred_masks[0, 0, best], float(output.iou_scores[0, 0, best])

    def _prompt_coords(self, xy: list[list[float]], image_size: tuple[int, int]) -> torch.Tensor:
        """``N x 2`` float32 on the model's device: pixels of ``image_size`` -> the S x S input.

        The official ``SAM2Transforms.transform_coords`` ops, in their order and precision.
        """
        return prompt_coords(xy, image_size, self.input_size, self.device)


def point_prompt(target: Target) -> tuple[list[list[float]], list[int]]:
    """One target as the official predictor prompts it: its box's two corners (labels 2, 3),
    then its points (label 1). Coordinates as in ``target`` (pixels of the embedded image)."""
    box = target.box
    xy = [[box.x1, box.y1], [box.x2, box.y2]] + [p.as_list() for p in target.points]
    return xy, [*BOX_CORNER_LABELS] + [POSITIVE_LABEL] * len(target.points)


def prompt_coords(xy, image_size: tuple[int, int], side: int, device=None) -> torch.Tensor:
    """``... x 2`` float32: pixels of ``image_size`` ``(W, H)`` -> the ``side x side`` input.

    The official ``SAM2Transforms.transform_coords`` ops, in their order and precision.
    """
    import torch

    width, height = image_size
    coords = torch.as_tensor(xy, dtype=torch.float32, device=device)
    coords[..., 0] = coords[..., 0] / width
    coords[..., 1] = coords[..., 1] / height
    return coords * side


def _prompt_image_size(config) -> int:
    size = config.prompt_encoder_config.image_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"SAM2 prompt encoder image_size {size} is not square")
        size = size[0]
    return int(size)


def _check_source(name_or_path: str | Path) -> str:
    """Fail early on sources that cannot hold SAM2 (see
    :func:`socioseg.models.sources.model_source`)."""
    from socioseg.models.sources import SAM_TYPES, SAM_WHAT, model_source

    return model_source(name_or_path, SAM_TYPES, SAM_WHAT)


def read_preprocessing(source: str, default_size: int, family: SegmenterFamily) -> Preprocessing:
    """A checkpoint's ``preprocessor_config.json`` (folder or Hub cache), else the family's own
    preprocessing at ``default_size``."""
    path = Path(source) / PREPROCESSOR_FILE
    if not Path(source).is_dir():
        from transformers.utils import cached_file

        found = cached_file(
            source,
            PREPROCESSOR_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        path = Path(found) if found else None
    if path is None or not path.is_file():
        return Preprocessing.for_family(family, default_size)
    return Preprocessing.from_dict(json.loads(path.read_text()), default_size, family)
