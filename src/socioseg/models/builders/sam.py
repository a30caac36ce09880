"""Random-weight segmenters: a tiny SAM2 for tests, SAM2 of any Hiera size, a tiny SAM 3 tracker.

Each is saved with the files a real checkpoint folder has (``config.json`` with its
``model_type``, ``preprocessor_config.json``), so ``Segmenter.from_pretrained`` reads it back
through the code path of the published checkpoints. :func:`save_random_sam` also gives the
initialisation and positional-encoding tying a from-scratch training needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from socioseg.models.families import CONCEPT_FAMILY, CONCEPT_TEXT_LENGTH, SAM3_TRACKER, SEGMENTERS
from socioseg.models.segmenter import PREPROCESSOR_FILE, Preprocessing

TINY_SAM3_SIDE = 112  # 8 x 8 patches of 14 px; masks 32 x 32


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
            _fan_in_init(model)
        if tie_encodings:
            tie_positional_encodings(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    text = json.dumps(Preprocessing(size=side).to_dict(), indent=2)
    (out / PREPROCESSOR_FILE).write_text(text + "\n")
    return out


def build_tiny_segmenter(out_dir: str | Path, family: str = "sam2", seed: int = 0) -> Path:
    """Save a random small segmenter of ``family`` (a key of ``families.SEGMENTERS``, or
    ``"sam3"``: SAM 3's concept segmenter, :func:`build_tiny_concept`).

    SAM 3 tracker: a 2-layer ViT at 112 px (patch 14, an 8 x 8 grid, windows of 4), 3 FPN
    levels, masks 32 x 32, with mean/std 0.5 in its ``preprocessor_config.json``. Weights are
    drawn with std ``fan_in ** -0.5`` (biases 0.1), as the tiny SAM2's, so masks depend on the
    prompt.
    """
    import torch
    from transformers import Sam3TrackerConfig

    if family == CONCEPT_FAMILY:
        return build_tiny_concept(out_dir, seed)
    if SEGMENTERS[family] is not SAM3_TRACKER:
        return Path(build_tiny_sam(out_dir, seed=seed))
    side, patch = TINY_SAM3_SIDE, SAM3_TRACKER.patch_size
    grid = side // patch
    config = Sam3TrackerConfig(
        vision_config={
            "backbone_config": _tiny_sam3_vit(side, patch),
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
        _fan_in_init(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    preprocessing = Preprocessing.for_family(SAM3_TRACKER, side).to_dict(SAM3_TRACKER)
    (out / PREPROCESSOR_FILE).write_text(json.dumps(preprocessing, indent=2) + "\n")
    return out


def _tiny_sam3_vit(side: int, patch: int) -> dict:
    """A 2-layer SAM 3 ViT at ``side`` px (``model_type`` is required inside the config)."""
    return {
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
    }


def _fan_in_init(model) -> None:
    """Matrices with std ``fan_in ** -0.5``, biases with std 0.1: O(1) outputs untrained."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)


def build_tiny_clip_tokenizer(vocab_size: int = 512):
    """A lower-casing byte-level BPE ``CLIPTokenizer`` (``</w>`` word ends, CLIP's start/end
    tokens), its merges learned from the prompts' kinds of place names."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    from socioseg.data.levels import FUNCTION_NAMES

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    corpus = [" ".join(FUNCTION_NAMES).lower(), "jinan zoo park school hospital station stadium"]
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges)


def build_tiny_concept(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random small SAM 3 concept segmenter (``Sam3Model``) with its CLIP tokenizer.

    The tracker's 112 px ViT (4 FPN levels, as ``Sam3Model`` uses the first 3), a 1-layer CLIP
    text encoder, 1-layer DETR encoder and decoder with 8 queries, masks 32 x 32. Weights drawn
    as :func:`build_tiny_segmenter`'s, so scores and masks depend on image and text, with the
    presence head biased towards "present" so that some instances pass the score threshold; the
    config is marked as random weights.
    """
    import torch
    from transformers import Sam3Config, Sam3Model

    from socioseg.models.builders.qwen import RANDOM_WEIGHTS_FLAG

    side, patch, width = TINY_SAM3_SIDE, SAM3_TRACKER.patch_size, 32
    grid = side // patch
    tokenizer = build_tiny_clip_tokenizer()
    layers = {"hidden_size": width, "num_layers": 1, "num_attention_heads": 2}
    config = Sam3Config(
        vision_config={
            "backbone_config": _tiny_sam3_vit(side, patch),
            "fpn_hidden_size": width,
            "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        },
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": len(tokenizer),
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "projection_dim": width,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": CONCEPT_TEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        geometry_encoder_config=layers | {"intermediate_size": 2 * width},
        detr_encoder_config=layers | {"intermediate_size": 2 * width},
        detr_decoder_config=layers | {"intermediate_size": 2 * width, "num_queries": 8},
        mask_decoder_config={"hidden_size": width, "num_upsampling_stages": 3},
    )
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3Model(config).eval()
        _fan_in_init(model)
        with torch.no_grad():  # "present" (sigmoid 0.98): queries then score about 0.1-0.5
            model.detr_decoder.presence_head.layer3.bias.fill_(4.0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    preprocessing = Preprocessing.for_family(SAM3_TRACKER, side).to_dict(SAM3_TRACKER)
    preprocessing["image_processor_type"] = "Sam3ImageProcessor"
    (out / PREPROCESSOR_FILE).write_text(json.dumps(preprocessing, indent=2) + "\n")
    return out
