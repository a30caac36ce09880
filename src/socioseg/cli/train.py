"""``socioseg train`` (GRPO), ``sft`` (the warm-up) and ``train-sam``: the training commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from socioseg.cli.common import CommandError, int_in


def _log_line(step: int, metrics: dict[str, float]) -> None:
    print(
        f"step {step}: reward s1 {metrics['stage1/reward_total']:.3f} "
        f"s2 {metrics['stage2/reward_total']:.3f} | IoU s1 {metrics['stage1/iou']:.3f} "
        f"s2 {metrics['stage2/iou']:.3f} | loss {metrics['train/loss']:.4f} "
        f"kl {metrics['train/kl']:.4f} | {metrics['time/step_s']:.1f}s",
        flush=True,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from socioseg.train.checkpoint import CheckpointError
    from socioseg.train.config import load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        return _train_plan(config, args.world_size, args.image_side)
    if args.out is None:
        raise CommandError("train needs --out DIR (the run folder), or --dry-run")
    from socioseg.train.grpo import Trainer

    try:
        trainer = Trainer(config, args.out, resume=args.resume, overwrite=args.overwrite)
    except CheckpointError as error:
        raise CommandError(str(error)) from error
    if trainer.rank == 0:
        for note in trainer.resume_notes:
            print(f"resume: {note}")
        if trainer.resume_from is not None:
            print(f"resuming from {trainer.resume_from}")
        print(f"weights: {trainer.precision.describe()}")
        print(f"training from step {trainer.step} to {config.steps}; logs: {args.out}/tensorboard")
    trainer.train(on_log=_log_line if trainer.rank == 0 else None)
    return 0


def _supervised_log(what: str) -> Callable[[int, dict[str, float]], None]:
    def log(step: int, metrics: dict[str, float]) -> None:
        parts = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "elapsed_s")
        print(f"{what} step {step}: {parts} | {metrics['elapsed_s']:.0f}s", flush=True)

    return log


def _run_supervised(args: argparse.Namespace, config_cls, train, tag: str, wrote: str) -> int:
    """``sft`` and ``train-sam``: load the config, train into ``--out``, say what was written."""
    from socioseg.train.checkpoint import CheckpointError
    from socioseg.train.config import load_config

    config = load_config(args.config, args.overrides, cls=config_cls)
    try:
        out = train(
            config, args.out, args.overwrite, on_log=_supervised_log(tag), resume=args.resume
        )
    except CheckpointError as error:
        raise CommandError(str(error)) from error
    print(wrote.format(out=out))
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from socioseg.train.sft import SftConfig, train_sft

    wrote = "wrote the warmed-up policy to {out} (pass it as --vlm or model.vlm)"
    return _run_supervised(args, SftConfig, train_sft, "sft", wrote)


def _cmd_train_sam(args: argparse.Namespace) -> int:
    from socioseg.train.sam import SamTrainConfig, train_sam

    wrote = "wrote the trained segmenter to {out} (pass it as --sam or model.sam)"
    return _run_supervised(args, SamTrainConfig, train_sam, "sam", wrote)


def _train_plan(config, world_size: int, image_side: int) -> int:
    from socioseg.train.memory_plan import format_plan, plan

    config.check_world(world_size)
    for line in format_plan(plan(config, world_size, image_side), config, world_size):
        print(line)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The training commands' parsers, each with its handler as ``run``."""
    train = sub.add_parser("train", help="GRPO training of both stages")
    train.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    train.add_argument("--out", type=Path, default=None, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print the per-GPU memory plan of the config and exit (loads no weights)",
    )
    train.add_argument(
        "--world-size", type=int_in(1, 65536), default=1, help="GPUs (processes) for --dry-run"
    )
    train.add_argument(
        "--image-side", type=int_in(28, 16384), default=768, help="tile side (px) for --dry-run"
    )
    train.add_argument("overrides", nargs="*", help="section.field=value overrides")
    train.set_defaults(run=_cmd_train)

    for name, what, handler in (
        (
            "sft",
            "supervised warm-up of the policy on teacher answers (configs/mini_sft.yaml)",
            _cmd_sft,
        ),
        ("train-sam", "supervised SAM2 training on box / box + point prompts", _cmd_train_sam),
    ):
        sup = sub.add_parser(name, help=what)
        sup.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
        sup.add_argument("--out", type=Path, required=True, help="model folder to write")
        sup.add_argument(
            "--overwrite", action="store_true", help="replace the model this command wrote in --out"
        )
        sup.add_argument(
            "--resume",
            action="store_true",
            help="continue the run a kill interrupted in --out (its config's save_every)",
        )
        sup.add_argument("overrides", nargs="*", help="field=value overrides")
        sup.set_defaults(run=handler)
