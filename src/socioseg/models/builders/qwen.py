"""Tiny random-weight policies of every family, and the tiny byte-level tokenizer.

A random-weight Qwen2.5-VL (:func:`build_tiny_vlm`, also the architecture socioseg-mini
trains), Qwen3-VL or Qwen3.5 (:func:`build_tiny_policy`) for offline runs and tests. They have
the real architectures, token id layout, chat template and preprocessing files, and load
through exactly the same code path as the real checkpoints (``from_pretrained`` of a folder).
Their weights are random: their answers mean nothing, and their config says so
(:data:`RANDOM_WEIGHTS_FLAG`, read by :func:`has_random_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

from socioseg.models.families import POLICIES, QWEN3_5, QWEN3_VL, PolicyFamily

# Qwen2.5-VL's special tokens, in the order (and so with the id offsets) of the real vocabulary.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# Qwen2-VL / Qwen2.5-VL's chat template (the part that matters for image + text messages).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tiny tokenizer's BPE merges are learned from: the prompts and answer shapes.
_CORPUS_EXTRA = (
    '<think>The map shows the school north of the main road.</think><answer>[{"bbox_2d": '
    "[120, 45, 388, 290]}]</answer>",
    '<answer>[{"bbox_2d": [12, 340, 96, 512], "points": [[40, 400], [61, 455], [70, 380]]}]'
    "</answer>",
    "Zoo Park University Hospital Station Stadium Residential Commercial Educational 0123456789",
)

TINY_VLM_VOCAB_SIZE = 1024
RANDOM_WEIGHTS_FLAG = "socioseg_random_weights"
# Random weights never close their answer: decoding stops at the limit, so by default they
# decode a few dozen tokens, not the 1024 a real model may need (~40 s per sample on a CPU).
RANDOM_MODEL_MAX_NEW_TOKENS = 32
TINY_IMAGE_MIN_PIXELS = 56 * 56
TINY_IMAGE_MAX_PIXELS = 1344 * 1344


def vision_token_fields(ids: dict[str, int]) -> dict[str, int]:
    """The Qwen2.5-VL config fields naming the vision special tokens, from a token -> id map."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def has_random_weights(reasoner) -> bool:
    """True when ``reasoner``'s VLM was built by :func:`build_tiny_vlm` (meaningless output)."""
    model = getattr(getattr(reasoner, "vlm", None), "model", None)
    return bool(getattr(getattr(model, "config", None), RANDOM_WEIGHTS_FLAG, False))


def build_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = TINY_VLM_VOCAB_SIZE):
    """A byte-level BPE tokenizer with Qwen's special tokens and Qwen2.5-VL's chat template.

    ``corpus``: the texts the merges are learned from (default: the prompts and a few answers);
    ``vocab_size``: the most entries, special tokens included.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    from socioseg import prompts

    corpus = corpus or [
        prompts.stage1_text("Jinan Zoo"),
        prompts.stage2_text("School", '[{"bbox_2d": [10, 20, 30, 40]}]'),
        prompts.single_stage_text("Educational"),
        *_CORPUS_EXTRA,
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_vlm(
    out_dir: str | Path,
    seed: int = 0,
    text_hidden: int = 64,
    text_layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    *,
    head_dim: int = 16,
    vision_heads: int = 2,
    rope_theta: float = 1_000_000.0,
    mrope_section: list[int] | None = None,
    tokenizer=None,
    min_pixels: int = TINY_IMAGE_MIN_PIXELS,
    max_pixels: int = TINY_IMAGE_MAX_PIXELS,
    random_weights_flag: bool = True,
) -> Path:
    """Save a random small Qwen2.5-VL with tokenizer and image processor to ``out_dir``.

    The defaults give about 0.24M parameters; the sizes can grow for learning experiments.
    ``rope_theta``: the language model's RoPE base (Qwen2.5-VL's 1e6 by default).
    ``mrope_section``: frequencies of (time, height, width), summing to ``head_dim // 2``
    (default 2:3:3 as Qwen).
    ``tokenizer``: a Qwen2 tokenizer with Qwen's special tokens (default: the tiny one).
    ``random_weights_flag``: mark the config as random weights (off for a model to be trained,
    such as socioseg-mini, whose trained checkpoints inherit the config).
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from socioseg.models.processor import VLMProcessor

    out_dir = Path(out_dir)
    tokenizer = tokenizer or build_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    # 3D RoPE splits half the head dimension over (time, height, width) as Qwen does (2:3:3).
    mrope = [head_dim // 8, 3 * head_dim // 16, head_dim // 2 - head_dim // 8 - 3 * head_dim // 16]
    if mrope_section is not None:
        if len(mrope_section) != 3 or sum(mrope_section) != head_dim // 2:
            raise ValueError(
                f"mrope_section {mrope_section} must be 3 sizes summing to {head_dim // 2}"
            )
        mrope = list(mrope_section)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_hidden // head_dim,
            "num_key_value_heads": max(1, text_hidden // head_dim // 2),
            "max_position_embeddings": 8192,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": rope_theta,
                "mrope_section": mrope,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": vision_heads,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": text_hidden,
            "fullatt_block_indexes": [vision_depth - 1],
        },
        **vision_token_fields(ids),
    )
    # Saved in config.json: lets every command say that these weights are random.
    if random_weights_flag:
        setattr(config, RANDOM_WEIGHTS_FLAG, True)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out_dir)
    VLMProcessor.build(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels).save_pretrained(
        out_dir
    )
    return out_dir


# Qwen3-VL's and Qwen3.5's templates add no default system turn (Qwen2.5-VL's adds "You are a
# helpful assistant."); the image placeholder is the same. The published Qwen3.5 template also
# opens "<think>\n" after the generation prompt (thinking mode); this one does not. socioseg
# reads responses of a template that does with that opening in front
# (VLMProcessor.response_prefix; tests/test_template_think.py).
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _text_config(family: PolicyFamily, vocab: int, ids: dict[str, int]) -> dict:
    """A 2-layer (Qwen3-VL) or 4-layer hybrid (Qwen3.5: 3 linear + 1 full) language model."""
    config = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    rope = {"rope_type": "default", "mrope_interleaved": True}
    if family is QWEN3_VL:
        # head_dim 16: the interleaved T/H/W sections cover head_dim / 2 = 8 frequencies.
        rope |= {"rope_theta": 5_000_000.0, "mrope_section": [4, 2, 2]}
        return config | {"num_hidden_layers": 2, "head_dim": 16, "rope_parameters": rope}
    # Qwen3.5: rotary on a quarter of head_dim 32 = 8 dims, 4 frequencies in sections 2/1/1.
    rope |= {"rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1]}
    return config | {
        "num_hidden_layers": 4,
        "head_dim": 32,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "rope_parameters": rope,
    }


def build_tiny_policy(out_dir: str | Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Save a random small policy of ``family`` (a key of ``families.POLICIES``) to ``out_dir``.

    Qwen3-VL: 2 text layers, a 2-block vision tower with DeepStack at both blocks; Qwen3.5:
    3 linear-attention layers and 1 full-attention layer. Both use the tiny byte-level
    tokenizer with Qwen's special tokens, patch 16, merge 2 and mean/std 0.5.
    """
    import torch
    import transformers
    from transformers import GenerationConfig

    from socioseg.models.processor import VLMProcessor

    chosen = POLICIES[family]
    if chosen not in (QWEN3_VL, QWEN3_5):
        return build_tiny_vlm(out_dir, seed=seed)
    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": chosen.patch_size,
        "spatial_merge_size": chosen.merge_size,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "num_position_embeddings": 64,  # a learned 8 x 8 grid, resampled to any image
    }
    if chosen is QWEN3_VL:
        vision["deepstack_visual_indexes"] = [0, 1]
    config_class = getattr(
        transformers, chosen.model_class.replace("ForConditionalGeneration", "Config")
    )
    config = config_class(
        text_config=_text_config(chosen, len(tokenizer), ids),
        vision_config=vision,
        tie_word_embeddings=False,
        **vision_token_fields(ids),
    )
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = chosen.model_cls()(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out_dir)
    processor = VLMProcessor.build(tokenizer, TINY_IMAGE_MIN_PIXELS, TINY_IMAGE_MAX_PIXELS, chosen)
    processor.save_pretrained(out_dir)
    return out_dir
