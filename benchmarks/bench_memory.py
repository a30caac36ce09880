"""Memory plan vs measured peak, and how many weights one lr-1e-6 step changes, per precision.

    python benchmarks/bench_memory.py

1. The 3B plans (released config on one GPU and on 8 with FSDP; the 1-GPU config), built
   from Qwen2.5-VL-3B's architecture on the meta device.
2. One GRPO update of the tiny test model (8 responses in one micro-batch) in each precision
   mode: peak tensor bytes counted by ``socioseg.train.memory_plan.TensorMeter`` beside the plan.
3. One AdamW step at lr 1e-6 on the same gradients: the fraction of weights that change when
   they are stored in float32, in bfloat16 (rounded to nearest: what keeping the weights in
   bfloat16 without a master copy does), and in bfloat16 with stochastic rounding.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from socioseg.models.vlm import Generation
from socioseg.train.config import load_config
from socioseg.train.grpo import Trainer
from socioseg.train.memory_plan import format_plan, measure_update, plan
from socioseg.train.optim import AdamW
from socioseg.train.rollout import collect_rollouts

CONFIGS = Path(__file__).parent.parent / "configs"
MODES = {
    "float32": [],
    "bf16 compute, float32 masters": ["model.dtype=bfloat16"],
    "float32, gradient checkpointing": ["model.gradient_checkpointing=true"],
    "bf16 + stochastic rounding": [
        "model.dtype=bfloat16",
        "optim.master_weights=bf16_stochastic_rounding",
    ],
}
ANSWERS = (
    '<think>a</think><answer>[{"bbox_2d": [10, 10, 60, 60]}]</answer>',
    '<answer>[{"bbox_2d": [5, 5, 100, 90], "points": [[50, 50]]}]</answer>',
    "no answer at all",
)


def scripted(policy) -> None:
    """Rollouts from a fixed pool of answers: the same rows in every mode."""
    tokenizer = policy.processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(inputs, sampling):
        rng = np.random.default_rng(sampling.seed)
        picks = rng.integers(0, len(ANSWERS), inputs["input_ids"].shape[0])
        return [Generation(ANSWERS[i], (*tokenizer(ANSWERS[i]).input_ids, eos)) for i in picks]

    policy.generate = generate


def overrides(models: tuple[Path, Path], data: Path, extra: list[str]) -> list[str]:
    return [
        f"model.vlm={models[0]}",
        f"model.sam={models[1]}",
        "model.min_pixels=3136",
        "model.max_pixels=12544",
        f"data.train={data}",
        "rollout.group_size=2",
        "batch_size=2",
        "optim.micro_batch_size=8",
        *extra,
    ]


def plan_vs_measured(models, data: Path, work: Path) -> None:
    print("\nupdate of the tiny model, 8 rows in one micro-batch (tensor bytes):")
    for name, extra in MODES.items():
        config = load_config(None, overrides(models, data, extra))
        trainer = Trainer(config, work / name.replace(" ", "_").replace(",", ""))
        scripted(trainer.policy)
        rollouts = collect_rollouts(
            trainer.policy,
            trainer.segmenter,
            trainer.batch_samples(0),
            config.rollout,
            min_pixels=3136,
            max_pixels=12544,
            seed=0,
        )
        peak, prompt, response = measure_update(trainer, rollouts)
        planned_config = load_config(
            None, overrides(models, data, [*extra, f"rollout.max_response_tokens={response}"])
        )
        planned = plan(
            planned_config,
            model_cfg=trainer.policy.model.config,
            device_type="cpu",
            prompt_tokens=prompt,
        ).update_peak
        print(
            f"  {name:<34} measured {peak / 1e6:6.1f} MB  plan {planned / 1e6:6.1f} MB  "
            f"plan/measured {planned / peak:.3f}"
        )


def fraction_changed(models) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(models[0])
    ids = torch.randint(0, 500, (4, 64))
    model(input_ids=ids, labels=ids).loss.backward()
    print("\none AdamW step at lr 1e-6 (same gradients, language model): weights changed")
    setups = {
        "float32 weights": (torch.float32, torch.optim.AdamW),
        "bfloat16 weights, round to nearest": (torch.bfloat16, torch.optim.AdamW),
        "bfloat16 weights, stochastic rounding": (torch.bfloat16, AdamW),
    }
    for name, (dtype, optimizer_class) in setups.items():
        params = []
        for p in model.parameters():
            if p.grad is None:  # the vision tower: a text-only loss
                continue
            q = torch.nn.Parameter(p.detach().to(dtype))
            q.grad = p.grad.to(dtype)
            params.append(q)
        before = [q.detach().clone() for q in params]
        torch.manual_seed(0)
        optimizer_class(params, lr=1e-6, weight_decay=0.01).step()
        changed = sum((b != q).sum().item() for b, q in zip(before, params, strict=True))
        total = sum(q.numel() for q in params)
        print(f"  {name:<40} {changed / total:7.2%}")


def main() -> None:
    from socioseg.data.synth import write_dataset
    from socioseg.models.builders import build_tiny_models

    torch.set_num_threads(1)
    for title, file, world, extra in (
        ("released config, 1 GPU", "socioreasoner_3b.yaml", 1, []),
        ("released config, 8 GPUs, FSDP", "socioreasoner_3b.yaml", 8, ["distributed=fsdp"]),
        ("1-GPU config", "socioreasoner_3b_1gpu.yaml", 1, []),
    ):
        config = load_config(CONFIGS / file, extra)
        print(f"\n{title} ({file}):")
        print("\n".join(format_plan(plan(config, world), config, world)))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_tiny_models(work / "models")
        write_dataset(work / "data", n=12, seed=0, size=128)
        plan_vs_measured(models, work / "data", work)
        fraction_changed(models)


if __name__ == "__main__":
    main()
