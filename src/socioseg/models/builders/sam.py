"""Tiny random-weight models of every family (``socioseg tiny-models --vlm-family/--sam-family``).

Each is the family's real transformers architecture at toy widths, saved with the files a real
checkpoint folder has (config with its ``model_type``, tokenizer and chat template, image
preprocessing), so it loads through exactly the code path of the published checkpoints. Their
weights are random: their answers and masks mean nothing. Qwen2.5-VL and SAM2 come from
:mod:`socioseg.models.builders` (unchanged, as released).
"""

from __future__ import annotations

import json
from pathlib import Path

from socioseg.models.builders import (
    QWEN_SPECIAL_TOKENS,
    RANDOM_WEIGHTS_FLAG,
    TINY_IMAGE_MAX_PIXELS,
    TINY_IMAGE_MIN_PIXELS,
    build_tiny_sam,
    build_tiny_tokenizer,
    build_tiny_vlm,
    vision_token_fields,
)
from socioseg.models.families import (
    POLICIES,
    QWEN3_5,
    QWEN3_VL,
    SAM3_TRACKER,
    SEGMENTERS,
    PolicyFamily,
)
from socioseg.models.segmenter import PREPROCESSOR_FILE, Preprocessing

# Qwen3-VL's and Qwen3.5's templates add no default system turn (Qwen2.5-VL's adds "You are a
# helpful assistant."); the image placeholder is the same. The published Qwen3.5 template also
# opens "<think>\n" after the generation prompt (thinking mode); this one does not, so the
# tiny model answers the prompts' own <think>...</think><answer> format.
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
TINY_SAM3_SIDE = 112  # 8 x 8 patches of 14 px; masks 32 x 32
VLM_FAMILIES: tuple[str, ...] = tuple(POLICIES)
SAM_FAMILIES: tuple[str, ...] = tuple(SEGMENTERS)


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


def build_tiny_segmenter(out_dir: str | Path, family: str = "sam2", seed: int = 0) -> Path:
    """Save a random small segmenter of ``family`` (a key of ``families.SEGMENTERS``).

    SAM 3 tracker: a 2-layer ViT at 112 px (patch 14, an 8 x 8 grid, windows of 4), 3 FPN
    levels, masks 32 x 32, with mean/std 0.5 in its ``preprocessor_config.json``. Weights are
    drawn with std ``fan_in ** -0.5`` (biases 0.1), as the tiny SAM2's, so masks depend on the
    prompt.
    """
    import torch
    from transformers import Sam3TrackerConfig

    if SEGMENTERS[family] is not SAM3_TRACKER:
        return Path(build_tiny_sam(out_dir, seed=seed))
    side, patch = TINY_SAM3_SIDE, SAM3_TRACKER.patch_size
    grid = side // patch
    config = Sam3TrackerConfig(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": side,
                "patch_size": patch,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": 56,
            },
            "fpn_hidden_size": 32,
            "scale_factors": [4.0, 2.0, 1.0],
            "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": side,
            "patch_size": patch,
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
        model = SAM3_TRACKER.model_cls()(config).eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, param[0].numel() ** -0.5)
                elif name.endswith("bias"):
                    param.normal_(0.0, 0.1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    preprocessing = Preprocessing.for_family(SAM3_TRACKER, side).to_dict(SAM3_TRACKER)
    (out / PREPROCESSOR_FILE).write_text(json.dumps(preprocessing, indent=2) + "\n")
    return out


def build_tiny_family_models(
    out_dir: str | Path, vlm_family: str = "qwen2_5_vl", sam_family: str = "sam2", seed: int = 0
) -> tuple[Path, Path]:
    """Both tiny models under ``out_dir/vlm`` and ``out_dir/sam``; returns the two paths."""
    out_dir = Path(out_dir)
    vlm = build_tiny_policy(out_dir / "vlm", vlm_family, seed)
    sam = build_tiny_segmenter(out_dir / "sam", sam_family, seed)
    return vlm, sam
