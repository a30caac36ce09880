"""Seconds per phase of a GRPO step and of two-stage inference: shared vs unshared prompts,
eager vs compiled decoding, with a random Qwen2.5-VL at the real 3B widths cut to few layers
(``--vlm-family qwen3_vl`` / ``qwen3_5``: those families at their 4B widths).

    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --groups 1 4 8 --batches 1
    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --vlm-family qwen3_5 --size 128 \\
        --groups 4 --batches 1 --kinds infer step
    python benchmarks/bench_engine.py --device cuda --text-layers 36 --vision-depth 32 \\
        --dtype bfloat16 --tokens 200 --batches 1 8 32 --kinds infer --decoding eager compiled

Frames are the bundled 768 px examples (756 px in the VLM frame, 2 x 729 image tokens per
prompt). Responses have a fixed length (``--tokens``: EOS is never emitted), the segmenter is
the tiny random SAM2 (the VLM is what this measures). One JSON line per configuration with
seconds per phase; then one line per shared/unshared pair with the unshared/shared ratios.

Phases: ``preprocess`` (template, tokenizer, image processor), ``vision`` (vision tower),
``prefill`` (text-model calls over more than one token), ``decode`` (the rest of
generation), ``sam`` (embeddings and mask decoding), ``render``, ``rewards``; in a step also
``forward`` (reference and policy log-probs), ``backward`` and ``optimizer``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from socioseg import engine
from socioseg.data import load_example
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from socioseg.models.builders import (
    QWEN3_VL_CHAT_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
    build_tiny_sam,
    build_tiny_tokenizer,
    vision_token_fields,
)
from socioseg.models.families import POLICIES, QWEN2_5_VL
from socioseg.models.processor import VLMProcessor
from socioseg.models.segmenter import Segmenter
from socioseg.models.vlm import SamplingSettings, VisionLanguageModel, pad_right
from socioseg.train.algorithms import clipped_policy_loss, group_advantages
from socioseg.train.config import RolloutSettings
from socioseg.train.memory_plan import KNOWN_CONFIGS, QWEN25_VL_3B
from socioseg.train.rollout import collect_rollouts, policy_logprobs

# The built-in architecture each newer family is cut from.
CUT_FROM = {"qwen3_vl": "Qwen/Qwen3-VL-4B-Instruct", "qwen3_5": "Qwen/Qwen3.5-4B"}


def cut_model(family, text_layers, vision_depth, device, dtype, min_pixels) -> VisionLanguageModel:
    """A random policy of ``family`` (a ``families.POLICIES`` key) at real widths, cut to
    ``text_layers`` / ``vision_depth`` layers: Qwen2.5-VL at the 3B's, Qwen3-VL and Qwen3.5 at
    their 4B's (the built-in configs of the memory planner). Qwen3-VL keeps DeepStack on its
    first blocks; Qwen3.5 keeps its pattern of 3 linear-attention layers per full-attention one
    (the last layer is full attention when the cut leaves none)."""
    from transformers import AutoConfig, GenerationConfig

    chosen = POLICIES[family]
    tokenizer = build_tiny_tokenizer()
    if chosen is not QWEN2_5_VL:
        tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    fields = QWEN25_VL_3B if chosen is QWEN2_5_VL else KNOWN_CONFIGS[CUT_FROM[family]][1]
    text = {**fields["text_config"], "num_hidden_layers": text_layers}
    text["pad_token_id"] = ids["<|endoftext|>"]
    vision = {**fields["vision_config"], "depth": vision_depth}
    if chosen is QWEN2_5_VL:
        vision["fullatt_block_indexes"] = [vision_depth - 1]
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = list(range(min(3, vision_depth)))
    if "layer_types" in text:
        kinds = text["layer_types"][:text_layers]
        if "full_attention" not in kinds:
            kinds[-1] = "full_attention"
        text["layer_types"] = kinds
    config = AutoConfig.for_model(
        chosen.model_type,
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=fields["tie_word_embeddings"],
        **vision_token_fields(ids),
    )
    torch.manual_seed(0)
    model = chosen.model_cls()(config).to(device, getattr(torch, dtype)).eval()
    # No EOS: every response runs to the token limit, so configurations compare.
    model.generation_config = GenerationConfig(pad_token_id=ids["<|endoftext|>"])
    processor = VLMProcessor.build(tokenizer, min_pixels, DEFAULT_MAX_PIXELS, chosen)
    return VisionLanguageModel(model, processor, name=f"cut-{family}")


def min_pixels(vlm: VisionLanguageModel) -> int:
    return vlm.processor.image_processor.size["shortest_edge"]


class Phases:
    """Seconds per phase, from forward hooks on the vision tower and text model."""

    def __init__(self, vlm: VisionLanguageModel, segmenter, hooks: bool = True):
        self.seconds: dict[str, float] = defaultdict(float)
        self.prefix = ""  # "update_" while the update runs
        self.sync = vlm.device.type == "cuda"
        inner = vlm.model.model
        self.handles = []
        # Hooks inside a compiled forward would break its graph: compiled runs time stages only.
        towers = ((inner.visual, "vision"), (inner.language_model, "text")) if hooks else ()
        for module, name in towers:
            self.handles.append(
                module.register_forward_pre_hook(self._start(name), with_kwargs=True)
            )
            self.handles.append(module.register_forward_hook(self._stop(name), with_kwargs=True))
        self._open: dict[str, tuple[float, str]] = {}
        processor = vlm.processor
        call = type(processor).__call__

        def timed(this, *args, **kwargs):
            with self.phase("preprocess"):
                return call(this, *args, **kwargs)

        self.restore = (processor, type(processor), segmenter)
        processor.__class__ = type("TimedProcessor", (type(processor),), {"__call__": timed})
        embed = segmenter.embed

        def timed_embed(image):
            with self.phase("sam_embed"):
                return embed(image)

        segmenter.embed = timed_embed

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        processor, cls, segmenter = self.restore
        processor.__class__ = cls
        del segmenter.embed  # back to the class's method

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _start(self, name):
        def hook(module, args, kwargs):
            key = name
            if name == "text":
                key = "prefill" if kwargs["inputs_embeds"].shape[1] > 1 else "decode_step"
            self._open[name] = (self._now(), self.prefix + key)

        return hook

    def _stop(self, name):
        def hook(module, args, kwargs, output):
            started, key = self._open.pop(name)
            self.seconds[key] += self._now() - started

        return hook

    @contextmanager
    def phase(self, key: str):
        started = self._now()
        try:
            yield
        finally:
            self.seconds[self.prefix + key] += self._now() - started


def samples(n: int, size: int) -> list:
    """``n`` bundled examples (768 px), resized to ``size`` px when it differs."""
    examples = []
    for i in range(3):
        e = load_example(i)
        if size != e.sat.size[0]:
            mask = Image.fromarray(np.asarray(e.mask, dtype=np.uint8) * 255).resize((size, size))
            e = replace(
                e,
                sat=e.sat.resize((size, size)),
                map=e.map.resize((size, size)),
                mask=np.asarray(mask) > 127,
            )
        examples.append(e)
    return [examples[i % 3] for i in range(n)]


def grpo_step(vlm, segmenter, batch, g, share, decoding, tokens, phases):
    """One rollout + update (released strategy, KL to a reference forward, AdamW)."""
    settings = RolloutSettings(
        group_size=g,
        max_response_tokens=tokens,
        max_prompt_tokens=8192,
        generation_batch_size=10**6,
        share_prefix=share,
        decoding=decoding,
    )
    with phases.phase("rollout"):
        rollouts = collect_rollouts(
            vlm,
            segmenter,
            batch,
            settings,
            min_pixels=min_pixels(vlm),
            max_pixels=DEFAULT_MAX_PIXELS,
            seed=0,
        )
    rewards = torch.tensor([r.reward.total for r in rollouts.responses])
    advantages = group_advantages(rewards, g) if g > 1 else torch.zeros(len(rewards))
    optimizer = torch.optim.AdamW([p for p in vlm.model.parameters() if p.requires_grad], lr=1e-6)
    rows = rollouts.responses
    phases.prefix = "update_"
    total = float(sum(len(r.token_ids) for r in rows))
    vlm.model.train()
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        ids, mask = pad_right([r.token_ids for r in chunk], vlm.processor.tokenizer.pad_token_id)
        with phases.phase("forward"):
            with torch.no_grad():
                ref = policy_logprobs(vlm, rollouts, chunk, ids, mask)
            logp = policy_logprobs(vlm, rollouts, chunk, ids, mask)
            loss, _ = clipped_policy_loss(
                logp,
                logp.detach(),
                advantages[start : start + len(chunk)],
                mask.to(logp.device),
                clip_eps=0.2,
                kl_beta=0.005,
                ref_logp=ref,
                total_tokens=total,
            )
        with phases.phase("backward"):
            loss.backward()
    with phases.phase("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    vlm.model.eval()
    phases.prefix = ""
    return rollouts.timings


def inference(vlm, segmenter, batch, g, share, decoding, tokens, phases, mode="two-stage"):
    """The engine without rewards: two-stage inference (the pipeline's call at G = 1), or
    stage 1 alone with G responses per prompt."""
    sampling = SamplingSettings(max_new_tokens=tokens, decoding=decoding)
    settings = engine.EngineSettings(
        mode=mode, group_size=g, stage1=sampling, stage2=sampling, share_prefix=share
    )
    with phases.phase("rollout"):
        jobs = [
            engine.prepare(
                segmenter,
                s.sat,
                s.map,
                s.query,
                min_pixels(vlm),
                DEFAULT_MAX_PIXELS,
                vlm.family.factor,
            )
            for s in batch
        ]
        out = engine.run(vlm, segmenter, jobs, settings)
    return out.timings


def stage1(vlm, segmenter, batch, g, share, decoding, tokens, phases):
    return inference(vlm, segmenter, batch, g, share, decoding, tokens, phases, mode="stage1")


def measure(args, vlm, segmenter, kind, g, b, share, decoding) -> dict:
    """Seconds per phase of one configuration (compiled: after one untimed warm-up run)."""
    run = {"step": grpo_step, "infer": inference, "stage1": stage1}[kind]
    batch = samples(b, args.size)
    if args.warmup or decoding == "compiled":
        phases = Phases(vlm, segmenter, hooks=decoding != "compiled")
        run(vlm, segmenter, batch, g, share, decoding, args.tokens, phases)
        phases.close()
    best = None
    for _ in range(args.repeats):  # keep the fastest run: the others met more interference
        phases = Phases(vlm, segmenter, hooks=decoding != "compiled")
        timings = run(vlm, segmenter, batch, g, share, decoding, args.tokens, phases)
        phases.close()
        seconds = _phases(kind, timings, phases.seconds)
        if best is None or seconds["total"] < best["total"]:
            best = seconds
    return best


def _phases(kind: str, timings: dict[str, float], s: dict[str, float]) -> dict:
    """Seconds per reported phase from the engine's timings and the hooks' seconds."""
    generate = sum(v for k, v in timings.items() if k.endswith("_generate"))
    in_generate = s["preprocess"] - timings.get("preprocess", 0.0)  # unshared: per-row encoding
    out = {
        "preprocess": s["preprocess"],
        "vision": s["vision"],
        "prefill": s["prefill"],
        "decode": generate - s["vision"] - s["prefill"] - in_generate,
        "sam": s["sam_embed"] + sum(v for k, v in timings.items() if k.endswith("_sam")),
        "render": timings.get("render", 0.0),
        "rewards": timings.get("rewards", 0.0),
        "stage1_generate": timings["stage1_generate"],
        "stage2_generate": timings.get("stage2_generate", 0.0),
        "rollout": s["rollout"],
    }
    if kind == "step":
        out |= {k: s[f"update_{k}"] for k in ("forward", "backward", "optimizer")}
        out["update_vision"] = s["update_vision"]
    out["total"] = s["rollout"] + sum(
        s[f"update_{k}"] for k in ("forward", "backward", "optimizer")
    )
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kinds", nargs="+", default=["step", "infer"], choices=["step", "infer", "stage1"]
    )
    parser.add_argument("--size", type=int, default=768, help="sample size in px (768: real)")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--shares", nargs="+", default=["shared", "unshared"])
    parser.add_argument("--decoding", nargs="+", default=["eager"], choices=["eager", "compiled"])
    parser.add_argument("--tokens", type=int, default=16, help="response tokens per stage")
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--warmup", action="store_true", help="an untimed run first")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (min)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--vlm-family",
        choices=tuple(POLICIES),
        default="qwen2_5_vl",
        help="policy architecture (Qwen3-VL and Qwen3.5 at their 4B widths)",
    )
    args = parser.parse_args()
    frame_min = min(DEFAULT_MIN_PIXELS, args.size**2)  # smaller samples keep their size
    vlm = cut_model(
        args.vlm_family, args.text_layers, args.vision_depth, args.device, args.dtype, frame_min
    )
    segmenter = Segmenter.from_pretrained(build_tiny_sam(tempfile.mkdtemp()), device=args.device)
    base = {"vlm_family": args.vlm_family, "text_layers": args.text_layers}
    base |= {"vision_depth": args.vision_depth}
    base |= {"tokens": args.tokens, "size": args.size, "device": args.device, "dtype": args.dtype}
    # One untimed run first: the process's first forward pays one-time costs.
    warm = Phases(vlm, segmenter)
    stage1(vlm, segmenter, samples(1, args.size), 1, True, "eager", 2, warm)
    warm.close()
    results = {}
    for kind in args.kinds:
        for decoding in args.decoding:
            for b in args.batches:
                for g in args.groups if kind != "infer" else [1]:
                    for share in args.shares if g > 1 else ["shared"]:
                        seconds = measure(
                            args, vlm, segmenter, kind, g, b, share == "shared", decoding
                        )
                        key = (kind, decoding, b, g)
                        results.setdefault(key, {})[share] = seconds
                        config = {"kind": kind, "decoding": decoding, "batch": b, "group": g}
                        print(
                            json.dumps(base | config | {"prompts": share, "seconds": seconds}),
                            flush=True,
                        )
    for (kind, decoding, b, g), pair in results.items():
        if {"shared", "unshared"} <= pair.keys():
            ratio = {
                k: round(pair["unshared"][k] / pair["shared"][k], 2)
                for k in pair["shared"]
                if pair["shared"][k] > 0
            }
            config = {"kind": kind, "decoding": decoding, "batch": b, "group": g}
            print(json.dumps(base | config | {"unshared_over_shared": ratio}), flush=True)


if __name__ == "__main__":
    main()
