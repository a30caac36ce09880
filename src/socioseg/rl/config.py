"""Training configuration: typed dataclasses, validated up front, loadable from YAML.

Every field is documented once, here. ``load_config(path, overrides)`` reads a YAML file and
applies ``section.field=value`` overrides (values parsed as YAML, so ``1e-6``, ``true`` and
``null`` work). The resolved config is saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


@dataclass
class LoraSettings:
    """LoRA adapters (peft). The reference policy is the base with adapters disabled."""

    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )


@dataclass
class ModelSettings:
    vlm: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # policy to start from (Hub id or folder)
    sam: str = "facebook/sam2-hiera-large-hf"  # frozen segmenter
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on CPU
    lora: LoraSettings | None = None  # None: full-parameter training
    gradient_checkpointing: bool = False
    min_pixels: int = DEFAULT_MIN_PIXELS  # VLM frame bounds (smart_resize)
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class DataSettings:
    train: str = "vvangfaye/SocioSeg"  # folder, parquet files or Hub id
    train_split: str = "train"
    val: str | None = None  # None: no periodic validation
    val_split: str = "val"
    val_limit: int | None = 64  # samples scored per validation
    levels: str | None = None  # id -> level mapping file (CSV or JSON)


@dataclass
class RolloutSettings:
    group_size: int = 8  # G: stage-1 samples per prompt
    strategy: Literal["released", "paper"] = "released"  # see socioseg.rl.rollout
    temperature: float = 0.99
    top_p: float = 0.99
    top_k: int = 100
    max_prompt_tokens: int = 4096
    max_response_tokens: int = 2048
    generation_batch_size: int = 64  # rows per generate() call
    # encode, preprocess and prefill each distinct prompt once for its G responses, and run
    # the vision tower once per distinct prompt in the update; false: the reference path
    share_prefix: bool = True
    decoding: Literal["eager", "static", "compiled"] = "eager"  # compiled: torch.compile


@dataclass
class OptimSettings:
    lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    kl_beta: float = 0.005  # weight of the k3 KL to the reference policy; 0 skips the reference
    clip_eps: float = 0.2  # PPO ratio clip (the paper's text says 0.5)
    std_normalize: bool = True  # divide group-centred rewards by std + 1e-6 (paper: False)
    reward_clip: float = 10.0
    advantage_clip: float = 10.0
    micro_batch_size: int = 8  # response rows per forward/backward


@dataclass
class TrainConfig:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    reward_variant: Literal["released", "paper"] = "released"
    # ddp: every process holds the whole policy; fsdp: parameters, gradients and optimizer
    # states are sharded over the processes (full-parameter training of the 3B model).
    distributed: Literal["ddp", "fsdp"] = "ddp"
    batch_size: int = 128  # B: prompts per step, over all processes
    steps: int = 250
    seed: int = 0
    save_every: int = 50  # steps between checkpoints (and at the last step)
    eval_every: int = 0  # steps between validations; 0: never
    log_every: int = 1

    def __post_init__(self) -> None:
        _coerce(self)
        checks = [
            (
                self.rollout.group_size >= 2,
                "rollout.group_size must be >= 2 (GRPO compares samples within a group)",
            ),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.save_every >= 1, "save_every must be >= 1"),
            (self.optim.micro_batch_size >= 1, "optim.micro_batch_size must be >= 1"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (self.optim.clip_eps > 0, "optim.clip_eps must be > 0"),
            (self.optim.kl_beta >= 0, "optim.kl_beta must be >= 0"),
            (self.rollout.temperature > 0, "rollout.temperature must be > 0"),
            (0 < self.rollout.top_p <= 1, "rollout.top_p must be in (0, 1]"),
            (self.rollout.max_response_tokens >= 1, "rollout.max_response_tokens must be >= 1"),
            (self.rollout.generation_batch_size >= 1, "rollout.generation_batch_size must be >= 1"),
        ]
        checks.append(
            (
                self.distributed == "ddp" or self.model.lora is None,
                "model.lora needs distributed: ddp (LoRA adapters are small enough to replicate)",
            )
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def check_world(self, world_size: int) -> None:
        """Divisibility that depends on the number of processes."""
        if self.batch_size % world_size:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by the {world_size} processes"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults) and apply ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ConfigError(f"{path}: not valid YAML ({reason}); fix the file") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        node = data
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {name} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: {raw!r} is not a YAML value") from error
    return _build(TrainConfig, data, "")


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(prefix + u for u in unknown)}; valid: "
            f"{', '.join(prefix + n for n in fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        nested = _dataclass_in(hints[name])
        if nested is not None and value is not None:
            value = _build(nested, value, f"{prefix}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint) -> type | None:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next((o for o in options if dataclasses.is_dataclass(o)), None)


def _coerce(config, prefix: str = "") -> None:
    """Check each field's type (ints accepted for floats); raise ConfigError naming it."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            _coerce(value, name + ".")
            continue
        if isinstance(value, str) and _matches(0.5, hint) and not _matches(value, hint):
            value = _yaml_float(value)
        if not _matches(value, hint):
            raise ConfigError(f"{name} = {value!r} does not match the expected type {hint}")
        if _matches(0.5, hint) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(config, f.name, value)


def _yaml_float(text: str) -> float | str:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; read it as the float it means."""
    try:
        return float(text)
    except ValueError:
        return text  # not a number: the type check reports it


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        return any(_matches(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return isinstance(value, hint)
