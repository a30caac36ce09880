"""Model families: what differs between the policies (Qwen2.5-VL, Qwen3-VL, Qwen3.5) and
between the segmenters (SAM2 / SAM 2.1, SAM 3's tracker), in one place each.

A family is chosen by the ``model_type`` in a checkpoint folder's ``config.json``; everything
else reads it from the family: the transformers class, the VLM frame rule (patch x merge,
the multiple both sides of the VLM frame are rounded to), the image normalisation, the
coordinate convention of answers, the vision special tokens and whether the engine may copy a
prefilled cache into a static one.

Coordinate conventions of answers (:data:`AnswerFrame`), converted only by
:class:`socioseg.geometry.Frames`:

- ``"vlm"``: absolute pixels of the resized image the model sees (Qwen2.5-VL, as released);
- ``"relative"``: 0-1000 on each axis, top-left origin, whatever the image size (Qwen3-VL and
  Qwen3.5 were pre-trained on this grounding convention; ``x_pixels = x * W / 1000``).

Values of the published checkpoints (transformers 5.25, the Hub's ``preprocessor_config.json``):
Qwen2.5-VL patch 14, merge 2, CLIP mean/std; Qwen3-VL and Qwen3.5 patch 16, merge 2, mean and
std 0.5. SAM2 and SAM 2.1 (``Sam2Model``; SAM 2.1's Hub folders say ``sam2_video``) take 1024 px
with ImageNet mean/std and give S/4 masks; SAM 3's tracker (``Sam3TrackerModel``) takes 1008 px
with mean/std 0.5 and gives 288 px masks (4x its 14 px patch grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AnswerFrame = Literal["vlm", "relative"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_TOKEN = "<|image_pad|>"
# Tokens a policy must never emit: one sampled image pad breaks the next forward pass.
VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


@dataclass(frozen=True)
class PolicyFamily:
    """One VLM family. ``factor`` (patch x merge) is the multiple of the VLM frame's sides.

    ``static_cache``: every layer of its cache holds keys and values, so a prefilled cache can
    be copied into a ``StaticCache`` (``static`` / ``compiled`` decoding). ``prefix_gradients``:
    the update may backpropagate through a prompt's shared cache (the shared-prefix update);
    False where the cache's states are overwritten in place by the next forward. Every family
    shares a group's prefill in generation (cache rows gathered with ``reorder_cache``).
    ``template_think``: what the family's published chat template writes of the response
    itself at the end of the generation prompt (Qwen3.5's thinking mode opens ``<think>\n``);
    when a checkpoint's template does so, responses are read with it in front
    (``VLMProcessor.response_prefix``), so the answer parser and the rewards see the whole
    ``<think>...</think><answer>...</answer>`` the prompts ask for.
    """

    model_type: str
    title: str
    model_class: str
    patch_size: int
    merge_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    answer_frame: AnswerFrame
    static_cache: bool = True
    prefix_gradients: bool = True
    default_system_prompt: bool = False
    hub_example: str = ""
    template_think: str = ""

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def image_token(self) -> str:
        return IMAGE_TOKEN

    @property
    def vision_tokens(self) -> tuple[str, ...]:
        return VISION_TOKENS

    def model_cls(self):
        """The transformers class that loads this family's checkpoints."""
        import transformers

        return getattr(transformers, self.model_class)

    def image_processor_settings(self, min_pixels: int, max_pixels: int) -> dict:
        """Keyword arguments of transformers' ``Qwen2VLImageProcessorPil`` for this family."""
        return {
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": 2,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        }


@dataclass(frozen=True)
class SegmenterFamily:
    """One promptable segmenter family: class, accepted ``model_type`` values and the
    preprocessing its checkpoints use when their folder says nothing else."""

    name: str
    title: str
    model_class: str
    model_types: tuple[str, ...]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    processor_type: str
    patch_size: int  # the mask decoder's low-resolution masks are 4 x (side / patch) px
    hub_example: str = ""

    def model_cls(self):
        import transformers

        return getattr(transformers, self.model_class)

    def mask_side(self, input_side: int) -> int:
        """Side of the low-resolution mask logits for a square input of ``input_side``."""
        return 4 * (input_side // self.patch_size)


QWEN2_5_VL = PolicyFamily(
    "qwen2_5_vl",
    "Qwen2.5-VL",
    "Qwen2_5_VLForConditionalGeneration",
    patch_size=14,
    merge_size=2,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
    answer_frame="vlm",
    default_system_prompt=True,
    hub_example="vvangfaye/SocioReasoner-3B",
)
QWEN3_VL = PolicyFamily(
    "qwen3_vl",
    "Qwen3-VL",
    "Qwen3VLForConditionalGeneration",
    patch_size=16,
    merge_size=2,
    image_mean=HALF,
    image_std=HALF,
    answer_frame="relative",
    hub_example="Qwen/Qwen3-VL-4B-Instruct",
)
# Qwen3.5's linear-attention layers keep conv and recurrent states, not keys and values:
# transformers 5.25's LinearAttentionLayer has no batch_repeat_interleave or
# batch_select_indices (reorder_cache moves them), no StaticCache slot, and the next forward
# overwrites them in place, which autograd refuses for a shared prefix: the update runs the
# vision tower once per prompt but each row's tokens on their own.
QWEN3_5 = PolicyFamily(
    "qwen3_5",
    "Qwen3.5",
    "Qwen3_5ForConditionalGeneration",
    patch_size=16,
    merge_size=2,
    image_mean=HALF,
    image_std=HALF,
    answer_frame="relative",
    static_cache=False,
    prefix_gradients=False,
    hub_example="Qwen/Qwen3.5-2B",
    template_think="<think>\n",
)
POLICIES: dict[str, PolicyFamily] = {f.model_type: f for f in (QWEN2_5_VL, QWEN3_VL, QWEN3_5)}

SAM2 = SegmenterFamily(
    "sam2",
    "SAM2",
    "Sam2Model",
    ("sam2", "sam2_video"),
    IMAGENET_MEAN,
    IMAGENET_STD,
    "Sam2ImageProcessorFast",
    patch_size=16,
    hub_example="facebook/sam2.1-hiera-large",
)
SAM3_TRACKER = SegmenterFamily(
    "sam3_tracker",
    "SAM 3 tracker",
    "Sam3TrackerModel",
    ("sam3_tracker", "sam3_video"),
    HALF,
    HALF,
    "Sam3ImageProcessorFast",
    patch_size=14,
    hub_example="facebook/sam3",
)
SEGMENTERS: dict[str, SegmenterFamily] = {f.name: f for f in (SAM2, SAM3_TRACKER)}

POLICY_TYPES: tuple[str, ...] = tuple(POLICIES)
SEGMENTER_TYPES: tuple[str, ...] = tuple(t for f in SEGMENTERS.values() for t in f.model_types)

# SAM 3's concept segmenter (transformers' Sam3Model: an image and a noun phrase -> instances),
# the `--mode sam3-concept` baseline of models/concept.py. Not a SegmenterFamily: it takes no
# box or point, so the two-stage method cannot use it. It loads from its own model_type or from
# SAM 3's video checkpoint (facebook/sam3), whose detector_config Sam3Model reads; its CLIP text
# prompt is padded to 32 tokens (transformers' Sam3Processor).
CONCEPT_FAMILY = "sam3"
CONCEPT_TYPES: tuple[str, ...] = ("sam3", "sam3_video")
CONCEPT_TITLE = "SAM 3 concept segmenter"
CONCEPT_HUB_ID = "facebook/sam3"
CONCEPT_TEXT_LENGTH = 32


def policy_family(model_type: str) -> PolicyFamily:
    """The policy family of a ``config.json`` ``model_type``; ``ValueError`` lists the choices."""
    try:
        return POLICIES[model_type]
    except KeyError:
        raise ValueError(
            f"no policy family for model_type {model_type!r}; supported: {', '.join(POLICIES)}"
        ) from None


def segmenter_family(model_type: str) -> SegmenterFamily:
    """The segmenter family owning a ``config.json`` ``model_type``."""
    for family in SEGMENTERS.values():
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"no segmenter family for model_type {model_type!r}; supported: "
        f"{', '.join(SEGMENTER_TYPES)}"
    )


def read_model_type(source: str | Path) -> str | None:
    """``model_type`` of a checked model source (folder or Hub id with a cached config)."""
    path = Path(source) / "config.json"
    if not path.is_file():
        from transformers.utils import cached_file

        found = cached_file(
            str(source),
            "config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if not found:
            return None
        path = Path(found)
    return config_model_type(path)


def config_model_type(config: Path) -> str | None:
    """``model_type`` of a ``config.json`` file (``None`` when it names none); an unreadable
    file is a one-line ``ValueError``."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{config}: unreadable config.json ({error})") from error
    return data.get("model_type") if isinstance(data, dict) else None
