"""Memory plan of a training config, per GPU, before any weight is loaded or any GPU rented.

The model is built from its config on the meta device (no memory, no download) to count its
parameters; everything else is arithmetic on the config, stated per component:

- weights: trainable parameters in the master dtype (float32, or bfloat16 with stochastic
  rounding), frozen ones (the LoRA base) in the compute dtype; divided over FSDP processes.
- gradients: one per trainable parameter, in its storage dtype.
- optimizer states: AdamW's two moments per trainable parameter (zero on the GPU when
  ``optim.offload_optimizer_states``; then they are listed as host memory).
- reference: a frozen copy of the policy (full-parameter training with ``kl_beta > 0``) in the
  policy's storage dtype; with ``model.offload_reference`` it is host memory and is on the GPU
  only during the reference pass, before the update, when there are no gradients.
- autocast copies: during rollouts the compute-dtype copies of float32 weights are kept for
  the whole phase (:func:`socioseg.train.precision.shared_casts`).
- activations per micro-batch: per token and decoder layer (text) or block (vision), the
  tensors autograd keeps: ``4h`` float32 values (RMSNorm computes in float32), ``2h``
  residual-dtype values (the residual sums) and ``12h + 4kv + 4i`` compute-dtype values
  (projection inputs, q/k/v, rotary and attention outputs, the four MLP intermediates);
  ``h`` hidden, ``i`` MLP width, ``kv`` the key/value width. With gradient checkpointing
  only each layer's input is kept, plus one layer's full set while it is recomputed. The
  residual stream is float32 under autocast. The image patches count once per row (float32
  and their compute-dtype cast).
- logits: response positions only (the LM head never runs on prompt positions), compute
  dtype + a float32 copy + its float32 gradient per vocabulary entry.
- rollout KV cache: ``generation_batch_size`` rows of prompt + max response tokens, keys and
  values of every full-attention layer in the compute dtype, plus one layer's prefill working
  set; a linear-attention layer (Qwen3.5) holds a fixed-size conv and recurrent state per row
  instead. Activations of a linear-attention layer are estimated as an attention layer's.

Two peaks follow: the rollout phase (weights, states, reference, autocast copies, KV cache)
and the update phase (weights, gradients, states, reference, activations, logits). The
sequence lengths are worst cases: every response at ``rollout.max_response_tokens``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from socioseg.train.config import TrainConfig

GIB = 1024**3
# Qwen2.5-VL-3B-Instruct's architecture (its config.json), for plans without a download.
QWEN25_VL_3B = {
    "text_config": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": [16, 24, 24],
        },
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    "tie_word_embeddings": True,
}
# Qwen3-VL-2B/4B-Instruct's architectures, as their published config.json files give them
# (read from copies of the Hub files, not downloaded here): Qwen3-1.7B / Qwen3-4B text models
# with a 24-block, 1024-wide vision tower of 16 px patches and DeepStack at blocks 5, 11, 17.
_QWEN3_VL_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}
_QWEN3_VL_ROPE = {
    "rope_type": "default",
    "rope_theta": 5_000_000.0,
    "mrope_section": [24, 20, 20],
    "mrope_interleaved": True,
}


def _qwen3_vl(hidden: int, inner: int, layers: int, heads: int) -> dict:
    text = {
        "hidden_size": hidden,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "rope_parameters": _QWEN3_VL_ROPE,
        "tie_word_embeddings": True,
    }
    vision = _QWEN3_VL_VISION | {"out_hidden_size": hidden}
    return {"text_config": text, "vision_config": vision, "tie_word_embeddings": True}


# Qwen3.5-2B/4B's architectures (natively multimodal, hybrid: 3 Gated-DeltaNet layers then
# one gated full-attention layer, repeated). The text sizes are those of the Megatron model
# scripts of slime / miles (two copies agree), which are written from the published
# config.json files; vocabulary 248320, head_dim 256, a quarter of it rotary, tied embeddings.
# ASSUMED, not read from the Hub files: the linear-attention heads (16 key heads of 128; value
# heads 16 for 2B as Qwen3.5-0.8B has, 32 for 4B, transformers' default) and a vision tower
# like Qwen3-VL-2B/4B's without DeepStack. They give 2.213 B / 4.539 B parameters
# (tests/test_memory.py); the published parameter counts were not at hand to compare.
def _qwen3_5(hidden: int, inner: int, layers: int, heads: int, kv: int, values: int) -> dict:
    text = {
        "hidden_size": hidden,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 256,
        "vocab_size": 248320,
        "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * (layers // 4),
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": values,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [11, 11, 10],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
    }
    vision = {k: v for k, v in _QWEN3_VL_VISION.items() if k != "deepstack_visual_indexes"}
    vision["out_hidden_size"] = hidden
    return {"text_config": text, "vision_config": vision, "tie_word_embeddings": True}


# Hub id -> (model_type, config fields).
KNOWN_CONFIGS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": ("qwen2_5_vl", QWEN25_VL_3B),
    "vvangfaye/SocioReasoner-3B": ("qwen2_5_vl", QWEN25_VL_3B),
    "Qwen/Qwen3-VL-2B-Instruct": ("qwen3_vl", _qwen3_vl(2048, 6144, 28, 16)),
    "Qwen/Qwen3-VL-4B-Instruct": ("qwen3_vl", _qwen3_vl(2560, 9728, 36, 32)),
    "Qwen/Qwen3.5-2B": ("qwen3_5", _qwen3_5(2048, 6144, 24, 8, 2, 16)),
    "Qwen/Qwen3.5-4B": ("qwen3_5", _qwen3_5(2560, 9216, 32, 16, 4, 32)),
}
PROMPT_TEXT_TOKENS = 190  # chat template + stage-2 prompt text around the image tokens


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU by component (``gpu``), in host memory (``host``), and the two peaks."""

    gpu: dict[str, int]
    host: dict[str, int]
    rollout_peak: int
    update_peak: int
    parameters: int
    trainable: int

    @property
    def peak(self) -> int:
        return max(self.rollout_peak, self.update_peak)

    def fits(self, gigabytes: float) -> bool:
        """True when the larger peak fits a GPU sold as ``gigabytes`` GB (10^9 bytes)."""
        return self.peak <= gigabytes * 1e9


def model_config(name: str):
    """The policy config of a local folder, a known Hub id, or the local Hub cache."""
    from transformers import AutoConfig

    if name in KNOWN_CONFIGS and not Path(name).is_dir():
        model_type, fields = KNOWN_CONFIGS[name]
        return AutoConfig.for_model(model_type, **fields)
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        from socioseg.train.config import ConfigError

        raise ConfigError(
            f"model.vlm: cannot read the model config of {name!r} offline "
            f"({str(error).splitlines()[0]}): pass a local checkpoint folder as model.vlm, "
            f"or one of {', '.join(KNOWN_CONFIGS)}"
        ) from None


def count_parameters(config, lora=None) -> tuple[int, int]:
    """``(all, trainable)`` parameters of the model ``config`` describes, built on meta.

    Trainable: every parameter, or with ``lora`` (LoraSettings) the adapters ``r x (in +
    out)`` of each matching linear layer of the language model.
    """
    import torch

    from socioseg.models.families import policy_family

    with torch.device("meta"):
        model = policy_family(config.model_type).model_cls()._from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if lora is None:
        return total, total
    names = re.compile(rf"^(?!.*visual).*\.({'|'.join(map(re.escape, lora.target_modules))})$")
    adapters = sum(
        lora.rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and names.match(name)
    )
    return total, adapters


def prompt_shape(config: TrainConfig, image_side: int, model_type: str = "qwen2_5_vl"):
    """``(prompt tokens, vision patches)`` of one row: map + satellite of ``image_side`` px,
    in the frame of the policy family of ``model_type``."""
    from socioseg.geometry import smart_resize
    from socioseg.models.families import policy_family

    m, family = config.model, policy_family(model_type)
    h, w = smart_resize(image_side, image_side, family.factor, m.min_pixels, m.max_pixels)
    patches = h * w // family.patch_size**2
    merged = patches // family.merge_size**2
    return 2 * merged + PROMPT_TEXT_TOKENS, 2 * patches


def _layer_bytes(hidden: int, inner: int, kv: int, residual: int, compute: int) -> int:
    """Bytes autograd keeps per token for one decoder layer / vision block (see module doc)."""
    return 16 * hidden + residual * 2 * hidden + compute * (12 * hidden + 4 * kv + 4 * inner)


def _activations(config: TrainConfig, model_cfg, tokens: int, patches: int, dtypes) -> int:
    """Bytes of one micro-batch's activations in the update (``tokens``/``patches`` per row)."""
    residual, compute = dtypes
    t, v = model_cfg.text_config, model_cfg.vision_config
    kv = t.num_key_value_heads * _head_dim(t)
    rows = config.optim.micro_batch_size
    text = rows * tokens * _layer_bytes(t.hidden_size, t.intermediate_size, kv, residual, compute)
    vision = (
        rows
        * patches
        * _layer_bytes(v.hidden_size, v.intermediate_size, v.hidden_size, residual, compute)
    )
    # the pixels: float32 patches (3 x 2 frames x p x p values) and their compute-dtype cast
    patch_values = v.in_channels * v.temporal_patch_size * v.patch_size**2
    pixels = rows * patches * patch_values * (4 + (compute if compute != 4 else 0))
    if not config.model.gradient_checkpointing:
        return pixels + text * t.num_hidden_layers + vision * v.depth
    kept = (
        rows
        * residual
        * (tokens * t.hidden_size * t.num_hidden_layers + patches * v.hidden_size * v.depth)
    )
    return pixels + kept + max(text, vision)


def _head_dim(text_config) -> int:
    """Width of one attention head (Qwen3's is set apart from hidden / heads)."""
    return getattr(text_config, "head_dim", None) or (
        text_config.hidden_size // text_config.num_attention_heads
    )


def _state_bytes(config: TrainConfig, precision, total: int, trainable: int, world: int):
    """Bytes of what lives through a step: ``(per GPU, in host memory)`` by component."""
    import torch

    master = 4 if precision.master == torch.float32 else 2
    compute = 2 if precision.compute == torch.bfloat16 else 4
    lora = config.model.lora is not None
    shard = world if config.distributed == "fsdp" else 1
    stored = 4 if lora else master  # LoRA adapters are float32 (peft)
    weights = (total * compute + trainable * 4) if lora else total * master
    states = trainable * 2 * stored // shard
    reference = 0 if lora or config.optim.kl_beta == 0 else total * master // shard
    offload_states = config.optim.offload_optimizer_states
    offload_reference = config.model.offload_reference
    gpu = {
        "weights": weights // shard,
        "gradients": trainable * stored // shard,
        "optimizer states": 0 if offload_states else states,
        "reference": 0 if offload_reference else reference,
        "autocast copies (rollout)": 0 if lora or not precision.autocast else total * compute,
    }
    host = {
        "optimizer states": states if offload_states else 0,
        "reference": reference if offload_reference else 0,
    }
    return gpu, {k: v for k, v in host.items() if v}


def _sequence_bytes(config: TrainConfig, model_cfg, precision, prompt: int, patches: int):
    """Bytes that grow with rows and tokens: one micro-batch, one generation batch."""
    import torch

    compute = 2 if precision.compute == torch.bfloat16 else 4
    residual = 4 if precision.autocast or compute == 4 else 2
    response = config.rollout.max_response_tokens
    t = model_cfg.text_config
    kv_width = t.num_key_value_heads * _head_dim(t)
    rows = config.rollout.generation_batch_size
    tokens = prompt + response
    return {
        "activations (update)": _activations(
            config, model_cfg, tokens, patches, (residual, compute)
        ),
        "logits (update)": config.optim.micro_batch_size * response * t.vocab_size * (compute + 8),
        "KV cache (rollout)": _cache_bytes(t, rows, tokens, kv_width, compute),
        "prefill (rollout)": rows
        * prompt
        * compute
        * (4 * t.hidden_size + 3 * t.intermediate_size),
    }


def _cache_bytes(t, rows: int, tokens: int, kv_width: int, compute: int) -> int:
    """The rollout cache: keys and values of the full-attention layers (every layer unless the
    config's ``layer_types`` says otherwise), plus, per row and linear-attention layer (Qwen3.5),
    a conv state (``conv_dim x kernel``, compute dtype) and a float32 recurrent state (``value
    heads x key dim x value dim``), which do not grow with the tokens."""
    kinds = list(getattr(t, "layer_types", None) or ["full_attention"] * t.num_hidden_layers)
    full, linear = kinds.count("full_attention"), kinds.count("linear_attention")
    if full + linear != len(kinds):
        raise ValueError(f"unknown layer types in {sorted(set(kinds))}")
    cache = rows * tokens * 2 * full * kv_width * compute
    if linear:
        keys = t.linear_num_key_heads * t.linear_key_head_dim
        values = t.linear_num_value_heads * t.linear_value_head_dim
        conv = (2 * keys + values) * t.linear_conv_kernel_dim * compute
        recurrent = t.linear_num_value_heads * t.linear_key_head_dim * t.linear_value_head_dim * 4
        cache += rows * linear * (conv + recurrent)
    return cache


def plan(
    config: TrainConfig,
    world_size: int = 1,
    image_side: int = 768,
    model_cfg=None,
    device_type: str = "cuda",
    prompt_tokens: int | None = None,
) -> MemoryPlan:
    """The memory plan of ``config`` on ``world_size`` GPUs (see the module doc).

    ``model_cfg``: a transformers config (default: read from ``config.model.vlm``);
    ``prompt_tokens``: override the prompt length computed from ``image_side``.
    ``device_type`` decides the default compute dtype as training would (``cuda``: bfloat16).
    """
    import torch

    from socioseg.train.precision import resolve

    model_cfg = model_cfg or model_config(config.model.vlm)
    precision = resolve(config, torch.device(device_type))
    total, trainable = count_parameters(model_cfg, config.model.lora)
    prompt, patches = prompt_shape(config, image_side, model_cfg.model_type)
    gpu, host = _state_bytes(config, precision, total, trainable, world_size)
    gpu |= _sequence_bytes(config, model_cfg, precision, prompt_tokens or prompt, patches)
    resident = gpu["weights"] + gpu["optimizer states"] + gpu["reference"]
    rollout = resident + gpu["autocast copies (rollout)"] + gpu["KV cache (rollout)"]
    rollout += gpu["prefill (rollout)"]
    update = resident + gpu["gradients"] + gpu["activations (update)"] + gpu["logits (update)"]
    # an offloaded reference visits the GPU for the reference pass, before the update
    reference_pass = resident + host.get("reference", 0)
    return MemoryPlan(
        gpu=gpu,
        host=host,
        rollout_peak=rollout,
        update_peak=max(update, reference_pass),
        parameters=total,
        trainable=trainable,
    )


def format_plan(p: MemoryPlan, config: TrainConfig, world_size: int) -> list[str]:
    """Lines of text describing ``p`` (the CLI prints them)."""
    lines = [
        f"parameters: {p.parameters / 1e9:.3f} B, trainable: {p.trainable / 1e9:.3f} B; "
        f"{world_size} process(es), distributed: {config.distributed}, micro-batch "
        f"{config.optim.micro_batch_size} rows, generation batch "
        f"{config.rollout.generation_batch_size} rows",
        "per GPU:",
    ]
    lines += [f"  {name:<28}{value / GIB:8.2f} GiB" for name, value in p.gpu.items()]
    lines += [f"  host: {name:<22}{value / GIB:8.2f} GiB" for name, value in p.host.items()]
    lines.append(f"peak, rollout phase: {p.rollout_peak / GIB:8.2f} GiB")
    lines.append(f"peak, update phase:  {p.update_peak / GIB:8.2f} GiB")
    for gb in (80, 141):
        verdict = "fits" if p.fits(gb) else "does NOT fit"
        lines.append(f"{verdict} a {gb} GB GPU ({gb * 1e9 / GIB:.1f} GiB) per process")
    return lines


class TensorMeter:
    """Counts the bytes of tensor storages alive at once, exactly, on any device.

    Use as a context manager around the code to measure, after :meth:`track`-ing the tensors
    that already exist (parameters, buffers, optimizer states). Every tensor an operator
    returns inside is counted from its creation until its storage is freed (a weak reference
    callback). Allocator caching and fragmentation are not included: this is what the plan
    predicts, the memory the tensors themselves need.
    """

    def __init__(self):
        self.now = 0
        self.peak = 0
        self._refs: dict[int, object] = {}
        self._mode = None

    def track(self, tensor) -> None:
        import weakref

        import torch

        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._refs:
            return
        size = storage.nbytes()

        def freed(_, key=key, size=size):
            self.now -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        self.now += size
        self.peak = max(self.peak, self.now)

    def __enter__(self) -> TensorMeter:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_map_only

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tree_map_only(__import__("torch").Tensor, meter.track, out)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def measure_update(trainer, rollouts) -> tuple[int, int, int]:
    """Run ``trainer``'s update on ``rollouts`` under a :class:`TensorMeter`.

    Returns ``(peak bytes, prompt tokens, response tokens)``: the peak counts the resident
    models' parameters and buffers plus everything the update creates (gradients, optimizer
    states, activations, logits); the lengths are the padded ones of the whole batch, to
    feed :func:`plan` for comparison.
    """
    advantages = trainer._advantages(rollouts)
    batch, ids, _ = trainer._micro_batch(rollouts, range(len(rollouts.responses)))
    prompts = [rollouts.prompts[r.prompt] for r in batch]
    inputs = trainer.policy.encode([p.text for p in prompts], [list(p.images) for p in prompts])
    meter = TensorMeter()
    models = [trainer.policy.model] + ([trainer.reference.model] if trainer.reference else [])
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            meter.track(tensor)
    with meter:
        trainer._update(rollouts, advantages)
    return meter.peak, inputs["input_ids"].shape[1], ids.shape[1]
