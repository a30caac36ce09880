"""The VLM's input side: chat template, tokenizer and Qwen2-VL image processor, images only.

``VLMProcessor`` is an image-only replacement for transformers' ``Qwen2_5_VLProcessor`` and
``Qwen3VLProcessor`` (which cannot be built without torchvision, because they insist on a video
processor). It uses the checkpoint's own tokenizer, chat template and
``preprocessor_config.json`` through the PIL image processor (the one transformers maps every
Qwen-VL family to), so it behaves the same with and without torchvision. The policy family
(:mod:`socioseg.models.families`) says which patch, merge and normalisation a checkpoint must
have. :class:`EncodedPrompt` keeps one prompt's encoding for reuse (generation, then the
update).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from socioseg.models.defaults import ModelDefaults
from socioseg.models.families import IMAGE_TOKEN, QWEN2_5_VL, VISION_TOKENS, PolicyFamily
from socioseg.prompts import chat_messages

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["IMAGE_TOKEN", "VISION_TOKENS", "EncodedPrompt", "VLMProcessor"]

_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt tokenized and its images preprocessed, kept (on CPU) for reuse.

    ``input_ids``: P long (image pads expanded, no padding); ``pixel_values``: patches x D
    float32; ``image_grid_thw``: images x 3 long. Rollouts keep these so the update runs no
    second preprocessing.
    """

    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor


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

    def __init__(
        self,
        tokenizer,
        image_processor,
        defaults: ModelDefaults | None = None,
        family: PolicyFamily = QWEN2_5_VL,
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        # The checkpoint's own frame and decoding limits (socioseg.models.defaults).
        self.defaults = defaults or ModelDefaults()
        self.family = family
        self.tokenizer.padding_side = "left"
        self.image_token_id = tokenizer.convert_tokens_to_ids(family.image_token)
        self.vision_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in family.vision_tokens]
        # What the template's generation prompt already wrote of each response ("" mostly).
        opening = family.template_think
        self.response_prefix = opening if opening and self.chat_text("").endswith(opening) else ""

    @classmethod
    def build(
        cls, tokenizer, min_pixels: int, max_pixels: int, family: PolicyFamily = QWEN2_5_VL
    ) -> VLMProcessor:
        """A processor with the family's image settings (patch, merge, mean/std)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        if family is QWEN2_5_VL:  # the released folders carry transformers' own defaults
            size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
            return cls(tokenizer, Qwen2VLImageProcessorPil(size=size))
        settings = family.image_processor_settings(min_pixels, max_pixels)
        return cls(tokenizer, Qwen2VLImageProcessorPil(**settings), family=family)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        family: PolicyFamily = QWEN2_5_VL,
    ) -> VLMProcessor:
        """Load tokenizer, chat template and image settings saved with a checkpoint.

        The frame bounds are, in order: the arguments, the folder's
        ``socioseg_inference.json``, its ``preprocessor_config.json``. The folder's patch and
        merge sizes must be the family's (they fix the VLM frame's multiple).
        """
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
        found = (image_processor.patch_size, image_processor.merge_size)
        if found != (family.patch_size, family.merge_size):
            raise ValueError(
                f"{name_or_path}: preprocessor_config.json has patch_size {found[0]} and "
                f"merge_size {found[1]}, but a {family.title} model needs {family.patch_size} "
                f"and {family.merge_size}; restore the checkpoint's own preprocessor_config.json"
            )
        defaults = ModelDefaults.read(name_or_path)
        min_pixels = min_pixels or defaults.min_pixels
        max_pixels = max_pixels or defaults.max_pixels
        if min_pixels is not None or max_pixels is not None:
            size = dict(image_processor.size)
            size["shortest_edge"] = min_pixels or size["shortest_edge"]
            size["longest_edge"] = max_pixels or size["longest_edge"]
            image_processor.size = type(image_processor.size)(**size)
        return cls(tokenizer, image_processor, defaults, family)

    def save_pretrained(self, out_dir: str | Path) -> None:
        self.tokenizer.save_pretrained(out_dir)
        self.image_processor.save_pretrained(out_dir)
        self.defaults.write(out_dir)

    def chat_text(self, user_text: str) -> str:
        """The full prompt string of one stage: chat template with map + satellite + text."""
        return self.tokenizer.apply_chat_template(
            chat_messages(user_text), tokenize=False, add_generation_prompt=True
        )

    def full_response(self, generated: str) -> str:
        """A response as the prompts ask for it: the generated text after what the chat
        template's generation prompt already opened (:attr:`response_prefix`)."""
        return self.response_prefix + generated

    def generated_part(self, response: str) -> str:
        """What the model itself writes of a full ``response`` (a teacher answer): without
        the opening the template already wrote (``<think>`` for Qwen3.5's thinking mode)."""
        opening = self.response_prefix.strip()
        if opening and response.startswith(opening):
            return response[len(opening) :].lstrip("\n")
        return response

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
            pieces = text.split(self.family.image_token)
            if len(pieces) - 1 != len(group):
                raise ValueError(
                    f"prompt has {len(pieces) - 1} image placeholders but {len(group)} images"
                )
            out = pieces[0]
            for piece in pieces[1:]:
                out += self.family.image_token * int(grid[index].prod() // merge) + piece
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

    def split(self, batch) -> list[EncodedPrompt]:
        """The rows of a batch from :meth:`__call__` as :class:`EncodedPrompt` (CPU tensors)."""
        merge = self.image_processor.merge_size**2
        counts = (batch["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        grid, pixels = batch["image_grid_thw"], batch["pixel_values"]
        tokens_per_image = (grid.prod(dim=1) // merge).tolist()
        patches_per_image = grid.prod(dim=1).tolist()
        out, image, patch = [], 0, 0
        for row, count in enumerate(counts):
            first = image
            while count > 0:
                count -= tokens_per_image[image]
                image += 1
            n_patches = sum(patches_per_image[first:image])
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
            out.append(EncodedPrompt(ids, pixels[patch : patch + n_patches], grid[first:image]))
            patch += n_patches
        return out

    def collate(self, prompts: Sequence[EncodedPrompt], pixels: bool = True):
        """Left-pad encoded prompts into one batch (the keys of :meth:`__call__`; without
        ``pixel_values`` when ``pixels`` is False)."""
        import torch
        from transformers import BatchFeature

        longest = max(len(p.input_ids) for p in prompts)
        ids = torch.full((len(prompts), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt.input_ids) :] = prompt.input_ids
            mask[i, longest - len(prompt.input_ids) :] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "image_grid_thw": torch.cat([p.image_grid_thw for p in prompts]),
            "mm_token_type_ids": (ids == self.image_token_id).to(torch.int32),
        }
        if pixels:
            batch["pixel_values"] = torch.cat([p.pixel_values for p in prompts])
        return BatchFeature(batch)
