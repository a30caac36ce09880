"""The only module that touches the VLM (Qwen2.5-VL) API: load, prompt, generate, log-probs.

``VLMProcessor`` is an image-only replacement for transformers' ``Qwen2_5_VLProcessor`` (which
cannot be built without torchvision, because it insists on a video processor). It uses the
checkpoint's own tokenizer, chat template and ``preprocessor_config.json`` through the PIL image
processor, so it behaves the same with and without torchvision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from socioseg.prompts import chat_messages
from socioseg.runtime import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_VLM = "vvangfaye/SocioReasoner-3B"

IMAGE_TOKEN = "<|image_pad|>"
# Tokens a policy must never emit: one sampled image pad breaks the next forward pass.
VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


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

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use greedy=True instead)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    """One response: decoded text and its token ids (no padding, special tokens kept).

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


def _read_chat_template(name_or_path: str) -> str | None:
    """The chat template stored beside the tokenizer (local folder or Hub repo), if any."""
    folder = Path(name_or_path)
    for filename in _CHAT_TEMPLATE_FILES:
        if folder.is_dir():
            path = folder / filename
            if not path.is_file():
                continue
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(hf_hub_download(name_or_path, filename))
            except EntryNotFoundError:
                continue
        text = path.read_text(encoding="utf-8")
        return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


class VLMProcessor:
    """Tokenizer + Qwen2-VL image processor (PIL backend) + chat template, images only.

    Call it with templated texts and, per text, its images (map, satellite); it returns the
    model inputs ``input_ids``, ``attention_mask`` (left-padded), ``pixel_values``,
    ``image_grid_thw`` and ``mm_token_type_ids`` (1 on image tokens, needed for 3D RoPE).
    """

    def __init__(self, tokenizer, image_processor):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.tokenizer.padding_side = "left"
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.vision_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]

    @classmethod
    def build(cls, tokenizer, min_pixels: int, max_pixels: int) -> VLMProcessor:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        return cls(tokenizer, Qwen2VLImageProcessorPil(size=size))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> VLMProcessor:
        """Load tokenizer, chat template and image settings saved with a checkpoint."""
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if not tokenizer.chat_template:
            tokenizer.chat_template = _read_chat_template(name_or_path)
        if not tokenizer.chat_template:
            raise ValueError(
                f"{name_or_path} has no chat template (tokenizer_config.json, "
                f"{' or '.join(_CHAT_TEMPLATE_FILES)}): it is not a Qwen2.5-VL instruct checkpoint"
            )
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path)
        if min_pixels is not None or max_pixels is not None:
            size = dict(image_processor.size)
            size["shortest_edge"] = min_pixels or size["shortest_edge"]
            size["longest_edge"] = max_pixels or size["longest_edge"]
            image_processor.size = type(image_processor.size)(**size)
        return cls(tokenizer, image_processor)

    def save_pretrained(self, out_dir: str | Path) -> None:
        self.tokenizer.save_pretrained(out_dir)
        self.image_processor.save_pretrained(out_dir)

    def chat_text(self, user_text: str) -> str:
        """The full prompt string of one stage: chat template with map + satellite + text."""
        return self.tokenizer.apply_chat_template(
            chat_messages(user_text), tokenize=False, add_generation_prompt=True
        )

    def __call__(self, texts: Sequence[str], images: Sequence[Sequence[Image.Image]]):
        """Tokenize ``texts`` (already templated), each with its images, into model inputs."""
        import torch
        from transformers import BatchFeature

        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} image lists")
        flat = [image for group in images for image in group]
        vision = self.image_processor(images=flat, return_tensors="pt")
        grid = vision["image_grid_thw"]
        merge = self.image_processor.merge_size**2
        expanded, index = [], 0
        for text, group in zip(texts, images, strict=True):
            pieces = text.split(IMAGE_TOKEN)
            if len(pieces) - 1 != len(group):
                raise ValueError(
                    f"prompt has {len(pieces) - 1} image placeholders but {len(group)} images"
                )
            out = pieces[0]
            for piece in pieces[1:]:
                out += IMAGE_TOKEN * int(grid[index].prod() // merge) + piece
                index += 1
            expanded.append(out)
        encoded = self.tokenizer(expanded, padding=True, return_tensors="pt")
        mm_types = (encoded["input_ids"] == self.image_token_id).to(torch.int32)
        return BatchFeature(
            {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "pixel_values": vision["pixel_values"],
                "image_grid_thw": grid,
                "mm_token_type_ids": mm_types,
            }
        )


class VisionLanguageModel:
    """A Qwen2.5-VL policy with its processor, on one device."""

    def __init__(self, model, processor: VLMProcessor, name: str = ""):
        self.model = model
        self.processor = processor
        self.name = name

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
        """Load a Qwen2.5-VL checkpoint (Hub id or local folder) and its processor."""
        from transformers import Qwen2_5_VLForConditionalGeneration

        from socioseg.sources import QWEN_VL_TYPES, VLM_WHAT, model_source

        name_or_path = model_source(name_or_path, QWEN_VL_TYPES, VLM_WHAT)
        torch_device = resolve_device(device)
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                name_or_path, dtype=resolve_dtype(dtype, torch_device)
            )
        except OSError as error:
            raise ModelLoadError(
                f"cannot load the Qwen2.5-VL model {name_or_path!r}: "
                f"{str(error).splitlines()[0]} Pass a local checkpoint folder (--vlm DIR); "
                "offline, `socioseg tiny-models DIR` builds random-weight test models"
            ) from error
        model.to(torch_device).eval()
        processor = VLMProcessor.from_pretrained(name_or_path, min_pixels, max_pixels)
        return cls(model, processor, name=str(name_or_path))

    def encode(self, user_texts: Sequence[str], images: Sequence[Sequence[Image.Image]]):
        """Model inputs on the model's device for a batch of (user text, [map, satellite])."""
        texts = [self.processor.chat_text(text) for text in user_texts]
        return self.processor(texts, images).to(self.device)

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

    def generate(self, inputs, sampling: SamplingSettings) -> list[Generation]:
        """Sample one response per row of ``inputs`` (from :meth:`encode`)."""
        import torch
        from transformers import LogitsProcessorList

        config = self._generation_config(sampling)
        recorder = _chosen_logprobs_processor()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    generation_config=config,
                    logits_processor=LogitsProcessorList([recorder]),
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
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            mean = None
            if logprobs is not None and ids:
                mean = float(logprobs[i, : len(ids)].mean())
            generations.append(Generation(text, tuple(ids), mean))
        return generations

    def response_logprobs(self, inputs, response_ids, response_mask, model=None):
        """Per-token log-probabilities of given responses.

        Args:
            inputs: prompt batch from :meth:`encode` (B rows, left-padded to P tokens).
            response_ids: B x T long tensor, right-padded.
            response_mask: B x T tensor, 1 on real response tokens.

        Returns:
            B x T float32 tensor of ``log p(response_ids[t] | prompt, response[:t])``
            (values at padded positions are meaningless; mask them).
            ``model`` runs the forward instead of ``self.model`` (e.g. its DDP wrapper).
        """
        import torch

        response_ids = response_ids.to(self.device)
        response_mask = response_mask.to(self.device)
        outputs = (self.model if model is None else model)(
            input_ids=torch.cat([inputs["input_ids"], response_ids], dim=1),
            attention_mask=torch.cat([inputs["attention_mask"], response_mask.long()], dim=1),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(response_ids, dtype=torch.int32)],
                dim=1,
            ),
            use_cache=False,
            # The LM head runs on the response positions only: no prompt logits (B x P x V).
            logits_to_keep=response_ids.shape[1] + 1,
        )
        logits = outputs.logits[:, :-1].float()
        chosen = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        return chosen - torch.logsumexp(logits, dim=-1)
