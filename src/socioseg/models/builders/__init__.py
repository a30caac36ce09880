"""Every model this project builds itself, by what it builds.

- :mod:`~socioseg.models.builders.qwen`: tiny random-weight policies of every family
  (Qwen2.5-VL, Qwen3-VL, Qwen3.5) and the tiny byte-level tokenizer;
- :mod:`~socioseg.models.builders.sam`: random-weight segmenters (tiny SAM2, SAM2 of any Hiera
  size, tiny SAM 3 tracker);
- :mod:`~socioseg.models.builders.mini`: socioseg-mini's sizes and untrained start;
- :mod:`~socioseg.models.builders.tiny`: both tiny models in one folder
  (``socioseg tiny-models``).

The public names of all four are re-exported here.
"""

from socioseg.models.builders.mini import (
    MINI_MAX_NEW_TOKENS,
    MINI_MAX_PIXELS,
    MINI_MIN_PIXELS,
    MINI_SAM_SIZE,
    MINI_VLM,
    MINI_VOCAB_SIZE,
    build_mini_sam,
    build_mini_tokenizer,
    build_mini_vlm,
)
from socioseg.models.builders.qwen import (
    QWEN3_VL_CHAT_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
    QWEN_VL_CHAT_TEMPLATE,
    RANDOM_MODEL_MAX_NEW_TOKENS,
    RANDOM_WEIGHTS_FLAG,
    TINY_IMAGE_MAX_PIXELS,
    TINY_IMAGE_MIN_PIXELS,
    TINY_VLM_VOCAB_SIZE,
    build_tiny_policy,
    build_tiny_tokenizer,
    build_tiny_vlm,
    has_random_weights,
    vision_token_fields,
)
from socioseg.models.builders.sam import (
    TINY_SAM3_SIDE,
    build_tiny_clip_tokenizer,
    build_tiny_concept,
    build_tiny_sam,
    build_tiny_segmenter,
    save_random_sam,
    tie_positional_encodings,
)
from socioseg.models.builders.tiny import (
    SAM_FAMILIES,
    VLM_FAMILIES,
    build_tiny_family_models,
    build_tiny_models,
    sam_family_title,
)

__all__ = [
    "MINI_MAX_NEW_TOKENS",
    "MINI_MAX_PIXELS",
    "MINI_MIN_PIXELS",
    "MINI_SAM_SIZE",
    "MINI_VLM",
    "MINI_VOCAB_SIZE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "QWEN_VL_CHAT_TEMPLATE",
    "RANDOM_MODEL_MAX_NEW_TOKENS",
    "RANDOM_WEIGHTS_FLAG",
    "SAM_FAMILIES",
    "TINY_IMAGE_MAX_PIXELS",
    "TINY_IMAGE_MIN_PIXELS",
    "TINY_SAM3_SIDE",
    "TINY_VLM_VOCAB_SIZE",
    "VLM_FAMILIES",
    "build_mini_sam",
    "build_mini_tokenizer",
    "build_mini_vlm",
    "build_tiny_clip_tokenizer",
    "build_tiny_concept",
    "build_tiny_family_models",
    "build_tiny_models",
    "build_tiny_policy",
    "build_tiny_sam",
    "build_tiny_segmenter",
    "build_tiny_tokenizer",
    "build_tiny_vlm",
    "has_random_weights",
    "sam_family_title",
    "save_random_sam",
    "tie_positional_encodings",
    "vision_token_fields",
]
