"""Training configuration: typed dataclasses, validated up front, loadable from YAML.

Every field is documented once, here. ``load_config(path, overrides)`` reads a YAML file and
applies ``section.field=value`` overrides (values parsed as YAML, so ``1e-6``, ``true`` and
``null`` work). Each dataclass checks its own fields in ``__post_init__``; a bad value is a
:class:`ConfigError` naming the field. The resolved config is saved with every checkpoint.

Precision and memory (see :mod:`socioseg.train.precision` and :mod:`socioseg.train.memory_plan`):
``model.dtype`` is the COMPUTE dtype; ``optim.master_weights`` says where the trainable
weights and AdamW states live. With ``float32`` (the default) a bfloat16 run computes under
autocast while weights, gradients and AdamW states stay float32, so an update of 1e-6 is
kept. There is no silent pure-bfloat16 path: pure bfloat16 weights are only trained with
stochastic rounding (``bf16_stochastic_rounding``).
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
from socioseg.types import MAX_BATCH_SIZE, MAX_NEW_TOKENS, MAX_STEPS


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


_DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


class _Section:
    """Base of every config dataclass: type-check its own fields, then its ``_checks``."""

    def __post_init__(self) -> None:
        _coerce(self)
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        return []


def _bounded(name: str, value: int, low: int, high: int) -> tuple[bool, str]:
    """A check that ``value`` is in ``[low, high]``: the same bounds as the command's flags."""
    return low <= value <= high, f"{name} must be from {low:,} to {high:,}, got {value:,}"


@dataclass
class AdamWSettings(_Section):
    """The ``optim:`` section every training command has, with the same names: AdamW at
    ``lr`` and ``weight_decay``, a linear warm-up over ``warmup_steps`` (then the command's
    schedule), gradients clipped at ``grad_clip`` (global norm)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            _bounded("warmup_steps", self.warmup_steps, 0, MAX_STEPS),
            (self.grad_clip > 0, "grad_clip must be > 0"),
        ]


# The optimiser fields once written at the top of sft / train-sam configs: a config that still
# has them is told where they went instead of getting "unknown field".
_MOVED_TO_OPTIM = tuple(f.name for f in dataclasses.fields(AdamWSettings))


@dataclass
class SupervisedConfig(_Section):
    """What ``socioseg sft`` and ``socioseg train-sam`` share: data, the optimiser, logging.

    Each step draws ``batch_size`` training samples (seeded); ``optim`` as
    :class:`AdamWSettings`, with a cosine decay to 10% of ``optim.lr`` after the warm-up.
    """

    data: str = "data/mini/train"  # SocioSeg dataset (folder, parquet or Hub id)
    split: str = "train"
    steps: int = 500
    batch_size: int = 4
    optim: AdamWSettings = field(default_factory=AdamWSettings)
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU
    log_every: int = 10
    # Steps between resumable states (--resume after a kill); None: none kept.
    save_every: int | None = None

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            _bounded("steps", self.steps, 1, MAX_STEPS),
            _bounded("batch_size", self.batch_size, 1, MAX_BATCH_SIZE),
            (self.log_every >= 1, "log_every must be >= 1"),
            (
                self.save_every is None or self.save_every >= 1,
                f"save_every must be >= 1 or null, got {self.save_every}",
            ),
        ]


@dataclass
class AuxSettings(_Section):
    """The ``aux:`` section of ``socioseg sft``: dense labels on the image tokens (training
    only; :mod:`socioseg.train.aux_labels`). At each merged image token the LM head predicts
    the token's column (map) / row (satellite) digit, weighted by ``position``, and the
    socio-class token of the entity under it or "none", weighted by ``entity``. Both 0: the
    answer loss alone, computed as without this section. ``layer``: the position labels are
    read after this many decoder layers (then the final norm and the LM head), so that what
    the tokens learn is in their content for the layers above, where an answer can copy it;
    None: after the last layer. ``entity_layer``: the same for the entity labels (None: as
    ``layer``); read where the position labels are, the two ask one softmax for two tokens
    (at best half the mass each), so give them different layers. ``entity_others``: the
    other questions about the same images label their entities' tokens with their classes
    too (the image tokens come before the question). ``entity_balance``: the entity loss
    is the mean of two means, over the tokens on an entity and over the "none" ones (most
    tokens lie on no entity; a plain token mean rewards answering "none" where unsure).
    ``attention`` weights the
    answer's attention label (head 0 of decoder layer ``attention_layer``, None: the last,
    looks at the target's tokens while the coordinates are written); ``attention_edges``:
    each number looks only at the target's tokens in the column (x) or row (y) nearest it
    (a box's left edge for x1, its right edge for x2). ``attention_first`` weighs the same label
    at the answer's first coordinate digit alone, a second time: the digit that picks the
    entity (the later ones can read where the earlier ones point). ``query`` weighs a label
    at the position that writes that first digit: its hidden state after ``query_layer``
    (None: the entity layer), through the final norm and the LM head, names the asked-for
    entity's class, as its image tokens' entity labels do (the asked-for class in the same
    words as the image tokens' classes, below the layer that picks). ``copy`` weighs the copy
    label: head 1 of ``attention_layer`` looks at the prompt's query while the reasoning
    writes it again (:func:`socioseg.train.aux_labels.copy_looks`). ``name`` weighs the name
    labels (an entity's tokens name the first word of its name, where a question gives it),
    read after decoder layer ``name_layer`` (None: the last); give it a layer of its own below
    ``attention_layer``, as the entity labels on the same tokens ask for another word."""

    position: float = 0.0
    entity: float = 0.0
    layer: int | None = None
    entity_layer: int | None = None
    entity_others: bool = False
    entity_balance: bool = False
    attention: float = 0.0
    attention_layer: int | None = None
    attention_edges: bool = False
    attention_first: float = 0.0
    query: float = 0.0
    query_layer: int | None = None
    copy: float = 0.0
    name: float = 0.0
    name_layer: int | None = None

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.position >= 0, f"position must be >= 0, got {self.position}"),
            (self.entity >= 0, f"entity must be >= 0, got {self.entity}"),
            (self.layer is None or self.layer >= 1, f"layer must be >= 1, got {self.layer}"),
            (
                self.entity_layer is None or self.entity_layer >= 1,
                f"entity_layer must be >= 1, got {self.entity_layer}",
            ),
            (self.attention >= 0, f"attention must be >= 0, got {self.attention}"),
            (
                self.attention_first >= 0,
                f"attention_first must be >= 0, got {self.attention_first}",
            ),
            (
                self.attention_layer is None or self.attention_layer >= 1,
                f"attention_layer must be >= 1, got {self.attention_layer}",
            ),
            (self.query >= 0, f"query must be >= 0, got {self.query}"),
            (self.copy >= 0, f"copy must be >= 0, got {self.copy}"),
            (self.name >= 0, f"name must be >= 0, got {self.name}"),
            (
                self.name_layer is None or self.name_layer >= 1,
                f"name_layer must be >= 1, got {self.name_layer}",
            ),
            (
                self.query_layer is None or self.query_layer >= 1,
                f"query_layer must be >= 1, got {self.query_layer}",
            ),
        ]

    @property
    def looks(self) -> bool:
        """Whether an attention label is asked for (the answer's attention is read)."""
        return self.attention > 0 or self.attention_first > 0 or self.copy > 0

    @property
    def active(self) -> bool:
        return self.position > 0 or self.entity > 0 or self.looks or self.query > 0 or self.name > 0


@dataclass
class LoraSettings(_Section):
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

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.rank >= 1, f"rank must be >= 1, got {self.rank}"),
            (self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (bool(self.target_modules), "target_modules must name at least one layer"),
        ]


@dataclass
class ModelSettings(_Section):
    vlm: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # policy to start from (Hub id or folder)
    sam: str = "facebook/sam2-hiera-large-hf"  # frozen segmenter
    # Compute dtype of both models (None: bfloat16 on CUDA, float32 on CPU). Trainable weights
    # are stored as optim.master_weights says, whatever this is.
    dtype: str | None = None
    lora: LoraSettings | None = None  # None: full-parameter training
    # Recompute each decoder layer and vision block in the backward pass (both towers): saved
    # activations shrink from every layer's intermediates to one residual stream per layer.
    gradient_checkpointing: bool = False
    # Keep the frozen reference policy in CPU memory; it visits the GPU once per step to
    # compute all reference log-probs before the update, so no reference copy sits on the
    # GPU during backward (full-parameter training with optim.kl_beta > 0 only).
    offload_reference: bool = False
    min_pixels: int = DEFAULT_MIN_PIXELS  # VLM frame bounds (smart_resize)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (
                self.dtype is None or self.dtype.lower() in _DTYPES,
                f"dtype {self.dtype!r} is not one of {', '.join(_DTYPES)} (or null)",
            ),
            (self.min_pixels >= 1, f"min_pixels must be >= 1, got {self.min_pixels}"),
            (
                self.max_pixels >= self.min_pixels,
                f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})",
            ),
        ]


@dataclass
class DataSettings(_Section):
    train: str = "vvangfaye/SocioSeg"  # folder, parquet files or Hub id
    train_split: str = "train"
    val: str | None = None  # None: no periodic validation
    val_split: str = "val"
    val_limit: int | None = 64  # samples scored per validation
    levels: str | None = None  # id -> level mapping file (CSV or JSON)

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (
                self.val_limit is None or self.val_limit >= 1,
                f"val_limit must be >= 1 or null, got {self.val_limit}",
            )
        ]


@dataclass
class RolloutSettings(_Section):
    group_size: int = 8  # G: stage-1 samples per prompt
    strategy: Literal["released", "paper"] = "released"  # see socioseg.train.rollout
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

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (
                self.group_size >= 2,
                "group_size must be >= 2 (GRPO compares samples within a group)",
            ),
            (self.temperature > 0, "temperature must be > 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0: no top-k filter)"),
            (self.max_prompt_tokens >= 1, "max_prompt_tokens must be >= 1"),
            _bounded("max_response_tokens", self.max_response_tokens, 1, MAX_NEW_TOKENS),
            _bounded("generation_batch_size", self.generation_batch_size, 1, MAX_BATCH_SIZE),
        ]


@dataclass
class OptimSettings(AdamWSettings):
    """GRPO's ``optim:``: the AdamW fields every command has (:class:`AdamWSettings`; constant
    after the warm-up) and the policy loss's own."""

    lr: float = 1e-6
    warmup_steps: int = 0
    kl_beta: float = 0.005  # weight of the k3 KL to the reference policy; 0 skips the reference
    clip_eps: float = 0.2  # PPO ratio clip (the paper's text says 0.5)
    std_normalize: bool = True  # divide group-centred rewards by std + 1e-6 (paper: False)
    reward_clip: float = 10.0
    advantage_clip: float = 10.0
    micro_batch_size: int = 8  # response rows per forward/backward
    # Where trainable weights and AdamW states live. float32: float32 master weights,
    # gradients and AdamW states (16 bytes per trainable parameter), compute in model.dtype
    # under autocast. bf16_stochastic_rounding: weights, gradients and AdamW states in
    # bfloat16 (8 bytes per parameter), every update rounded stochastically so that updates
    # smaller than bfloat16's spacing survive in expectation; needs model.dtype bfloat16.
    master_weights: Literal["float32", "bf16_stochastic_rounding"] = "float32"
    # Keep AdamW states in CPU memory and stream them through the device one parameter at a
    # time during the optimizer step (saves their GPU memory; costs a host round trip a step).
    offload_optimizer_states: bool = False

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            *super()._checks(),
            (self.kl_beta >= 0, "kl_beta must be >= 0"),
            (self.clip_eps > 0, "clip_eps must be > 0"),
            (self.reward_clip > 0, "reward_clip must be > 0"),
            (self.advantage_clip > 0, "advantage_clip must be > 0"),
            _bounded("micro_batch_size", self.micro_batch_size, 1, MAX_BATCH_SIZE),
        ]


@dataclass
class TrainConfig(_Section):
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

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            _bounded("batch_size", self.batch_size, 1, MAX_BATCH_SIZE),
            _bounded("steps", self.steps, 1, MAX_STEPS),
            (self.save_every >= 1, "save_every must be >= 1"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0: never)"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (
                self.distributed == "ddp" or self.model.lora is None,
                "model.lora needs distributed: ddp (LoRA adapters are small enough to replicate)",
            ),
            *self._precision_checks(),
        ]

    def _precision_checks(self) -> list[tuple[bool, str]]:
        m, o = self.model, self.optim
        dtype = (m.dtype or "").lower()
        fsdp = self.distributed == "fsdp"
        return [
            (
                dtype not in ("float16", "fp16"),
                "model.dtype float16 cannot train without loss scaling: use bfloat16",
            ),
            (
                o.master_weights == "float32" or dtype in ("bfloat16", "bf16"),
                "optim.master_weights: bf16_stochastic_rounding needs model.dtype: bfloat16",
            ),
            (
                not fsdp or (o.master_weights == "float32" and not o.offload_optimizer_states),
                "distributed: fsdp shards the optimizer itself: use optim.master_weights: "
                "float32 and optim.offload_optimizer_states: false",
            ),
            (
                not m.offload_reference or (m.lora is None and not fsdp),
                "model.offload_reference needs full-parameter training with distributed: ddp "
                "(with LoRA the reference is the base model; fsdp shards it)",
            ),
        ]

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


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type | None = None):
    """Read a YAML config (or the defaults) and apply ``a.b=value`` overrides.

    ``cls``: the config dataclass to build (default :class:`TrainConfig`; the supervised
    commands pass theirs).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not valid YAML (not UTF-8 text: {error.reason})") from None
        data = _parse_yaml(text, str(path))
        if data is None:
            raise ConfigError(
                f"{path} is empty; give the fields to change (see configs/), or leave --config "
                "out to train with the defaults"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like {_override_example(cls)}")
        node = data
        *parents, leaf = key.split(".")
        for name in parents:
            if node.get(name) is None:  # a null section (lora: null) gets its defaults
                node[name] = {}
            node = node[name]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {name} is not a section")
        node[leaf] = _parse_yaml(raw, f"override {item!r}")
    return _build(cls or TrainConfig, data, "")


def _override_example(cls: type | None) -> str:
    """``field=value`` with the config's first plain field, e.g. ``steps=500``, and
    ``section.field=value`` when the config has sections."""
    config = (cls or TrainConfig)()
    plain, sections = None, None
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            sections = sections or f"{f.name}.{dataclasses.fields(value)[0].name}=..."
        elif plain is None and isinstance(value, int | float) and not isinstance(value, bool):
            plain = f"{f.name}={value}"
    if plain is None:
        return "section.field=value"
    return f"field=value (e.g. {plain})" + (
        f" or section.field=value ({sections})" if sections else ""
    )


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load``; a syntax error is a ConfigError naming ``where`` and the line."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML (nested too deeply); fix it") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{line} ({problem}); fix it") from None


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    moved = [u for u in unknown if u in _MOVED_TO_OPTIM and "optim" in fields]
    if moved:
        name = prefix + moved[0]
        raise ConfigError(
            f"{name} is now optim.{moved[0]}: move it under an optim: section "
            f"(or override it as optim.{moved[0]}=...)"
        )
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
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{prefix}{error}") from None


def _dataclass_in(hint) -> type | None:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next((o for o in options if dataclasses.is_dataclass(o)), None)


def _coerce(config) -> None:
    """Check each field's type (ints accepted for floats); raise ConfigError naming it.

    Nested sections are dataclasses that checked themselves when they were built.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        name = f.name
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
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _matches(k, key) and _matches(v, item) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return isinstance(value, hint)
