"""Time one ``socioseg sft`` step (forward, backward, AdamW) and what each image-token label adds.

    OMP_NUM_THREADS=1 python benchmarks/bench_sft.py           # checkpoints/mini-phase-b, CPU
    python benchmarks/bench_sft.py --vlm FOLDER --device cuda --batch 8

The batch is ``--batch`` stage-1 teacher examples of randomly placed synthetic tiles (256 px,
the mini's 252 x 252 frame), as phase B of the mini curriculum draws them. Prints the median
seconds of --repeats steps (after a warm-up) for the answer loss alone, then with the position
and entity labels, with the attention label too (one decoder layer's weights, read with eager
attention), and with the query label, each with its ratio to the answer loss alone; then the
attention label again with every layer on eager attention (what reading one layer's weights
cost when the whole model had to switch). Steps of all settings take turns.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.geometry import Frames
from socioseg.models.vlm import VisionLanguageModel
from socioseg.train.config import AuxSettings
from socioseg.train.sft import sample_aux_labels, supervised_losses
from socioseg.train.teacher import teacher_examples

PHASE_B = Path(__file__).resolve().parents[1] / "checkpoints" / "mini-phase-b"
FRAME = (50176, 63504)  # min_pixels, max_pixels: 256 px tiles at 252 x 252
_TOKENS = AuxSettings(position=1.0, entity=1.0, layer=2, entity_layer=3)
_ATTENTION = replace(_TOKENS, attention=1.0, attention_layer=4)
LABELS = {  # each setting adds to the one before it
    "answer loss alone": AuxSettings(),
    "+ position, entity": _TOKENS,
    "+ attention": _ATTENTION,
    "+ query": replace(_ATTENTION, attention_first=2.0, query=1.0),
}


def batch(policy: VisionLanguageModel, size: int):
    """``size`` stage-1 teacher examples of held-out random tiles, with their labels."""
    examples, labels = [], []
    tokenizer = policy.processor.tokenizer
    index = 0
    while len(examples) < size:
        tile = generate_tile(1000, index, 256, MAX_QUERIES, placement="random")
        frames = Frames.for_image(tile[0].sat.size, *FRAME, policy.family.factor)
        for k, sample in enumerate(tile[: size - len(examples)]):
            examples.append(teacher_examples(sample, *FRAME, family=policy.family)[0])
            others = tile[:k] + tile[k + 1 :]
            labels.append(sample_aux_labels(sample, frames, policy.family, tokenizer, others))
        index += 1
    return examples, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", default=str(PHASE_B), help="policy folder (default: phase B's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    policy = VisionLanguageModel.from_pretrained(args.vlm, args.device, "float32", *FRAME)
    policy.model.train()
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-6)
    examples, labels = batch(policy, args.batch)

    def step(aux: AuxSettings) -> None:
        loss, _ = supervised_losses(policy, examples, labels, aux)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if policy.device.type == "cuda":
            torch.cuda.synchronize()

    print(
        f"{args.vlm}: {args.batch} stage-1 examples, {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    runs = {name: (aux, False) for name, aux in LABELS.items()}
    runs["+ attention, all eager"] = (LABELS["+ attention"], True)
    implementation = policy.model.config._attn_implementation

    def timed(aux: AuxSettings, all_eager: bool) -> float:
        policy.model.set_attn_implementation("eager" if all_eager else implementation)
        start = time.perf_counter()
        step(aux)
        return time.perf_counter() - start

    for aux, all_eager in runs.values():
        timed(aux, all_eager)  # warm-up
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # round robin: a slower spell of the machine hits all alike
        for name, (aux, all_eager) in runs.items():
            times[name].append(timed(aux, all_eager))
    base = statistics.median(times["answer loss alone"])
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"{name:24s} {seconds:6.2f} s/step  x{seconds / base:.2f}")


if __name__ == "__main__":
    main()
