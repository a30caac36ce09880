"""socioseg-mini: the sizes and the untrained starting point of the small shipped models.

A ~4M-parameter Qwen2.5-VL (real architecture, a small byte-level BPE vocabulary learned from
the prompts, the synthetic city's place names and answer JSON; digits are single tokens, as in
Qwen's own pre-tokenizer) that sees a 252 x 252 VLM frame, and a ~2M-parameter SAM2 at a
256 x 256 input. ``scripts/train_mini.py`` (``make mini``) trains them with socioseg's own
commands; ``docs/mini.md`` gives the plan and the budget. The trained folders are shipped
under ``socioseg/assets/mini/{vlm,sam}`` and loaded by the name ``mini``
(:mod:`socioseg.sources`).
"""

from __future__ import annotations

from pathlib import Path

from socioseg.model_defaults import ModelDefaults

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
    from socioseg.data._catalog import KINDS, PLACES
    from socioseg.data.levels import FUNCTION_NAMES
    from socioseg.tiny import build_tiny_tokenizer

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
    from socioseg.tiny import build_tiny_vlm

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
    import json

    import torch
    from transformers import Sam2Config, Sam2Model

    from socioseg.segmenter import PREPROCESSOR_FILE, Preprocessing

    side = MINI_SAM_SIZE
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 32,
        "image_size": [side, side],
        "blocks_per_stage": [1, 2, 4, 1],
        "embed_dim_per_stage": [32, 64, 128, 256],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
        "window_size_per_stage": [8, 4, 8, 4],
        # A global block may not open a q-pool stage: the third block of stage 3.
        "global_attention_blocks": [5],
        "window_positional_embedding_background_size": [4, 4],
    }
    config = Sam2Config(
        vision_config={
            "backbone_config": backbone,
            "backbone_channel_list": [256, 128, 64, 32],
            "backbone_feature_sizes": [[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
            "fpn_hidden_size": 64,
        },
        prompt_encoder_config={
            "hidden_size": 64,
            "image_size": side,
            "patch_size": 16,
            "mask_input_channels": 16,
        },
        mask_decoder_config={
            "hidden_size": 64,
            "mlp_dim": 256,
            "num_attention_heads": 4,
            "iou_head_hidden_dim": 64,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Model(config).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    text = json.dumps(Preprocessing(size=side).to_dict(), indent=2)
    (out / PREPROCESSOR_FILE).write_text(text + "\n")
    return out
