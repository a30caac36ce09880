"""Periodic validation during training: the evaluation module on the current policy, greedy."""

from __future__ import annotations

from pathlib import Path

from socioseg.models.vlm import SamplingSettings
from socioseg.socioreasoner import InferenceConfig, SocioReasoner


def validate(trainer, out_dir: Path) -> dict[str, float]:
    """Score the policy on ``config.data.val`` (two-stage, greedy); returns TensorBoard scalars.

    Writes the usual evaluation files (predictions.jsonl, metrics.json, report.md) to
    ``out_dir``. Keys: ``val/<stage>_<metric>`` over all samples, e.g. ``val/final_gIoU``.
    """
    from socioseg.data.dataset import load_socioseg
    from socioseg.eval.run import evaluate

    config = trainer.config
    dataset = load_socioseg(config.data.val, config.data.val_split, levels=config.data.levels)
    inference = InferenceConfig(
        min_pixels=config.model.min_pixels,
        max_pixels=config.model.max_pixels,
        sampling=SamplingSettings(greedy=True, max_new_tokens=config.rollout.max_response_tokens),
    )
    reasoner = SocioReasoner(trainer.policy, trainer.segmenter, inference)
    summary = evaluate(
        reasoner,
        dataset,
        out_dir,
        limit=config.data.val_limit,
        shard=(0, 1),
        progress=False,
        batch_size=config.rollout.generation_batch_size,
        config_json={"data": config.data.val, "split": config.data.val_split, "step": trainer.step},
        model_ids={"vlm": config.model.vlm, "sam": config.model.sam},
    )
    scalars = {}
    for stage, levels in summary["metrics"].items():
        for metric, value in levels["all"].items():
            if metric != "n" and value is not None:
                scalars[f"val/{stage}_{metric}"] = float(value)
    return scalars
