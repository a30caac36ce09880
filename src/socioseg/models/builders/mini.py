"""socioseg-mini's sizes and untrained starting point.

A ~5M-parameter Qwen2.5-VL (real architecture, a small byte-level BPE vocabulary learned from
the prompts, the synthetic city's place names and answer JSON; digits are single tokens, as in
Qwen's own pre-tokenizer) that sees a 252 x 252 VLM frame, and a ~2M-parameter SAM2 at a
256 x 256 input. ``scripts/train_mini.py`` (``make mini``) trains them with socioseg's own
commands; ``docs/mini.md`` gives the plan and the budget. The trained folders are shipped under
``socioseg/assets/mini/{vlm,sam}`` and loaded by the name ``mini``
(:mod:`socioseg.models.sources`).
"""

from __future__ import annotations

from pathlib import Path

from socioseg.models.builders.qwen import build_tiny_tokenizer, build_tiny_vlm
from socioseg.models.builders.sam import save_random_sam
from socioseg.models.defaults import ModelDefaults

# The VLM frame: every tile becomes 252 x 252 (9 x 9 merged patches = 81 tokens per image).
MINI_MIN_PIXELS = 224 * 224
MINI_MAX_PIXELS = 252 * 252
# Decoding limits: a teacher-style answer for up to 4 objects fits with room to spare.
MINI_MAX_NEW_TOKENS = {"stage1": 160, "stage2": 224}
MINI_SAM_SIZE = 256
MINI_VOCAB_SIZE = 2048
# The curriculum's policy (docs/mini.md, gate A): 6 decoder layers, RoPE base 10 (near
# rows and columns told apart in a few steps), and M-RoPE with 6 of 16 frequencies for time
# (the one section that compares an answer with every token of an image at one distance).
MINI_VLM = {
    "text_hidden": 256,
    "text_layers": 6,
    "head_dim": 32,
    "vision_hidden": 128,
    "vision_depth": 4,
    "vision_heads": 4,
    "rope_theta": 10.0,
    "mrope_section": [6, 5, 5],
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
        # PyTorch's initialisation and one positional encoding for image and prompts: with
        # train-sam's embedding_weight (configs/mini_sam.yaml) it learns to read its prompts;
        # Sam2Model's own std-0.02 start does not (docs/mini.md).
        init="pytorch",
        tie_encodings=True,
    )
