"""Dense labels on the image tokens: where each token is, and what lies under it.

A policy localises only if its image tokens carry their own position in their content (the
vision tower has relative RoPE only; the language model's M-RoPE rotates queries and keys, not
values). The warm-up (``socioseg sft``, ``aux:`` section) can ask the model's own LM head, at
every merged image token (the language model's image tokens), to predict:

- position: the token's column on the merged token grid for the map (the first image), its row
  for the satellite image (the second), as a digit token. A grid side of at most 10 tokens
  gives the index itself (0-9); a longer side, whose indices would need two digit tokens,
  gives the index's tenth of the side, ``index * 10 // side`` (still 0-9, still ordered).
- entity: the first token of the target's ``socio_class`` name where the sample's mask covers
  more than half of the token's pixels, else the first token of ``"none"``. Classes whose
  names start with the same token share a label. A target with no known class (a
  socio-function query over several classes) gives no entity label on its covered tokens
  (``IGNORE``); its other tokens are still "none". Where the other entities
  of the same place are known (``others``: the other questions about the same images), each
  labels its own tokens with its class the same way: the image tokens come before the
  question, so the same block should not be "School" for one question and "none" for
  another.
- name: where a token's entity has a known name (a name question asks for it, the sample's
  own or one of ``others``), the first token of that name as a reasoning writes it after a
  space (`` Heping`` for "Heping University"), on the tokens it covers more than half of;
  every other token is left out (``IGNORE``). The class says what an entity is; the name's
  first word, read off the map label, says which of several of one class it is.

- attention: the answer's coordinate digits (the digit tokens after ``<answer>``) should be
  written while one head (head 0 of one decoder layer) looks at the tokens the target covers
  (any of their pixels): an x's digits at the map's (which know their column), a y's at the
  satellite image's (which know their row). The loss is minus the log of that head's
  attention mass on them, averaged over the digits. It teaches the link that the position
  labels leave to chance: the answer reading the place of the entity it is asked for
  (docs/mini.md). With ``edges``, each number's digits look only at the target's tokens in
  the column (x) or row (y) nearest the number, the line whose position label is the one
  the number writes: the left column of the target for a box's x1, the right one for x2.
- copy: where the answer's reasoning writes the query again (the teacher's "The map labels
  <query>; ..."), each of those tokens should be written while one head (head 1 of the same
  layer) looks at the prompt's tokens that hold the same characters of the query. The prompt
  quotes the query (``'Heping`` as ``He``, ``ping``) where the reasoning writes it after a
  space (`` Heping``, one token), so copying it is a lookup the answer loss alone teaches
  slowly.

Inference, prompts and answers do not change: these are extra training targets only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from socioseg.geometry import Frames

IGNORE = -100  # cross_entropy's ignore_index: a token without a label
DIGITS = 10
NONE_CLASS = "none"
MAJORITY = 0.5  # a token is on the entity when the mask covers more than this share
_NUMBER = re.compile(r"(?<!\w)\d+")  # a number, not the digit of a name such as bbox_2d


def position_digit(index: np.ndarray, side: int) -> np.ndarray:
    """The digit (0-9) that stands for ``index`` on a grid side of ``side`` tokens."""
    index = np.asarray(index)
    return index if side <= DIGITS else index * DIGITS // side


def token_coverage(mask: np.ndarray, frames: Frames, grid: tuple[int, int]) -> np.ndarray:
    """Share of each merged token's pixels that ``mask`` covers.

    ``mask``: H x W bool in the image frame; ``grid``: (rows, columns) of merged tokens over
    the VLM frame (each token a ``factor``-px square there). A mask pixel belongs to the token
    its centre falls in, after moving to the VLM frame through ``frames``. Returns a
    rows x columns float64 array in [0, 1].
    """
    rows, cols = grid
    height, width = mask.shape
    vlm_w, vlm_h = frames.vlm_size
    centres = frames.points_array(
        np.stack(np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5), -1).reshape(-1, 2),
        "image",
        "vlm",
    )
    col = np.minimum((centres[:, 0] * cols / vlm_w).astype(int), cols - 1)
    row = np.minimum((centres[:, 1] * rows / vlm_h).astype(int), rows - 1)
    cell = row * cols + col
    pixels = np.bincount(cell, minlength=rows * cols)
    covered = np.bincount(cell, weights=mask.reshape(-1).astype(float), minlength=rows * cols)
    return (covered / np.maximum(pixels, 1)).reshape(rows, cols)


@dataclass(frozen=True)
class LabelTokens:
    """Token ids of the labels in one tokenizer: ``digits[d]`` for digit d, class names."""

    digits: tuple[int, ...]
    none: int

    @classmethod
    def of(cls, tokenizer) -> LabelTokens:
        digits = []
        for d in range(DIGITS):
            ids = tokenizer(str(d)).input_ids
            if len(ids) != 1:
                raise ValueError(f"the tokenizer writes the digit {d} as {len(ids)} tokens, not 1")
            digits.append(ids[0])
        return cls(tuple(digits), tokenizer(NONE_CLASS).input_ids[0])

    @staticmethod
    def of_class(tokenizer, socio_class: str | None) -> int:
        """The entity label of ``socio_class``: the first token of its name (IGNORE if None)."""
        return IGNORE if socio_class is None else tokenizer(socio_class).input_ids[0]

    @staticmethod
    def of_name(tokenizer, name: str | None) -> int:
        """The name label of an entity called ``name``: the first token of " " + ``name``
        (IGNORE if None or blank)."""
        if not name or not name.strip():
            return IGNORE
        return tokenizer(" " + name.strip()).input_ids[0]


def image_labels(
    mask: np.ndarray,
    class_token: int,
    frames: Frames,
    grid: tuple[int, int],
    tokens: LabelTokens,
    axis: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``(position, entity, look)`` labels of one image's merged tokens, row-major.

    ``axis``: "column" (the map) or "row" (the satellite image); ``class_token`` from
    :meth:`LabelTokens.of_class`. ``position`` and ``entity``: int64 token ids; ``look``: bool,
    the tokens the mask covers at all (where the answer's attention label points). Each of
    length rows x columns.
    """
    position = position_labels(grid, tokens, axis)
    coverage = token_coverage(mask, frames, grid).reshape(-1)
    entity = np.where(coverage > MAJORITY, class_token, tokens.none).astype(np.int64)
    return position, entity, coverage > 0


def position_labels(grid: tuple[int, int], tokens: LabelTokens, axis: str) -> np.ndarray:
    """Digit token ids of each merged token's column (``axis`` "column") or row ("row"),
    row-major over the (rows, columns) ``grid``; int64."""
    rows, cols = grid
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    index, side = (c, cols) if axis == "column" else (r, rows)
    return np.asarray(tokens.digits, dtype=np.int64)[position_digit(index, side)].reshape(-1)


@dataclass(frozen=True)
class TokenLabels:
    """The labels of one example's image tokens (map then satellite, each row-major over
    ``grid`` = (rows, columns) merged tokens): ``position``, ``entity`` and ``name`` token
    ids, ``look`` the on-target tokens; ``scale``: token lines per answer unit on x and y;
    ``target``: the entity label of the asked-for entity (its class token, ``IGNORE`` when it
    has none)."""

    position: np.ndarray
    entity: np.ndarray
    look: np.ndarray
    grid: tuple[int, int]
    scale: tuple[float, float]
    target: int = IGNORE
    query: str = ""  # the question's text, for the copy label ("": none)
    name: np.ndarray | None = None  # None: no name labels (every token IGNORE)


def example_labels(
    mask: np.ndarray,
    class_token: int,
    frames: Frames,
    grid: tuple[int, int],
    tokens: LabelTokens,
    answer_frame: str = "vlm",
    others: Sequence[tuple[np.ndarray, int, int]] = (),
    name_token: int = IGNORE,
) -> TokenLabels:
    """Labels of one example's two images (map then satellite, both ``grid`` = (rows,
    columns) merged tokens over the VLM frame): :func:`image_labels`' three arrays and the
    name labels, each concatenated in the order of their image tokens. ``answer_frame``: the
    frame of the answer's numbers (``vlm`` pixels or ``relative``), for ``scale``.
    ``name_token``: the target's name label (:meth:`LabelTokens.of_name`; ``IGNORE``: not
    known). ``others``: the other entities of the same images as (mask, class token, name
    token); each labels the tokens it covers more than half of that the target leaves "none"
    with its class (one of unknown class, ``IGNORE``, none) and those the target leaves
    without a name with its name."""
    parts = [image_labels(mask, class_token, frames, grid, tokens, a) for a in ("column", "row")]
    position, entity, look = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    on_target = np.tile(token_coverage(mask, frames, grid).reshape(-1) > MAJORITY, 2)
    name = np.where(on_target, name_token, IGNORE).astype(np.int64)
    for other, other_class, other_name in others:
        covered = np.tile(token_coverage(other, frames, grid).reshape(-1) > MAJORITY, 2)
        if other_class != IGNORE:
            entity = np.where(covered & (entity == tokens.none), other_class, entity)
        name = np.where(covered & (name == IGNORE), other_name, name)
    width, height = frames.size(answer_frame)
    scale = (grid[1] / width, grid[0] / height)
    return TokenLabels(position, entity, look, grid, scale, class_token, name=name)


def coordinate_positions(tokenizer, answer: str) -> list[tuple[int, int, int]]:
    """``(index, axis, value)`` of ``answer``'s digit tokens that write a number after
    ``<answer>`` (its coordinates: not a digit of the reasoning, as in a place name, nor the
    2 of ``bbox_2d``). ``axis``: 0 for an x (the 1st, 3rd, ... number: boxes and points both
    list x before y), 1 for a y; ``value``: the number the digit is part of."""
    start = answer.find("<answer>")
    if start < 0:
        return []
    number = np.full(len(answer) + 1, -1)
    values = []
    for k, match in enumerate(_NUMBER.finditer(answer, start)):
        number[match.start() : match.end()] = k
        values.append(int(match.group()))
    encoded = tokenizer(answer, return_offsets_mapping=True)
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(DIGITS)}
    return [
        (i, int(number[begin]) % 2, values[number[begin]])
        for i, (token, (begin, _)) in enumerate(
            zip(encoded.input_ids, encoded.offset_mapping, strict=True)
        )
        if token in digits and number[begin] >= 0
    ]


def digit_looks(
    look: np.ndarray,
    grid: tuple[int, int],
    digits: list[tuple[int, int, int]],
    scale: tuple[float, float],
    edges: bool,
) -> np.ndarray:
    """The image tokens each coordinate digit's attention label points at.

    ``look``: the on-target tokens of the two images (map then satellite, each a
    ``grid`` = (rows, columns) row-major); ``digits``: :func:`coordinate_positions`' triples;
    ``scale``: token lines per answer unit on x and y (the grid side over the answer frame's
    extent). Without ``edges``, an x digit looks at the map's on-target tokens, a y digit at
    the satellite image's; with ``edges``, only at those in the column (x) / row (y) whose
    centre is nearest the digit's number. Returns ``len(digits)`` x ``look.size`` bool; a
    digit of a target with no tokens on its image gets an empty row.
    """
    rows, cols = grid
    size = rows * cols
    if look.size != 2 * size:
        raise ValueError(f"{look.size} look labels for two images of {rows} x {cols} tokens")
    out = np.zeros((len(digits), look.size), bool)
    for k, (_, axis, value) in enumerate(digits):
        on = look[axis * size : (axis + 1) * size].reshape(rows, cols)
        if edges and on.any():
            lines = np.nonzero(on.any(axis=0) if axis == 0 else on.any(axis=1))[0]
            line = lines[np.argmin(np.abs(lines + 0.5 - value * scale[axis]))]
            keep = np.zeros_like(on)
            if axis == 0:
                keep[:, line] = on[:, line]
            else:
                keep[line] = on[line]
            on = keep
        out[k, axis * size : (axis + 1) * size] = on.reshape(-1)
    return out


def copy_looks(
    tokenizer, prompt_ids: Sequence[int], user_text: str, answer: str, query: str
) -> tuple[list[int], np.ndarray]:
    """The copy label of one example: the indices of ``answer``'s tokens that write ``query``
    (its first occurrence), and for each, the positions of ``prompt_ids`` (the whole encoded
    prompt) to look at: the tokens of ``user_text``'s first ``query`` that share a character
    with it. ``user_text`` is found in ``prompt_ids`` by its own tokens (the chat template
    puts it after a special token, so it is tokenized as on its own); a prompt that does not
    hold them raises ``ValueError``. No query in the answer or the text: no rows."""
    where, start = answer.find(query), user_text.find(query)
    if not query or where < 0 or start < 0:
        return [], np.zeros((0, len(prompt_ids)), bool)
    text = tokenizer(user_text, return_offsets_mapping=True, add_special_tokens=False)
    ids = list(text.input_ids)
    prompt = list(prompt_ids)
    at = next((i for i in range(len(prompt) - len(ids) + 1) if prompt[i : i + len(ids)] == ids), -1)
    if at < 0:
        raise ValueError("the prompt's tokens do not hold its text's own tokens")
    sources = [  # (position in the prompt, query characters it holds)
        (at + i, max(begin, start) - start, min(end, start + len(query)) - start)
        for i, (begin, end) in enumerate(text.offset_mapping)
        if begin < start + len(query) and end > start
    ]
    written = tokenizer(answer, return_offsets_mapping=True).offset_mapping
    indices, looks = [], []
    for k, (begin, end) in enumerate(written):
        low, high = max(begin, where) - where, min(end, where + len(query)) - where
        if high <= low:
            continue
        row = np.zeros(len(prompt), bool)
        for position, a, b in sources:
            row[position] = a < high and b > low
        indices.append(k)
        looks.append(row)
    return indices, np.array(looks, bool).reshape(-1, len(prompt))


def attention_loss(
    weights: torch.Tensor,
    queries: list[tuple[torch.Tensor, torch.Tensor]],
    head: int = 0,
) -> torch.Tensor:
    """Minus the log of ``head``'s attention mass on the tokens to look at, mean over queries.

    ``weights``: B x heads x L x L attention (rows: queries); ``queries``: per row, the
    positions that write a coordinate digit (n long) and what each looks at (n x L bool,
    :func:`digit_looks` placed at the image tokens' positions); a digit with nothing to look
    at is left out.
    """
    rows, at, targets = [], [], []
    for row, (positions, looks) in enumerate(queries):
        kept = looks.any(-1)
        rows += [row] * int(kept.sum())
        at.append(positions[kept])
        targets.append(looks[kept])
    if not rows:
        return weights.sum() * 0.0
    # one gather of every query's row: its backward writes one zero gradient of the B x heads
    # x L x L weights, not one per example
    picked = weights[
        torch.tensor(rows, device=weights.device), head, torch.cat(at).to(weights.device)
    ]
    mass = (picked * torch.cat(targets).to(picked.device, picked.dtype)).sum(-1)
    return -torch.log(mass.float() + 1e-6).mean()


def aux_losses(
    position_logits: torch.Tensor,
    entity_logits: torch.Tensor,
    position: torch.Tensor,
    entity: torch.Tensor,
    none: int | None = None,
) -> dict[str, torch.Tensor]:
    """Token-mean cross-entropies of the LM head's image-token logits (N x V each, read where
    each label is taught) against the position and entity labels (N long each; ``IGNORE``
    left out). ``none``: the "none" label's token; given, the entity loss is the mean of the
    mean over the tokens labelled ``none`` and the mean over the others (each present)."""
    ce = torch.nn.functional.cross_entropy
    device = position_logits.device
    position, entity = position.to(device), entity.to(device)
    out = {"aux_position": ce(position_logits, position)}
    labelled = entity != IGNORE
    if not labelled.any():
        out["aux_entity"] = entity_logits.sum() * 0.0
    elif none is None:
        out["aux_entity"] = ce(entity_logits, entity, ignore_index=IGNORE)
    else:
        each = ce(entity_logits, entity, ignore_index=IGNORE, reduction="none")
        groups = [labelled & (entity == none), labelled & (entity != none)]
        out["aux_entity"] = torch.stack([each[g].mean() for g in groups if g.any()]).mean()
    return out
