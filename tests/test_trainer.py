"""GRPO training on tiny models: a step learns, resume is exact, two processes agree."""

import math

import numpy as np
import pytest
import torch

from socioseg.models.vlm import Generation
from socioseg.train.config import load_config
from socioseg.train.grpo import Trainer
from socioseg.train.rollout import PromptTooLongError, collect_rollouts
from tests.distributed import run_processes

POOL = (
    '<think>a</think><answer>[{"bbox_2d": [10, 10, 60, 60]}]</answer>',
    '<think>b</think><answer>[{"bbox_2d": [5, 5, 100, 90], "points": [[50, 50]]}]</answer>',
    "no answer at all",
    '<answer>[{"bbox_2d": [0, 0, 112, 112]}, {"bbox_2d": [20, 30, 40, 50]}]</answer>',
)


def scripted_generate(policy):
    """Replace ``policy.generate`` by a seeded pick from POOL (so rewards differ in a group)."""
    tokenizer = policy.processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(inputs, sampling, group_size=1):
        rng = np.random.default_rng(sampling.seed)
        rows = inputs["input_ids"].shape[0] * group_size
        texts = [POOL[i] for i in rng.integers(0, len(POOL), rows)]
        return [Generation(t, (*tokenizer(t).input_ids, eos)) for t in texts]

    policy.generate = generate


def config(tiny_models, synth_dir, *overrides):
    return load_config(
        None,
        [
            f"model.vlm={tiny_models[0]}",
            f"model.sam={tiny_models[1]}",
            "model.min_pixels=3136",
            "model.max_pixels=12544",
            f"data.train={synth_dir}",
            "rollout.group_size=2",
            "rollout.max_response_tokens=24",
            "batch_size=2",
            "optim.lr=1e-3",
            "optim.micro_batch_size=3",
            "save_every=100",
            *overrides,
        ],
    )


def trainer(cfg, out, resume=False):
    t = Trainer(cfg, out, resume=resume)
    scripted_generate(t.policy)
    return t


def test_one_step_changes_parameters_and_logs_finite_numbers(tiny_models, synth_dir, tmp_path):
    cfg = config(tiny_models, synth_dir, "steps=1", "optim.weight_decay=0")
    t = trainer(cfg, tmp_path)
    before = {k: v.detach().clone() for k, v in t.policy.model.named_parameters()}
    logged = []
    metrics = t.train(on_log=lambda step, m: logged.append((step, m)))
    assert logged and logged[0][0] == 1
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["train/grad_norm"] > 0
    assert metrics["stage1/reward_format"] > 0  # the scripted pool has well-formed answers
    changed = [k for k, v in t.policy.model.named_parameters() if not torch.equal(before[k], v)]
    assert changed
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    header, row = (tmp_path / "metrics.csv").read_text().splitlines()
    assert row.split(",")[0] == "1" and "stage1/iou" in header.split(",")
    assert "stage2/reward_total" in header.split(",")
    ckpt = tmp_path / "checkpoint-1"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.yaml").is_file()


def test_checkpoint_loads_as_a_segmenter_policy(tiny_models, synth_dir, tmp_path):
    from socioseg.socioreasoner import InferenceConfig, SocioReasoner

    trainer(config(tiny_models, synth_dir, "steps=1", "optim.kl_beta=0"), tmp_path).train()
    model = SocioReasoner.from_pretrained(
        vlm=str(tmp_path / "checkpoint-1"),
        sam=str(tiny_models[1]),
        device="cpu",
        config=InferenceConfig(min_pixels=3136, max_pixels=12544),
    )
    assert model.vlm.model.config.model_type == "qwen2_5_vl"


def test_kill_and_resume_gives_the_same_next_loss(tiny_models, synth_dir, tmp_path):
    straight = trainer(config(tiny_models, synth_dir, "steps=2"), tmp_path / "a")
    losses = []
    straight.train(on_log=lambda step, m: losses.append(m))
    first = trainer(config(tiny_models, synth_dir, "steps=2", "save_every=1"), tmp_path / "b")
    first.train_step()
    first.step = 1
    from socioseg.train import checkpoint

    checkpoint.save(first, tmp_path / "b" / "checkpoint-1")
    del first  # "killed" after step 1
    resumed = trainer(config(tiny_models, synth_dir, "steps=2"), tmp_path / "b", resume=True)
    assert resumed.step == 1
    after = []
    resumed.train(on_log=lambda step, m: after.append(m))
    assert len(after) == 1
    for key in ("train/loss", "train/kl", "train/grad_norm", "stage2/reward_total"):
        assert after[0][key] == pytest.approx(losses[1][key], rel=1e-5, abs=1e-7), key


def test_lora_trains_adapters_only_and_uses_the_base_as_reference(tiny_models, synth_dir, tmp_path):
    cfg = config(
        tiny_models,
        synth_dir,
        "steps=1",
        "model.lora={rank: 4, alpha: 8}",
        "model.gradient_checkpointing=true",
    )
    t = trainer(cfg, tmp_path)
    assert t.policy.model.get_base_model().is_activation_checkpointing
    assert t.reference is None
    assert all("lora_" in n for n, p in t.policy.model.named_parameters() if p.requires_grad)
    assert not any("visual" in n for n, p in t.policy.model.named_parameters() if p.requires_grad)
    metrics = t.train()
    assert math.isfinite(metrics["train/loss"])
    assert (tmp_path / "checkpoint-1" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "checkpoint-1" / "model.safetensors").is_file()


def test_paper_strategy_samples_the_group_from_the_best_stage1(tiny_models, synth_dir, tmp_path):
    t = trainer(
        config(tiny_models, synth_dir, "rollout.strategy=paper", "rollout.group_size=3"), tmp_path
    )
    rollouts = collect_rollouts(
        t.policy,
        t.segmenter,
        t.batch_samples(0),
        t.config.rollout,
        min_pixels=3136,
        max_pixels=12544,
        seed=5,
    )
    s1, s2 = rollouts.stage("stage1"), rollouts.stage("stage2")
    assert len(s1) == len(s2) == 6
    assert len({r.prompt for r in s2}) == 2  # one rendered prompt per group, sampled 3 times
    assert [r.group for r in s2] == [2, 2, 2, 3, 3, 3]


def test_prompt_over_budget_is_a_clear_error(tiny_models, synth_dir, tmp_path):
    t = trainer(config(tiny_models, synth_dir, "rollout.max_prompt_tokens=50"), tmp_path)
    with pytest.raises(PromptTooLongError, match=r"image tokens.*max_pixels"):
        t.train_step()


def test_batch_must_divide_over_processes(tiny_models, synth_dir):
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        config(tiny_models, synth_dir, "batch_size=3").check_world(2)


def _worker(rank, cfg, out, results):
    t = trainer(cfg, out)
    metrics = t.train()
    full = [
        p.full_tensor() if hasattr(p, "full_tensor") else p for p in t.policy.model.parameters()
    ]
    flat = torch.cat([p.detach().flatten() for p in full])
    torch.save({"metrics": metrics, "params": flat}, f"{results}/rank{rank}.pt")
    torch.distributed.barrier()  # neither rank tears gloo down while the other still talks
    torch.distributed.destroy_process_group()


def train_two_processes(cfg, tmp_path):
    """Train ``cfg`` in two spawned gloo processes; returns each rank's metrics and params."""
    run_processes(_worker, cfg, str(tmp_path / "run"), str(tmp_path))
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_two_processes_with_gloo_train_in_lockstep(tiny_models, synth_dir, tmp_path):
    cfg = config(tiny_models, synth_dir, "steps=1", "batch_size=4", "optim.kl_beta=0")
    a, b = train_two_processes(cfg, tmp_path)
    assert torch.equal(a["params"], b["params"])  # DDP kept the replicas identical
    assert a["metrics"] == b["metrics"]  # metrics are averaged over the processes
    assert math.isfinite(a["metrics"]["train/loss"])
    assert (tmp_path / "run" / "checkpoint-1" / "rng-rank1.pt").is_file()


def test_two_processes_with_fsdp_shard_and_checkpoint(tiny_models, synth_dir, tmp_path):
    cfg = config(tiny_models, synth_dir, "steps=1", "batch_size=4", "distributed=fsdp")
    a, b = train_two_processes(cfg, tmp_path)
    assert a["metrics"] == b["metrics"] and math.isfinite(a["metrics"]["train/loss"])
    assert torch.equal(a["params"], b["params"])
    # the gathered checkpoint is a normal Hugging Face model
    from transformers import Qwen2_5_VLForConditionalGeneration

    ckpt = tmp_path / "run" / "checkpoint-1"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_models[0])
    assert set(model.state_dict()) == set(base.state_dict())
    assert not all(
        torch.equal(model.state_dict()[k], base.state_dict()[k]) for k in base.state_dict()
    )


def test_periodic_validation_writes_scores(tiny_models, synth_dir, tmp_path):
    cfg = config(
        tiny_models,
        synth_dir,
        "steps=1",
        f"data.val={synth_dir}",
        "data.val_limit=2",
        "eval_every=1",
    )
    trainer(cfg, tmp_path).train()
    assert (tmp_path / "validation-1" / "metrics.json").is_file()
    assert (tmp_path / "validation-1" / "report.md").is_file()
