"""Every model this project builds itself: tiny random-weight models, socioseg-mini's start.

- tiny (``socioseg tiny-models``): a random-weight Qwen2.5-VL and SAM2 for offline runs and
  tests. They have the real architectures, token id layout, chat template and preprocessing
  files, and load through exactly the same code path as the real checkpoints
  (``from_pretrained`` of a folder). Their weights are random: their masks mean nothing.
- mini: socioseg-mini's sizes and untrained starting point. A ~4M-parameter Qwen2.5-VL (real
  architecture, a small byte-level BPE vocabulary learned from the prompts, the synthetic
  city's place names and answer JSON; digits are single tokens, as in Qwen's own
  pre-tokenizer) that sees a 252 x 252 VLM frame, and a ~2M-parameter SAM2 at a 256 x 256
  input. ``scripts/train_mini.py`` (``make mini``) trains them with socioseg's own commands;
  ``docs/mini.md`` gives the plan and the budget. The trained folders are shipped under
  ``socioseg/assets/mini/{vlm,sam}`` and loaded by the name ``mini``
  (:mod:`socioseg.models.sources`).
- random SAM2 of any Hiera size (:func:`save_random_sam`), with the initialisation and
  positional-encoding tying a from-scratch training needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from socioseg.models.defaults import ModelDefaults
from socioseg.models.segmenter import PREPROCESSOR_FILE, Preprocessing

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


def build_tiny_models(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Build both tiny models under ``out_dir/vlm`` and ``out_dir/sam``; returns the two paths."""

    out_dir = Path(out_dir)
    vlm_dir = build_tiny_vlm(out_dir / "vlm", seed=seed)
    sam_dir = build_tiny_sam(out_dir / "sam")
    return vlm_dir, Path(sam_dir)


# The VLM frame: every tile becomes 252 x 252 (9 x 9 merged patches = 81 tokens per image).
MINI_MIN_PIXELS = 224 * 224
MINI_MAX_PIXELS = 252 * 252
# Decoding limits: a teacher-style answer for up to 4 objects fits with room to spare.
MINI_MAX_NEW_TOKENS = {"stage1": 160, "stage2": 224}
MINI_SAM_SIZE = 256
MINI_VOCAB_SIZE = 2048
MINI_VLM = {
    "text_hidden": 256,
    "text_layers": 4,
    "head_dim": 32,
    "vision_hidden": 128,
    "vision_depth": 4,
    "vision_heads": 4,
}


def build_mini_tokenizer():
    """Byte-level BPE (``MINI_VOCAB_SIZE`` entries) with Qwen's special tokens and template."""
    from socioseg import prompts
    from socioseg.data.levels import FUNCTION_NAMES
    from socioseg.data.synth.catalog import KINDS, PLACES

    names = [kind.socio_class for kind in KINDS] + list(FUNCTION_NAMES)
    for kind in KINDS:
        for pattern in kind.names:
            names += [pattern.format(p=place, n=n) for place in PLACES for n in (1, 2)]
    corpus = [prompts.stage1_text(name) for name in names[:50]]
    corpus += [prompts.stage2_text("School", '[{"bbox_2d": [10, 20, 30, 40]}]')]
    corpus += [prompts.single_stage_text("Educational"), " ".join(names)]
    corpus += [
        f'<think>The map labels {name}; its outline is visible on the image.</think><answer>[{{"'
        f'bbox_2d": [12, 34, 56, 78], "points": [[20, 40], [30, 50]]}}]</answer>'
        for name in names[:20]
    ]
    return build_tiny_tokenizer(corpus=corpus, vocab_size=MINI_VOCAB_SIZE)


def build_mini_vlm(out_dir: str | Path, seed: int = 0) -> Path:
    """The untrained mini policy in ``out_dir``, with its frame and decoding limits recorded."""

    out = build_tiny_vlm(
        out_dir,
        seed=seed,
        tokenizer=build_mini_tokenizer(),
        min_pixels=MINI_MIN_PIXELS,
        max_pixels=MINI_MAX_PIXELS,
        random_weights_flag=False,
        **MINI_VLM,
    )
    ModelDefaults(MINI_MIN_PIXELS, MINI_MAX_PIXELS, dict(MINI_MAX_NEW_TOKENS)).write(out)
    return Path(out)


def build_mini_sam(out_dir: str | Path, seed: int = 0) -> Path:
    """The untrained mini SAM2 (Hiera widths 32-256, 256 x 256 input) in ``out_dir``."""

    return save_random_sam(
        out_dir,
        MINI_SAM_SIZE,
        seed,
        dims=(32, 64, 128, 256),
        blocks=(1, 2, 4, 1),
        heads=(1, 2, 4, 8),
        windows=(8, 4, 8, 4),
        global_block=5,  # the third block of stage 3: a global block may not open a q-pool stage
        decoder=(64, 256, 4),
        # The start the shipped SAM2 was trained from, kept so that make mini reproduces it.
        # It cannot learn to read prompts (docs/mini.md); the next retrain starts from
        # init="pytorch" with the encodings tied and trains with embedding_weight=0.01.
        init="transformers",
        tie_encodings=False,
    )


def build_tiny_sam(out_dir: str | Path, image_size: int = 256, seed: int = 0) -> Path:
    """Save a ~0.35M-parameter random-weight SAM2 (input ``image_size``, a multiple of 64).

    The folder holds ``config.json``, the weights and a ``preprocessor_config.json`` with the
    input size, so ``Segmenter.from_pretrained(out_dir)`` reads it back. Same ``seed``, same
    weights. Returns ``Path(out_dir)``.
    """
    if image_size % 64:
        raise ValueError(f"image_size must be a multiple of 64 (four 2x stages), got {image_size}")
    # transformers' init (std 0.02) leaves a model this small with ~1e-5 mask logits that
    # hardly depend on the prompt; fan-in scaling gives O(1) logits that do, so tests can
    # tell a wrong box or point from a right one.
    return save_random_sam(
        out_dir,
        image_size,
        seed,
        dims=(16, 32, 64, 128),
        blocks=(1, 1, 2, 1),
        heads=(1, 1, 2, 2),
        windows=(8, 4, 4, 2),
        global_block=3,  # the second block of stage 3: a global block may not open a q-pool stage
        decoder=(32, 64, 2),
        init="fan_in",
    )


def tie_positional_encodings(model) -> None:
    """Give the image and the prompts one positional encoding, as the released SAM2 has.

    SAM2 encodes image positions and prompt coordinates with one random Fourier matrix (its
    prompt encoder's ``pe_layer``), so a box corner's embedding matches the image positions it
    names. transformers' ``Sam2Model`` holds two copies (``shared_image_embedding`` and
    ``prompt_encoder.shared_embedding``), equal in converted checkpoints but drawn apart by a
    random initialisation; this copies the prompt encoder's into the image's. Neither trains.
    """
    import torch

    with torch.no_grad():
        image = model.shared_image_embedding.positional_embedding
        image.copy_(model.prompt_encoder.shared_embedding.positional_embedding)


def save_random_sam(
    out_dir: str | Path,
    side: int,
    seed: int,
    *,
    dims: tuple[int, int, int, int],
    blocks: tuple[int, int, int, int],
    heads: tuple[int, int, int, int],
    windows: tuple[int, int, int, int],
    global_block: int,
    decoder: tuple[int, int, int],
    init: Literal["transformers", "pytorch", "fan_in"] = "transformers",
    tie_encodings: bool = True,
) -> Path:
    """Save a random-weight SAM2 with a 4-stage Hiera backbone, loadable by ``Segmenter``.

    dims / blocks / heads / windows: per Hiera stage; global_block: index of the one global
    attention block; decoder: (width of the FPN, prompt encoder and mask decoder, decoder MLP
    width, decoder heads). ``side``: the square input size. Same ``seed``, same weights.
    ``init``: "transformers" keeps ``Sam2Model``'s own (std 0.02, meant to be overwritten by
    loaded weights: a small model's mask logits come out nearly constant); "pytorch" gives
    every layer PyTorch's default, as the released SAM2 training code builds its model (what
    training from scratch needs); "fan_in" draws matrices with std ``fan_in ** -0.5`` and
    biases with std 0.1 (O(1) logits untrained, for tests). ``tie_encodings``: one positional
    encoding for image and prompts (:func:`tie_positional_encodings`), as released.
    """
    import torch
    from transformers import Sam2Config, Sam2Model

    width, mlp_dim, decoder_heads = decoder
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": dims[0],
        "image_size": [side, side],
        "blocks_per_stage": list(blocks),
        "embed_dim_per_stage": list(dims),
        "num_attention_heads_per_stage": list(heads),
        "window_size_per_stage": list(windows),
        "global_attention_blocks": [global_block],
        "window_positional_embedding_background_size": [4, 4],
    }
    config = Sam2Config(
        vision_config={
            "backbone_config": backbone,
            "backbone_channel_list": list(reversed(dims)),
            "backbone_feature_sizes": [[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
            "fpn_hidden_size": width,
        },
        prompt_encoder_config={
            "hidden_size": width,
            "image_size": side,
            "patch_size": 16,
            "mask_input_channels": width // 4,
        },
        mask_decoder_config={
            "hidden_size": width,
            "mlp_dim": mlp_dim,
            "num_attention_heads": decoder_heads,
            "iou_head_hidden_dim": width,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Model(config).eval()
        if init == "pytorch":
            for module in model.modules():
                if module is not model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        elif init == "fan_in":
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if param.dim() >= 2:
                        param.normal_(0.0, param[0].numel() ** -0.5)
                    elif name.endswith("bias"):
                        param.normal_(0.0, 0.1)
        if tie_encodings:
            tie_positional_encodings(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    text = json.dumps(Preprocessing(size=side).to_dict(), indent=2)
    (out / PREPROCESSOR_FILE).write_text(text + "\n")
    return out
