"""GRPO training of both SocioReasoner stages with one policy (SPEC §5).

Each step, top to bottom:

1. Take the step's B prompts (deterministic from the seed and the step; each of the W
   processes takes B / W of them).
2. Roll out (:mod:`socioseg.train.rollout`): G stage-1 samples per prompt, SAM coarse masks,
   rendering, stage-2 samples, final masks, rule-based rewards for both stages.
3. Advantages: rewards normalised within each group of G, separately per stage
   (:func:`~socioseg.train.algorithms.group_advantages`).
4. Update, one PPO epoch: PPO clipped surrogate on token ratios + beta x k3 KL to the frozen
   reference, averaged over every response token of the step on all processes, in
   micro-batches with gradient accumulation, grad-norm clipping, AdamW.

Precision (:mod:`socioseg.train.precision`): the trainable weights and AdamW states are float32
master copies and a bfloat16 run computes under autocast, as Megatron does for the released
run; pure bfloat16 weights are trained only with stochastic rounding. The reference policy's
log-probs for the whole step are computed before the update, so with
``model.offload_reference`` it visits the GPU only then.

Deviations from the released code, all deliberate: rollouts come from ``transformers``'
``generate`` instead of vLLM; a step makes one optimizer update from its rollouts, so the
rollout policy is the policy being updated and the "old" log-probs are the current ones
detached (the ratio is 1 in value and carries the gradient). With LoRA the reference policy
is the base model with adapters disabled, not a second copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from socioseg.models.vlm import VisionLanguageModel, pad_right
from socioseg.train import checkpoint, parallel, precision
from socioseg.train.algorithms import clipped_policy_loss, group_advantages
from socioseg.train.config import TrainConfig
from socioseg.train.optim import build_optimizer
from socioseg.train.rollout import Rollouts, collect_rollouts, policy_logprobs
from socioseg.train.runlog import RunLog

LogFn = Callable[[int, dict[str, float]], None]


class Trainer:
    """Holds the models, optimizer and data of one training run; :meth:`train` runs it."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        resume: bool = False,
        overwrite: bool = False,
    ):
        """``resume``: continue from the newest usable checkpoint in ``out_dir`` (the ones
        skipped, and why, are in ``resume_notes``); ``overwrite``: replace the run in
        ``out_dir``. Without either, an ``out_dir`` holding a run is a CheckpointError."""
        from socioseg.data.dataset import load_socioseg
        from socioseg.models.segmenter import Segmenter

        self.config = config
        self.out_dir = Path(out_dir)
        self.rank, self.world, self.device = parallel.init_distributed()
        config.check_world(self.world)
        self.precision = precision.resolve(config, self.device)
        if self.rank == 0:
            checkpoint.prepare_run_dir(self.out_dir, resume, overwrite)
        parallel.barrier()
        self.resume_from, self.resume_notes = None, []
        if resume:
            self.resume_from, self.resume_notes = checkpoint.latest(self.out_dir)
        self.dataset = load_socioseg(
            config.data.train, config.data.train_split, levels=config.data.levels
        )
        if len(self.dataset) == 0:
            raise ValueError(f"{config.data.train} [{config.data.train_split}] has no samples")
        self.policy, self.reference = self._load_policy()
        self.segmenter = Segmenter.from_pretrained(config.model.sam, device=str(self.device))
        self.forward_model = parallel.shard(
            self.policy, config.distributed, self.world, self.device
        )
        if self.reference is not None and config.distributed == "fsdp":
            parallel.shard(self.reference, "fsdp", self.world, self.device)
        self.params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, config.optim, self.precision)
        warmup = config.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        self.step = 0
        if self.resume_from is not None:
            self.step = checkpoint.load_training_state(self.resume_from, self, self.rank)
        self.log = None
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.out_dir / "config.yaml")
            # metrics.csv and validation.csv beside the TensorBoard events
            self.log = RunLog(self.out_dir, self.step)

    def _load_policy(self) -> tuple[VisionLanguageModel, VisionLanguageModel | None]:
        m = self.config.model
        source = m.vlm
        if self.resume_from is not None and m.lora is None:
            source = str(self.resume_from)
        # Under LoRA the base is frozen (compute dtype; peft keeps adapters in float32).
        dtype = self.precision.load_dtype(trainable=m.lora is None)
        policy = VisionLanguageModel.from_pretrained(
            source, str(self.device), dtype, m.min_pixels, m.max_pixels
        )
        precision.apply_autocast(policy.model, self.precision)
        reference = None
        if m.lora is not None:
            adapter = None if self.resume_from is None else self.resume_from / "adapter"
            policy.model = checkpoint.add_lora(policy.model, m.lora, adapter)
        elif self.config.optim.kl_beta > 0:
            # Stored like the policy, so that the KL of an unchanged policy is exactly 0.
            home = "cpu" if m.offload_reference else str(self.device)
            reference = VisionLanguageModel.from_pretrained(
                m.vlm, home, dtype, m.min_pixels, m.max_pixels
            )
            reference.model.requires_grad_(False)
            precision.apply_autocast(reference.model, self.precision)
        if m.gradient_checkpointing:
            # transformers >= 5.23 names it activation checkpointing
            enable = getattr(policy.model, "activation_checkpointing_enable", None)
            (enable or policy.model.gradient_checkpointing_enable)()
            if m.lora is not None:
                policy.model.enable_input_require_grads()
        return policy, reference

    def batch_samples(self, step: int) -> list:
        """This process's share of step ``step``'s prompts (epochs reshuffled by the seed)."""
        n, b = len(self.dataset), self.config.batch_size
        per_rank = b // self.world
        positions = range(step * b + self.rank * per_rank, step * b + (self.rank + 1) * per_rank)
        orders: dict[int, np.ndarray] = {}
        indices = []
        for position in positions:
            epoch, offset = divmod(position, n)
            if epoch not in orders:
                orders[epoch] = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            indices.append(int(orders[epoch][offset]))
        return [self.dataset[i] for i in indices]

    def train(self, on_log: LogFn | None = None) -> dict[str, float]:
        """Run from the current step to ``config.steps``; returns the last step's metrics."""
        metrics: dict[str, float] = {}
        while self.step < self.config.steps:
            metrics = self.train_step()
            self.step += 1
            if self.rank == 0 and (self.step % self.config.log_every == 0):
                self.log.log(self.step, metrics)
                if on_log is not None:
                    on_log(self.step, metrics)
            last = self.step == self.config.steps
            if self.step % self.config.save_every == 0 or last:
                checkpoint.save(self, self.out_dir / f"checkpoint-{self.step}")
            if self.config.eval_every and (self.step % self.config.eval_every == 0 or last):
                self._validate()
        if self.log is not None:
            self.log.flush()
        return metrics

    def train_step(self) -> dict[str, float]:
        """One GRPO step: rollouts, advantages, one optimizer update. Returns its metrics."""
        started = time.perf_counter()
        samples = self.batch_samples(self.step)
        self.policy.model.eval()
        with precision.shared_casts(self.precision):
            rollouts = collect_rollouts(
                self.policy,
                self.segmenter,
                samples,
                self.config.rollout,
                reward_variant=self.config.reward_variant,
                min_pixels=self.config.model.min_pixels,
                max_pixels=self.config.model.max_pixels,
                seed=(self.config.seed * 100_003 + self.step) * 1_009 + self.rank,
            )
        rolled = time.perf_counter()
        advantages = self._advantages(rollouts)
        update = self._update(rollouts, advantages)
        done = time.perf_counter()
        metrics = {
            **_rollout_metrics(rollouts),
            **update,
            "time/rollout_s": rolled - started,
            "time/update_s": done - rolled,
            "time/step_s": done - started,
            "lr": self.scheduler.get_last_lr()[0],
        }
        return _mean_over_processes(metrics, self.world, self.device)

    def _advantages(self, rollouts: Rollouts) -> torch.Tensor:
        o = self.config.optim
        parts = []
        for stage in ("stage1", "stage2"):
            rewards = torch.tensor([r.reward.total for r in rollouts.stage(stage)])
            parts.append(
                group_advantages(
                    rewards,
                    rollouts.group_size,
                    std_normalize=o.std_normalize,
                    reward_clip=o.reward_clip,
                    advantage_clip=o.advantage_clip,
                )
            )
        return torch.cat(parts)

    def _update(self, rollouts: Rollouts, advantages: torch.Tensor) -> dict[str, float]:
        o = self.config.optim
        rows = rollouts.responses
        tokens = torch.tensor(float(sum(len(r.token_ids) for r in rows)), device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(tokens)
        self.policy.model.train()
        chunks = [
            range(i, min(i + o.micro_batch_size, len(rows)))
            for i in range(0, len(rows), o.micro_batch_size)
        ]
        totals = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio": 0.0}
        ref_logps = self._reference_pass(rollouts, chunks) if o.kl_beta > 0 else None
        for n, chunk in enumerate(chunks):
            batch, ids, mask = self._micro_batch(rollouts, chunk)
            ref_logp = None if ref_logps is None else ref_logps[n]
            last = n == len(chunks) - 1
            with parallel.gradient_sync(self.forward_model, enabled=last):
                logp = policy_logprobs(self.policy, rollouts, batch, ids, mask, self.forward_model)
                loss, stats = clipped_policy_loss(
                    logp,
                    logp.detach(),
                    advantages[list(chunk)].to(logp.device),
                    mask.to(logp.device),
                    clip_eps=o.clip_eps,
                    kl_beta=o.kl_beta,
                    ref_logp=ref_logp,
                    total_tokens=float(tokens),
                )
                (loss * self.world).backward()
            weight = stats.tokens / max(float(tokens), 1.0) * self.world
            totals["loss"] += loss.item() * self.world
            for key in ("kl", "clip_fraction", "ratio"):
                totals[key] += getattr(stats, key) * weight
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, o.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.model.eval()
        return {f"train/{k}": v for k, v in totals.items()} | {
            "train/grad_norm": parallel.as_float(grad_norm)
        }

    def _micro_batch(self, rollouts: Rollouts, chunk: range):
        """The responses ``chunk``, their B x T ids and mask (prompts stay encoded in
        ``rollouts``; :func:`~socioseg.train.rollout.policy_logprobs` reuses them)."""
        batch = [rollouts.responses[i] for i in chunk]
        ids, mask = pad_right(
            [r.token_ids for r in batch], self.policy.processor.tokenizer.pad_token_id
        )
        return batch, ids, mask

    @torch.no_grad()
    def _reference_pass(self, rollouts: Rollouts, chunks: list[range]) -> list[torch.Tensor]:
        """Reference log-probs (B x T float32 per micro-batch) of the step, before the update."""
        offload = self.reference is not None and self.config.model.offload_reference
        if offload:
            self.reference.model.to(self.device)
        try:
            with precision.shared_casts(self.precision):
                return [
                    self._reference_logprobs(rollouts, *self._micro_batch(rollouts, c))
                    for c in chunks
                ]
        finally:
            if offload:
                self.reference.model.to("cpu")

    def _reference_logprobs(self, rollouts, batch, ids, mask) -> torch.Tensor:
        if self.reference is not None:
            return policy_logprobs(self.reference, rollouts, batch, ids, mask)
        with self.policy.model.disable_adapter():
            return policy_logprobs(self.policy, rollouts, batch, ids, mask)

    def _validate(self) -> None:
        if self.rank != 0 or self.config.data.val is None:
            return
        from socioseg.train.validation import validate

        with precision.shared_casts(self.precision):
            scores = validate(self, self.out_dir / f"validation-{self.step}")
        self.log.log(self.step, scores, table="validation")


def _rollout_metrics(rollouts: Rollouts) -> dict[str, float]:
    out = {}
    for stage in ("stage1", "stage2"):
        rows = rollouts.stage(stage)
        for part in ("total", "format", "accuracy", "length"):
            out[f"{stage}/reward_{part}"] = float(np.mean([getattr(r.reward, part) for r in rows]))
        out[f"{stage}/iou"] = float(np.mean([r.iou for r in rows]))
        out[f"{stage}/response_tokens"] = float(np.mean([len(r.token_ids) for r in rows]))
        out[f"{stage}/truncated"] = float(np.mean([r.truncated for r in rows]))
    return out


def _mean_over_processes(metrics: dict[str, float], world: int, device) -> dict[str, float]:
    if world == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return {k: float(v) / world for k, v in zip(keys, values.tolist(), strict=True)}
