"""Seconds per sample of two-stage inference, batched; peak GPU memory on CUDA.

    python benchmarks/bench_pipeline.py                      # tiny random models, CPU
    python benchmarks/bench_pipeline.py --vlm vvangfaye/SocioReasoner-3B \
        --sam facebook/sam2-hiera-large-hf --device cuda --batch-sizes 1 4 8

Inputs are the bundled 768 x 768 examples, repeated to fill the batches. Decoding is greedy
with a fixed token limit, so runs are comparable.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from socioseg.data import load_example
from socioseg.models.builders import VLM_FAMILIES, build_tiny_family_models
from socioseg.models.vlm import SamplingSettings
from socioseg.socioreasoner import InferenceConfig, SocioReasoner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", default=None, help="default: tiny random model")
    parser.add_argument("--sam", default=None, help="default: tiny random model")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--vlm-family",
        choices=VLM_FAMILIES,
        default="qwen2_5_vl",
        help="policy architecture of the tiny random model",
    )
    args = parser.parse_args()
    if args.vlm is None or args.sam is None:
        vlm, sam = build_tiny_family_models(tempfile.mkdtemp(), args.vlm_family)
        args.vlm, args.sam = args.vlm or str(vlm), args.sam or str(sam)
    config = InferenceConfig(
        sampling=SamplingSettings(greedy=True, max_new_tokens=args.max_new_tokens)
    )
    model = SocioReasoner.from_pretrained(args.vlm, args.sam, device=args.device, config=config)
    examples = [load_example(i) for i in range(3)]
    items = [(e.sat, e.map, e.query) for e in examples]
    model.segment_batch(items[:1])  # warm-up
    cuda = torch.cuda.is_available() and model.vlm.device.type == "cuda"
    print(f"vlm {args.vlm} | sam {args.sam} | device {model.vlm.device}")
    for batch_size in args.batch_sizes:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        batch = [items[i % len(items)] for i in range(args.samples)]
        started = time.perf_counter()
        for start in range(0, len(batch), batch_size):
            model.segment_batch(batch[start : start + batch_size])
        seconds = (time.perf_counter() - started) / len(batch)
        memory = (
            f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
        )
        print(f"batch {batch_size}: {seconds:.3f} s/sample over {len(batch)} samples{memory}")


if __name__ == "__main__":
    main()
