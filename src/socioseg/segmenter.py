"""The only module that touches SAM2: embed a satellite image once, prompt it many times.

:class:`Segmenter` wraps ``transformers.Sam2Model`` with the pre- and post-processing of
``transformers.Sam2Processor`` re-implemented here, because that processor needs torchvision:

- pre-processing: composite any alpha channel onto white and take RGB, resize to the model's
  square input (S x S, aspect ratio NOT kept, no padding) with bilinear + antialias on uint8
  exactly as torchvision's tensor ``resize`` does on CPU, then ``(x - mean * 255) / (std * 255)``
  (the processor's fused rescale + normalise);
- prompts: boxes and points are scaled from the image frame to the SAM frame
  (:class:`socioseg.geometry.Frames`), the model adds its own half-pixel shift;
- post-processing: the chosen low-resolution logits (S/4 x S/4) are upsampled straight to the
  image size (bilinear, ``align_corners=False``) and thresholded at ``> 0``.

Per target, SAM2 gets the box plus the target's points (all label 1) with
``multimask_output=True``; the mask with the highest predicted IoU is kept and all targets are
OR-ed. Targets with the same number of points share one decoder call, so no padding point ever
reaches the prompt encoder (a padded point is a zero token that still takes part in attention,
and would change the result).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from socioseg.geometry import Frames
from socioseg.runtime import resolve_device, resolve_dtype
from socioseg.types import Target

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_SAM = "facebook/sam2-hiera-large-hf"
PREPROCESSOR_FILE = "preprocessor_config.json"
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_RESCALE = 1 / 255
# SAM2 labels a positive (foreground) point 1.
POSITIVE_LABEL = 1


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
    def from_dict(cls, data: dict, default_size: int) -> Preprocessing:
        """Read a transformers ``preprocessor_config.json`` dict (keys absent -> defaults)."""
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if data.get(flag, True) is False:
                raise ValueError(f"{PREPROCESSOR_FILE} sets {flag}=false, which SAM2 never uses")
        size = data.get("size") or {}
        height = size.get("height", default_size)
        width = size.get("width", default_size)
        if height != width:
            raise ValueError(
                f"{PREPROCESSOR_FILE} asks for a {width}x{height} input; SAM2's is square"
            )
        return cls(
            size=int(height),
            image_mean=tuple(float(v) for v in data.get("image_mean", IMAGENET_MEAN)),
            image_std=tuple(float(v) for v in data.get("image_std", IMAGENET_STD)),
            rescale_factor=float(data.get("rescale_factor", DEFAULT_RESCALE)),
        )

    def to_dict(self) -> dict:
        """The ``preprocessor_config.json`` content transformers' Sam2ImageProcessor reads."""
        side = {"height": self.size, "width": self.size}
        return {
            "image_processor_type": "Sam2ImageProcessorFast",
            "do_convert_rgb": True,
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "size": side,
            "mask_size": {"height": self.size // 4, "width": self.size // 4},
            "resample": 2,  # PIL.Image.BILINEAR
            "rescale_factor": self.rescale_factor,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM2's encoding of one image, reusable for any number of prompts.

    ``features``: the multi-scale tensors of ``Sam2Model.get_image_embeddings`` (batch 1, on the
    model's device and dtype). ``frames``: the image and SAM frames of that image (its VLM frame
    is set to the image frame; the segmenter never uses it).
    """

    features: tuple[torch.Tensor, ...]
    frames: Frames

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the encoded image."""
        return self.frames.image_size


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """``H x W x 3`` uint8; transparency is composited onto white (as transformers does)."""
    from PIL import Image as PILImage

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PILImage.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _resize_uint8(chw: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear antialiased resize of a ``3 x H x W`` uint8 tensor to ``3 x side x side``.

    The same arithmetic as torchvision's ``resize`` on a CPU tensor: native uint8 interpolation
    where torch reports AVX2, otherwise float32 interpolation rounded back to uint8.
    """
    import torch
    import torch.nn.functional as F

    if tuple(chw.shape[-2:]) == (side, side):
        return chw
    batch = chw.contiguous()[None]
    kwargs = {"size": [side, side], "mode": "bilinear", "align_corners": False, "antialias": True}
    if "AVX2" in torch.backends.cpu.get_cpu_capability():
        return F.interpolate(batch, **kwargs)[0]
    return F.interpolate(batch.float(), **kwargs).round_().to(torch.uint8)[0]


def preprocess(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """PIL image -> ``pixel_values``: ``1 x 3 x S x S`` float32 on the CPU, S = ``size``."""
    import torch

    chw = torch.from_numpy(_to_rgb_array(image).copy()).permute(2, 0, 1)
    resized = _resize_uint8(chw, preprocessing.size).to(torch.float32)
    # transformers fuses rescale and normalise the same way; keep its rounding.
    mean = torch.tensor(preprocessing.image_mean) * (1.0 / preprocessing.rescale_factor)
    std = torch.tensor(preprocessing.image_std) * (1.0 / preprocessing.rescale_factor)
    return ((resized - mean[:, None, None]) / std[:, None, None])[None]


def upsample_logits(logits: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``N x h x w`` low-resolution logits -> ``N x H x W`` float32 for ``(W, H) = image_size``."""
    import torch.nn.functional as F

    width, height = image_size
    return F.interpolate(
        logits[:, None].float(), (height, width), mode="bilinear", align_corners=False
    )[:, 0]


class Segmenter:
    """SAM2 behind two calls: :meth:`embed` once per image, :meth:`segment` per prompt set.

    ``encoder_calls`` counts image-encoder runs (one per :meth:`embed`).
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
        self.encoder_calls = 0

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_SAM,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Segmenter:
        """Load a transformers-format SAM2 checkpoint (Hub id or folder) with its preprocessing.

        ``device`` None -> CUDA when available, else CPU; ``dtype`` None -> bfloat16 on CUDA,
        float32 elsewhere. The input size, mean, std and rescale factor come from the
        checkpoint's ``preprocessor_config.json`` when it has one, else from its config
        (size) and SAM2's defaults (ImageNet mean/std, 1/255).
        """
        from transformers import Sam2Model

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = _check_source(name_or_path)
        try:
            model = Sam2Model.from_pretrained(source, dtype=torch_dtype)
        except OSError as error:
            raise OSError(
                f"could not load SAM2 from {source!r} ({error}); pass a folder written by "
                f"Sam2Model.save_pretrained or socioseg.segmenter.build_tiny_sam, or a Hub id "
                f"of a transformers-format SAM2 checkpoint such as {DEFAULT_SAM!r}"
            ) from error
        preprocessing = _read_preprocessing(source, _prompt_image_size(model.config))
        return cls(model.to(torch_device), preprocessing)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def input_size(self) -> int:
        """Side S of SAM's square input; the SAM frame is S x S."""
        return self.preprocessing.size

    def embed(self, image: Image.Image) -> ImageEmbedding:
        """Run the image encoder once on ``image`` (any PIL mode; RGB is used)."""
        import torch

        pixel_values = preprocess(image, self.preprocessing)
        with torch.inference_mode():
            features = self.model.get_image_embeddings(
                pixel_values.to(device=self.device, dtype=self.dtype)
            )
        self.encoder_calls += 1
        side = self.preprocessing.size
        frames = Frames(image_size=image.size, vlm_size=image.size, sam_size=(side, side))
        return ImageEmbedding(features=tuple(features), frames=frames)

    def segment(self, embedding: ImageEmbedding, targets: Sequence[Target]) -> np.ndarray:
        """Mask of all ``targets`` on the embedded image.

        ``targets``: boxes (XYXY) and positive points in the IMAGE frame of ``embedding``.
        Returns ``H x W`` bool in the image frame (``(W, H) = embedding.image_size``); all False
        when ``targets`` is empty.
        """
        width, height = embedding.image_size
        mask = np.zeros((height, width), dtype=bool)
        if embedding.frames.sam_size != (self.input_size, self.input_size):
            raise ValueError(
                f"embedding was made for a {embedding.frames.sam_size} SAM input, this model "
                f"takes {self.input_size}x{self.input_size}: embed the image with this segmenter"
            )
        for logits in self._best_logits(embedding, targets):
            mask |= (upsample_logits(logits, embedding.image_size) > 0).any(dim=0).cpu().numpy()
        return mask

    def _best_logits(
        self, embedding: ImageEmbedding, targets: Sequence[Target]
    ) -> list[torch.Tensor]:
        """Per group of targets with equal point counts: ``N x S/4 x S/4`` best-IoU logits."""
        import torch

        groups: dict[int, list[Target]] = {}
        for target in targets:
            groups.setdefault(len(target.points), []).append(target)
        frames = embedding.frames
        out = []
        for n_points, group in groups.items():
            boxes = np.array([t.box.as_list() for t in group], dtype=np.float64)
            prompt = {"input_boxes": self._tensor(frames.points_array(boxes, "image", "sam"))[None]}
            if n_points:
                xy = np.array([[p.as_list() for p in t.points] for t in group], dtype=np.float64)
                prompt["input_points"] = self._tensor(frames.points_array(xy, "image", "sam"))[None]
                prompt["input_labels"] = torch.full(
                    (1, len(group), n_points), POSITIVE_LABEL, dtype=torch.long, device=self.device
                )
            with torch.inference_mode():
                output = self.model(
                    image_embeddings=list(embedding.features), multimask_output=True, **prompt
                )
            # pred_masks: 1 x N x 3 x h x w; iou_scores: 1 x N x 3.
            best = output.iou_scores[0].argmax(dim=-1)
            rows = torch.arange(len(group), device=best.device)
            out.append(output.pred_masks[0, rows, best])
        return out

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(array, dtype=torch.float32, device=self.device)


def _prompt_image_size(config) -> int:
    size = config.prompt_encoder_config.image_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"SAM2 prompt encoder image_size {size} is not square")
        size = size[0]
    return int(size)


def _check_source(name_or_path: str | Path) -> str:
    """Fail early on sources that cannot hold SAM2 (:func:`socioseg.sources.model_source`)."""
    from socioseg.sources import SAM_TYPES, SAM_WHAT, model_source

    return model_source(name_or_path, SAM_TYPES, SAM_WHAT)


def _read_preprocessing(source: str, default_size: int) -> Preprocessing:
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
        return Preprocessing(size=default_size)
    return Preprocessing.from_dict(json.loads(path.read_text()), default_size)


def build_tiny_sam(out_dir: str | Path, image_size: int = 256, seed: int = 0) -> Path:
    """Save a ~0.35M-parameter random-weight SAM2 (input ``image_size``, a multiple of 64).

    The folder holds ``config.json``, the weights and a ``preprocessor_config.json`` with the
    input size, so ``Segmenter.from_pretrained(out_dir)`` reads it back. Same ``seed``, same
    weights. Returns ``Path(out_dir)``.
    """
    import torch
    from transformers import Sam2Config, Sam2Model

    if image_size % 64:
        raise ValueError(f"image_size must be a multiple of 64 (four 2x stages), got {image_size}")
    side = image_size
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 16,
        "image_size": [side, side],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 2, 2],
        "window_size_per_stage": [8, 4, 4, 2],
        # Block 3 is the second block of stage 3: a global block may not open a q-pool stage.
        "global_attention_blocks": [3],
        "window_positional_embedding_background_size": [4, 4],
    }
    config = Sam2Config(
        vision_config={
            "backbone_config": backbone,
            "backbone_channel_list": [128, 64, 32, 16],
            "backbone_feature_sizes": [[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
            "fpn_hidden_size": 32,
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": side,
            "patch_size": 16,
            "mask_input_channels": 8,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Model(config).eval()
        # transformers' init (std 0.02) leaves a model this small with ~1e-5 mask logits that
        # hardly depend on the prompt; fan-in scaling gives O(1) logits that do, so tests can
        # tell a wrong box or point from a right one.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, param[0].numel() ** -0.5)
                elif name.endswith("bias"):
                    param.normal_(0.0, 0.1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    text = json.dumps(Preprocessing(size=side).to_dict(), indent=2)
    (out / PREPROCESSOR_FILE).write_text(text + "\n")
    return out
