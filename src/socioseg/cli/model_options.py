"""Arguments and loading shared by the commands that run the models (segment, eval, demo, ...).

Flags first, then the VLM folder's own ``socioseg_inference.json``, then socioseg's defaults.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from socioseg.cli.common import MAX_NEW_TOKENS, MAX_VLM_PIXELS, SEED_MAX, CommandError, int_in
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from socioseg.images import DEFAULT_MAX_IMAGE_PIXELS, PIXEL_LIMIT_ENV
from socioseg.models.builders import RANDOM_MODEL_MAX_NEW_TOKENS
from socioseg.models.vlm import SamplingSettings
from socioseg.socioreasoner import DEFAULT_SAM, DEFAULT_VLM
from socioseg.types import CONCEPT_MODE, MODES


def add_model_args(
    parser: argparse.ArgumentParser, vlm: str = DEFAULT_VLM, sam: str | None = DEFAULT_SAM
) -> None:
    mini = " ('mini': the packaged socioseg-mini)"
    parser.add_argument("--vlm", default=vlm, help="Qwen2.5-VL Hub id or folder" + mini)
    sam_help = "SAM2 (transformers) Hub id or folder" + mini
    if sam is None:
        sam_help += f" (default: mini with --vlm mini, else {DEFAULT_SAM})"
    parser.add_argument("--sam", default=sam, help=sam_help)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: auto)")


def add_inference_args(parser: argparse.ArgumentParser, concept: bool = False) -> None:
    """The decoding and frame flags; ``concept``: ``--mode`` also offers the ``sam3-concept``
    baseline (``segment`` and ``eval``)."""
    if concept:
        parser.add_argument(
            "--mode",
            choices=(*MODES, CONCEPT_MODE),
            default="two-stage",
            help=f"what to run ({CONCEPT_MODE}: SAM 3's concept segmenter given the query text "
            "alone, a baseline without VLM or map; --sam names a SAM 3 model)",
        )
    else:
        parser.add_argument("--mode", choices=MODES, default="two-stage", help="what to run")
    parser.add_argument("--greedy", action="store_true", help="deterministic greedy decoding")
    parser.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="sampling seed")
    parser.add_argument(
        "--max-new-tokens",
        type=int_in(1, MAX_NEW_TOKENS),
        default=None,
        help=f"tokens per response (default: the VLM folder's socioseg_inference.json, else "
        f"{SamplingSettings.max_new_tokens}; "
        f"{RANDOM_MODEL_MAX_NEW_TOKENS} for random-weight test models)",
    )
    parser.add_argument(
        "--stage2-max-new-tokens",
        type=int_in(1, MAX_NEW_TOKENS),
        default=None,
        help="stage-2 tokens per response (default: --max-new-tokens)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="decode with a static cache compiled by torch.compile (first batch compiles)",
    )
    pixels = int_in(1, MAX_VLM_PIXELS)
    own = "the VLM folder's socioseg_inference.json, else"
    parser.add_argument(
        "--min-pixels",
        type=pixels,
        default=None,
        help=f"smallest VLM frame area (default: {own} {DEFAULT_MIN_PIXELS})",
    )
    parser.add_argument(
        "--max-pixels",
        type=pixels,
        default=None,
        help=f"largest VLM frame area (default: {own} {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--stage2-fallback",
        action="store_true",
        help="use the stage-1 mask when stage 2 gives no usable object (default: empty mask)",
    )


def add_image_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-image-pixels",
        type=int_in(1),
        default=None,
        help=f"largest input image, width x height (default: ${PIXEL_LIMIT_ENV} or "
        f"{DEFAULT_MAX_IMAGE_PIXELS:,})",
    )


def inference_config(args: argparse.Namespace, defaults):
    """Flags first, then the VLM folder's own ``defaults`` (``ModelDefaults``), then ours."""
    from socioseg.socioreasoner import InferenceConfig

    config = InferenceConfig.for_model(
        defaults,
        mode=args.mode,
        sampling=SamplingSettings(
            greedy=args.greedy,
            seed=args.seed,
            decoding="compiled" if args.compile else "eager",
        ),
        stage2_fallback=args.stage2_fallback,
    )
    tokens = args.max_new_tokens or config.sampling.max_new_tokens
    return replace(
        config,
        min_pixels=args.min_pixels or config.min_pixels,
        max_pixels=args.max_pixels or config.max_pixels,
        sampling=replace(config.sampling, max_new_tokens=tokens),
        stage2_max_new_tokens=args.stage2_max_new_tokens
        or (None if args.max_new_tokens else config.stage2_max_new_tokens),
    )


def load_reasoner(args: argparse.Namespace):
    """The method (``SocioReasoner``), or with ``--mode sam3-concept`` SAM 3 alone."""
    if args.mode == CONCEPT_MODE:
        return load_concept(args)
    from socioseg.models.sources import check_models

    # both, before torch and transformers even import
    vlm_source, _ = check_models(args.vlm, args.sam)
    from socioseg.models.defaults import ModelDefaults

    try:
        defaults = ModelDefaults.read(vlm_source)
        config = inference_config(args, defaults)
    except ValueError as error:
        raise CommandError(str(error)) from error
    from transformers.utils import logging as transformers_logging

    from socioseg.models.builders import has_random_weights
    from socioseg.socioreasoner import SocioReasoner

    transformers_logging.disable_progress_bar()  # one bar per load says nothing here
    try:
        reasoner = SocioReasoner.from_pretrained(
            vlm=args.vlm,
            sam=args.sam,
            device=args.device,
            dtype=args.dtype,
            config=config,
        )
    except (OSError, ValueError) as error:  # the loaders' messages say what to pass
        raise CommandError(str(error)) from error
    if has_random_weights(reasoner):
        if args.max_new_tokens is None:  # random tokens: a long answer is only slower noise
            sampling = replace(reasoner.config.sampling, max_new_tokens=RANDOM_MODEL_MAX_NEW_TOKENS)
            reasoner.config = replace(reasoner.config, sampling=sampling)
        print(
            f"note: {args.vlm} holds random weights (socioseg tiny-models): its masks are "
            f"meaningless; it decodes {reasoner.config.sampling.max_new_tokens} tokens at most "
            f"(--max-new-tokens). For real results pass --vlm {DEFAULT_VLM} --sam {DEFAULT_SAM} "
            "(downloaded on first use) or local copies of them.",
            file=sys.stderr,
        )
    return reasoner


def load_concept(args: argparse.Namespace):
    """SAM 3's concept segmenter from ``--sam`` (``models.concept.ConceptBaseline``)."""
    from socioseg.models.builders.qwen import RANDOM_WEIGHTS_FLAG
    from socioseg.models.concept import ConceptBaseline, ConceptSegmenter

    try:
        segmenter = ConceptSegmenter.from_pretrained(args.sam, args.device, args.dtype)
    except (OSError, ValueError) as error:  # the loader's messages say what to pass
        raise CommandError(str(error)) from error
    if getattr(segmenter.model.config, RANDOM_WEIGHTS_FLAG, False):
        print(f"note: {args.sam} holds random weights: its masks are meaningless", file=sys.stderr)
    return ConceptBaseline(segmenter)


def model_ids(args: argparse.Namespace) -> dict[str, str]:
    """The models a command ran, as recorded with its outputs (no VLM for sam3-concept)."""
    if args.mode == CONCEPT_MODE:
        return {"sam": str(args.sam)}
    return {"vlm": str(args.vlm), "sam": str(args.sam)}


def reasoner_factory(args: argparse.Namespace):
    """Loads the models on first use, so that bad inputs fail before a 3B model loads."""
    return lambda: load_reasoner(args)
