"""The only module that touches the VLM API: load, generate, per-token log-probs.

The policy's family (:mod:`socioseg.models.families`: Qwen2.5-VL, Qwen3-VL, Qwen3.5) comes
from its ``config.json``. Inputs come from :mod:`socioseg.models.processor`. Generation can
encode each distinct prompt once for many responses (one prefill, the cache repeated), decode
with a static or compiled cache, and the log-probs of a micro-batch can run each distinct
prompt once (shared prefix). Cache rows are repeated and gathered with ``reorder_cache``,
which also moves the conv and recurrent states of Qwen3.5's linear-attention layers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from socioseg.models.device import resolve_device, resolve_dtype
from socioseg.models.families import PolicyFamily, policy_family
from socioseg.models.processor import EncodedPrompt, VLMProcessor

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_VLM = "vvangfaye/SocioReasoner-3B"

# eager: transformers' dynamic cache; static: a preallocated cache (the shapes torch.compile
# needs); compiled: the static cache with the decoding step compiled by torch.compile.
DECODING = ("eager", "static", "compiled")
CACHE_ROUNDING = 256  # static cache lengths are multiples of this
ENCODE_CHUNK = 16  # prompts per image-processor call


class ModelLoadError(OSError):
    """A checkpoint that cannot be loaded; the message says what to pass instead."""


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are drawn. Defaults are the released evaluation's (SPEC §3)."""

    greedy: bool = False
    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 100
    max_new_tokens: int = 1024
    seed: int | None = 0
    decoding: str = "eager"

    def __post_init__(self) -> None:
        if self.decoding not in DECODING:
            raise ValueError(f"unknown decoding {self.decoding!r}; choose one of {DECODING}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use greedy=True instead)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    """One response: decoded text and its token ids (no padding, special tokens kept).

    ``text`` starts with what the chat template's generation prompt already opened of the
    response (``VLMProcessor.response_prefix``: Qwen3.5's ``<think>\n``, else nothing);
    ``token_ids`` are the generated tokens only.

    ``mean_logprob``: the mean over its tokens of log p(token) under the policy's own
    distribution (before temperature, top-k and top-p), a confidence; ``None`` if not measured.
    """

    text: str
    token_ids: tuple[int, ...]
    mean_logprob: float | None = None


def _chosen_logprobs_processor():
    """A logits processor that records log p(chosen token) per generated token, B per step.

    transformers applies custom processors before its sampling warpers, so these are the
    model's probabilities. Step t's choice is only known at step t + 1 (as the last input id);
    call ``finish(last_tokens)`` after generation for the final step. Holds one B x V tensor.
    """
    import torch
    from transformers import LogitsProcessor

    class ChosenLogprobs(LogitsProcessor):
        def __init__(self):
            self.previous = None
            self.steps: list[torch.Tensor] = []

        def __call__(self, input_ids, scores):
            if self.previous is not None:
                self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
            self.previous = torch.log_softmax(scores.float(), dim=-1)
            return scores

        def finish(self, last_tokens) -> torch.Tensor:
            """B x T log-probs of the T generated tokens."""
            if self.previous is not None:
                self.steps.append(self.previous.gather(1, last_tokens[:, None]).squeeze(1))
            return torch.stack(self.steps, dim=1) if self.steps else None

    return ChosenLogprobs()


class Readout(NamedTuple):
    """What :meth:`VisionLanguageModel.logprobs_and_image_logits` reads in one forward."""

    logp: torch.Tensor
    image_logits: list[torch.Tensor]
    attention: torch.Tensor | None
    read_logits: torch.Tensor | None


def pad_right(sequences, pad_id: int):
    """Right-pad token id sequences for :meth:`VisionLanguageModel.response_logprobs`.

    Returns ``(ids, mask)``: B x T_max long tensors, ``mask`` 1 on real tokens.
    """
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


class VisionLanguageModel:
    """A Qwen-VL policy with its processor, on one device; ``family`` from its config."""

    def __init__(self, model, processor: VLMProcessor, name: str = ""):
        self.model = model
        self.processor = processor
        self.name = name
        self.family: PolicyFamily = policy_family(model.config.model_type)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_VLM,
        device: str | None = None,
        dtype: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> VisionLanguageModel:
        """Load a policy checkpoint (Hub id or local folder) of any supported family (its
        ``config.json`` ``model_type``) and its processor."""
        from socioseg.models.families import read_model_type
        from socioseg.models.sources import QWEN_VL_TYPES, VLM_WHAT, model_source

        name_or_path = model_source(name_or_path, QWEN_VL_TYPES, VLM_WHAT)
        family = policy_family(read_model_type(name_or_path) or "qwen2_5_vl")
        torch_device = resolve_device(device)
        try:
            model = family.model_cls().from_pretrained(
                name_or_path, dtype=resolve_dtype(dtype, torch_device)
            )
        except OSError as error:
            raise ModelLoadError(
                f"cannot load the {family.title} model {name_or_path!r}: "
                f"{str(error).splitlines()[0]} Pass a local checkpoint folder (--vlm DIR); "
                "offline, `socioseg tiny-models DIR` builds random-weight test models"
            ) from error
        model.to(torch_device).eval()
        processor = VLMProcessor.from_pretrained(name_or_path, min_pixels, max_pixels, family)
        return cls(model, processor, name=str(name_or_path))

    def encode(self, user_texts: Sequence[str], images: Sequence[Sequence[Image.Image]]):
        """Model inputs on the model's device for a batch of (user text, [map, satellite])."""
        return self.collate(self.encode_prompts(user_texts, images))

    def encode_prompts(
        self, user_texts: Sequence[str], images: Sequence[Sequence[Image.Image]]
    ) -> list[EncodedPrompt]:
        """Each (user text, [map, satellite]) templated, tokenized and preprocessed once.

        Pixel values are kept (on CPU) in the model's dtype, which the vision tower casts them
        to anyway; prompts are processed a few at a time to bound peak memory.
        """
        import torch

        texts = [self.processor.chat_text(text) for text in user_texts]
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        out = []
        for start in range(0, len(texts), ENCODE_CHUNK):
            end = start + ENCODE_CHUNK
            for prompt in self.processor.split(self.processor(texts[start:end], images[start:end])):
                out.append(replace(prompt, pixel_values=prompt.pixel_values.to(dtype)))
        return out

    def collate(self, prompts: Sequence[EncodedPrompt], pixels: bool = True):
        """Encoded prompts as one left-padded batch on the model's device."""
        return self.processor.collate(prompts, pixels).to(self.device)

    def _generation_config(self, sampling: SamplingSettings):
        from transformers import GenerationConfig

        base = self.model.generation_config
        options = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": base.eos_token_id,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
            "suppress_tokens": self.processor.vision_token_ids,
            "repetition_penalty": 1.0,
        }
        if sampling.greedy:
            options.update(do_sample=False)
        else:
            options.update(
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
            )
        return GenerationConfig(**options)

    def generate(self, inputs, sampling: SamplingSettings, group_size: int = 1) -> list[Generation]:
        """Sample ``group_size`` responses per row of ``inputs`` (from :meth:`encode`).

        Returns N x ``group_size`` generations, row-major (the responses of row 0 first). With
        ``group_size > 1`` or a static/compiled decoding, each prompt's images go through the
        vision tower and its tokens through the prefill once; the cache is then repeated for
        the continuations, which are drawn from the same distribution as ``group_size`` copies of
        the row (greedy tokens are identical). A batch stops when every row has ended (EOS).
        """
        import torch
        from transformers import LogitsProcessorList

        config = self._generation_config(sampling)
        recorder = _chosen_logprobs_processor()
        processors = LogitsProcessorList([recorder])
        fork = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork), torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            if not self.family.static_cache and sampling.decoding != "eager":
                raise ValueError(
                    f"{self.family.title}'s cache cannot be copied into a static cache: use "
                    "decoding 'eager'"
                )
            if group_size == 1 and sampling.decoding == "eager":
                output = self.model.generate(
                    **inputs, generation_config=config, logits_processor=processors
                )
            else:
                output = self._generate_shared(
                    inputs, config, group_size, sampling.decoding, processors
                )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        logprobs = recorder.finish(new_tokens[:, -1]) if new_tokens.shape[1] else None
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        generations = []
        for i, row in enumerate(new_tokens.tolist()):
            ids = []
            for token in row:
                ids.append(token)
                if token in eos_ids:
                    break
            # With the opening the chat template wrote (Qwen3.5's "<think>\n"), if any.
            text = self.processor.full_response(
                self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            )
            mean = None
            if logprobs is not None and ids:
                mean = float(logprobs[i, : len(ids)].mean())
            generations.append(Generation(text, tuple(ids), mean))
        return generations

    def _generate_shared(self, inputs, config, group_size: int, decoding: str, processors=None):
        """Prefill every prompt token but the last once, repeat the cache, decode.

        ``generate`` then runs the last prompt token of each of the N x ``group_size`` rows and
        decodes them; ``rope_deltas`` (Qwen2.5-VL's 3D-position offsets that the prefill
        stores on the model) are repeated with the cache so decoding positions stay right.
        """
        import torch
        from transformers import CompileConfig, DynamicCache, StaticCache

        model = self.model
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        mm_types = inputs["mm_token_type_ids"]
        out = model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=mm_types[:, :-1],
            cache=DynamicCache(config=model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.cache
        if decoding == "eager":
            # Row i -> rows i*G .. i*G+G-1. reorder_cache gathers every layer kind, also the
            # conv and recurrent states of Qwen3.5's linear-attention layers, which have no
            # batch_repeat_interleave in transformers 5.25.
            rows = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(group_size)
            cache.reorder_cache(rows)
        else:
            # Rounded up, so prompts of similar length reuse one compiled graph.
            length = -(-(ids.shape[1] + config.max_new_tokens) // CACHE_ROUNDING) * CACHE_ROUNDING
            static = StaticCache(config=model.config, max_cache_len=length)
            for index, layer in enumerate(cache.layers):
                static.update(
                    layer.keys.repeat_interleave(group_size, 0),
                    layer.values.repeat_interleave(group_size, 0),
                    index,
                )
            cache = static
            config.disable_compile = decoding != "compiled"
            config.compile_config = CompileConfig(fullgraph=False, dynamic=False)
            config.compile_config._compile_all_devices = True
        holder = next(m for m in model.modules() if hasattr(m, "rope_deltas"))
        holder.rope_deltas = holder.rope_deltas.repeat_interleave(group_size, 0)
        return model.generate(
            input_ids=ids.repeat_interleave(group_size, 0),
            attention_mask=mask.repeat_interleave(group_size, 0),
            mm_token_type_ids=mm_types.repeat_interleave(group_size, 0),
            cache=cache,
            generation_config=config,
            logits_processor=processors,
        )

    def response_logprobs(self, inputs, response_ids, response_mask, model=None, images=None):
        """Per-token log-probabilities of given responses.

        Args:
            inputs: prompt batch from :meth:`encode` (B rows, left-padded to P tokens).
            response_ids: B x T long tensor, right-padded.
            response_mask: B x T tensor, 1 on real response tokens.
            model: runs the forward instead of ``self.model`` (e.g. its DDP wrapper).
            images: the vision tower's output (``get_image_features``) for the rows' images,
                in row order, in place of ``inputs["pixel_values"]`` (see
                :meth:`grouped_logprobs`).

        Returns:
            B x T float32 tensor of ``log p(response_ids[t] | prompt, response[:t])``
            (values at padded positions are meaningless; mask them). The LM head runs only
            at the T positions that predict response tokens.
        """
        import torch

        response_ids = response_ids.to(self.device)
        response_mask = response_mask.to(self.device)
        if images is None:
            vision = {"pixel_values": inputs["pixel_values"]}
        else:
            vision = {"mm_encoder_outputs": {"image": images}}
        outputs = (self.model if model is None else model)(
            input_ids=torch.cat([inputs["input_ids"], response_ids], dim=1),
            attention_mask=torch.cat([inputs["attention_mask"], response_mask.long()], dim=1),
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(response_ids, dtype=torch.int32)],
                dim=1,
            ),
            use_cache=False,
            # The LM head runs on the response positions only: no prompt logits (B x P x V).
            logits_to_keep=response_ids.shape[1] + 1,
            **vision,
        )
        logits = outputs.logits[:, :-1].float()
        chosen = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        return chosen - torch.logsumexp(logits, dim=-1)

    def logprobs_and_image_logits(
        self,
        inputs,
        response_ids,
        response_mask,
        image_layers: Sequence[int | None] = (None,),
        attention_layer: int | None = None,
        read_at=None,
        read_layer: int | None = None,
    ) -> Readout:
        """:meth:`response_logprobs` plus the LM head's logits at every image token.

        One forward of the language model; the LM head runs on the response positions (as
        :meth:`response_logprobs`, the same values) and on the prompt's image tokens (the
        merged tokens the vision tower writes, ``image_token_id`` in ``input_ids``).
        ``image_layers``: read the image tokens' hidden states after each of these many decoder
        layers (through the final norm, then the LM head) instead of after the last one, so
        that what they are taught there is in their content for the layers above (None: the
        last); one set of logits per entry.
        ``attention_layer``: also return that decoder layer's attention weights (computed with
        eager attention for this forward, which alone returns them).
        ``read_at``: K x 2 (row, position in the prompt and response) pairs whose hidden states
        are read like the image tokens', after decoder layer ``read_layer`` (None: the last).

        Returns:
            :class:`Readout`: B x T float32 log-probs; a list of N x V float32 logits, one per
            ``image_layers`` entry, N the image tokens of the batch in ``input_ids`` order
            (row 0's images first, each image's merged tokens row-major, as the processor lays
            them out); B x heads x L x L attention weights over the prompt and response (L
            positions), or None; K x V float32 logits at ``read_at``, or None.
        """
        import torch

        response_ids = response_ids.to(self.device)
        response_mask = response_mask.to(self.device)
        prompt_ids = inputs["input_ids"]
        decoder = self.model.get_decoder()
        kept = [*image_layers, read_layer]
        with _layer_probes(self.model, kept, attention_layer) as (captured, weights):
            hidden = self.model.model(
                input_ids=torch.cat([prompt_ids, response_ids], dim=1),
                attention_mask=torch.cat([inputs["attention_mask"], response_mask.long()], dim=1),
                pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"],
                mm_token_type_ids=torch.cat(
                    [
                        inputs["mm_token_type_ids"],
                        torch.zeros_like(response_ids, dtype=torch.int32),
                    ],
                    dim=1,
                ),
                use_cache=False,
            )[0]
        head, length = self.model.lm_head, prompt_ids.shape[1]
        logits = head(hidden[:, length - 1 : length + response_ids.shape[1] - 1]).float()
        chosen = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        is_image = prompt_ids == self.model.config.image_token_id

        def after(layer):
            """Hidden states after ``layer``, normed as the model's output (already normed)."""
            return decoder.norm(captured[layer]) if layer in captured else hidden

        image_logits = [head(after(k)[:, :length][is_image]).float() for k in image_layers]
        logp = chosen - torch.logsumexp(logits, dim=-1)
        read_logits = None
        if read_at is not None:
            rows, positions = read_at.to(hidden.device).unbind(-1)
            read_logits = head(after(read_layer)[rows, positions]).float()
        return Readout(logp, image_logits, weights[0] if weights else None, read_logits)

    def grouped_logprobs(
        self,
        prompts: Sequence[EncodedPrompt],
        rows: Sequence[int],
        response_ids,
        response_mask,
        model=None,
        share: bool = True,
        prefix: bool | None = None,
    ):
        """:meth:`response_logprobs` of responses to already encoded prompts.

        Args:
            prompts: the distinct prompts of a micro-batch.
            rows: R indices into ``prompts``, one per response row.
            response_ids, response_mask: R x T, as in :meth:`response_logprobs`.
            share: compute what rows of one prompt share once. With ``prefix`` (the default
                unless activation checkpointing is on, which cannot keep a cache, or the
                family's cache cannot carry gradients: ``PolicyFamily.prefix_gradients``)
                the prompt's
                tokens and images run once and every row attends to that prompt's keys and
                values (gradients flow back into the prompt once, summed over its rows);
                without, only the vision tower runs once per prompt. False: every row runs
                its whole prompt (the reference path).

        Returns:
            R x T float32 log-probs, equal (up to float rounding) on every path.
        """
        import torch

        rows = list(rows)
        if prefix is None:
            prefix = not _is_checkpointing(self.model) and self.family.prefix_gradients
        if share and prefix:
            if torch.is_grad_enabled() and not self.family.prefix_gradients:
                raise ValueError(
                    f"{self.family.title}'s cache states are updated in place: no gradients "
                    "through a shared prefix (prefix=False)"
                )
            return self._prefix_logprobs(prompts, rows, response_ids, response_mask, model)
        inputs = self.collate([prompts[r] for r in rows], pixels=not share)
        if not share:
            return self.response_logprobs(inputs, response_ids, response_mask, model)
        distinct = list(dict.fromkeys(rows))
        once = self.collate([prompts[i] for i in distinct])
        vision = self.model.get_image_features(once["pixel_values"], once["image_grid_thw"])
        first, start = {}, 0
        for i in distinct:
            first[i] = start
            start += len(prompts[i].image_grid_thw)
        order = [first[r] + k for r in rows for k in range(len(prompts[r].image_grid_thw))]
        vision.pooler_output = [vision.pooler_output[i] for i in order]
        # Qwen3-VL's DeepStack: per injected layer, per image features, reordered alike.
        if getattr(vision, "deepstack_features", None) is not None:
            vision.deepstack_features = [[f[i] for i in order] for f in vision.deepstack_features]
        return self.response_logprobs(inputs, response_ids, response_mask, model, vision)

    def _prefix_logprobs(self, prompts, rows, response_ids, response_mask, model=None):
        """Shared-prefix forward ("Prefix Grouper"): each distinct prompt once, with a cache
        whose rows are then gathered for the responses; autograd carries the gradient of every
        response back through the gather into its prompt's single forward."""
        import torch
        from transformers import DynamicCache

        model = self.model if model is None else model
        distinct = list(dict.fromkeys(rows))
        index = torch.tensor([distinct.index(r) for r in rows], device=self.device)
        once = self.collate([prompts[i] for i in distinct])
        out = model(
            **once, cache=DynamicCache(config=self.model.config), use_cache=True, logits_to_keep=1
        )
        cache = out.cache
        cache.reorder_cache(index)  # every layer kind, linear-attention states included
        holder = next(m for m in self.model.modules() if hasattr(m, "rope_deltas"))
        deltas = holder.rope_deltas[index]
        response_ids = response_ids.to(self.device)
        mask = torch.cat([once["attention_mask"][index], response_mask.to(self.device).long()], 1)
        # Decoding positions, as ``generate`` makes them: real tokens so far + the 3D offset.
        positions = (mask.cumsum(-1) - 1)[:, -response_ids.shape[1] :] + deltas
        logits = model(
            input_ids=response_ids,
            attention_mask=mask,
            position_ids=positions[None].expand(3, -1, -1),
            cache=cache,
            use_cache=True,
            logits_to_keep=response_ids.shape[1],
        ).logits
        logits = torch.cat([out.logits[index], logits[:, :-1]], dim=1).float()
        chosen = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        return chosen - torch.logsumexp(logits, dim=-1)


def _is_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers >= 5.23 renamed it."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        try:
            value = getattr(model, name)
        except AttributeError:
            continue
        return bool(value)
    return False


@contextlib.contextmanager
def _layer_probes(model, kept: Sequence[int | None], attention_layer: int | None):
    """Hooks that keep, during one forward of ``model``, the hidden states after each decoder
    layer of ``kept`` that is not the last (a dict by layer number) and the attention
    weights of decoder layer ``attention_layer`` (in a list). That layer alone runs eager
    attention meanwhile, the one implementation that returns them; the others keep theirs.
    Yields the dict and the list they fill."""
    decoder = model.get_decoder()
    layers = len(decoder.layers)
    named = [("layer", value) for value in kept]
    for name, value in [*named, ("attention_layer", attention_layer)]:
        if value is not None and not 1 <= value <= layers:
            raise ValueError(f"{name} {value}: the model has decoder layers 1-{layers}")
    captured, weights, hooks = {}, [], []

    def keep(layer: int):
        def hook(_module, _args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output

        return hook

    for layer in {value for value in kept if value is not None and value < layers}:
        hooks.append(decoder.layers[layer - 1].register_forward_hook(keep(layer)))
    if attention_layer is not None:
        attention = decoder.layers[attention_layer - 1].self_attn
        shared = attention.config
        # transformers reads the implementation from the module's config at each call
        attention.config = copy.copy(shared)
        attention.config._attn_implementation = "eager"
        hooks.append(attention.register_forward_pre_hook(_additive_mask, with_kwargs=True))
        hooks.append(
            attention.register_forward_hook(
                lambda _module, _args, output: weights.append(output[1])
            )
        )
    try:
        yield captured, weights
    finally:
        for hook in hooks:
            hook.remove()
        if attention_layer is not None:
            attention.config = shared


def _additive_mask(_module, args, kwargs):
    """The attention mask built for the model's implementation, as eager attention adds it:
    0 where a query may attend, the dtype's minimum elsewhere (transformers' eager mask). SDPA
    builds a boolean B x 1 x L x L mask, or None for a causal batch without padding; flash
    attention a boolean B x L padding mask, or None; eager's own passes as it is."""
    import torch

    mask, hidden = kwargs.get("attention_mask"), kwargs["hidden_states"]
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise ValueError(
            f"reading attention weights needs a model on SDPA, eager or flash attention, not "
            f"one whose mask is a {type(mask).__name__}"
        )
    if mask is None or mask.dim() == 2:
        length = hidden.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
        mask = causal[None, None] if mask is None else causal & mask.bool()[:, None, None, :]
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=hidden.dtype, device=mask.device)
        kwargs["attention_mask"] = torch.where(mask, zero, torch.finfo(hidden.dtype).min)
    return args, kwargs
