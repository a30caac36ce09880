"""Supervised warm-up on the answer format: teacher answers (:mod:`socioseg.train.teacher`).

A policy that never writes ``<answer>[...]</answer>`` earns zero reward in every rollout, so
GRPO has nothing to compare. A short supervised phase on answers made from the GT (its boxes
for stage 1, its boxes plus interior points for stage 2) fixes that for small or fresh models.
The released checkpoint was trained with RL only; this is a tool for new models.

``socioseg sft`` (:func:`train_sft`) runs it from a flat YAML config (:class:`SftConfig`):
each step draws ``batch_size`` training samples (seeded), makes both stages' teacher examples
and takes one AdamW step on their token-mean NLL. It writes one model folder, loadable as
``--vlm``, that records the VLM frame it was trained in (``socioseg_inference.json``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from socioseg.engine import Prompt
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frames
from socioseg.models.families import PolicyFamily
from socioseg.models.vlm import pad_right
from socioseg.train import aux_labels, model_folder
from socioseg.train.config import AuxSettings, SupervisedConfig
from socioseg.train.optim import SupervisedUpdates
from socioseg.train.teacher import STAGE_KINDS, teacher_examples
from socioseg.types import LEVELS


@dataclass
class SftConfig(SupervisedConfig):
    """``socioseg sft``: the shared fields (:class:`SupervisedConfig`) and the warm-up's own."""

    vlm: str = "mini-models/vlm"  # policy to start from (folder or Hub id)
    levels: str | None = None  # id -> level mapping file (CSV or JSON)
    # VLM frame bounds; None: the model folder's socioseg_inference.json, else socioseg's.
    min_pixels: int | None = None
    max_pixels: int | None = None
    batch_size: int = 4  # samples per step; each gives a stage-1 and a stage-2 example
    # Stage-2 examples re-read boxes as a stage-1 answer would give them: each coordinate
    # moved by up to this fraction of the box's side (0: the GT boxes themselves).
    stage2_box_noise: float = 0.0
    # Stage 2 answers the GT boxes, not the drawn ones: it corrects what stage 1 gave.
    stage2_snap: bool = False
    # Share of stage-2 examples whose drawn boxes are those of another entity of the same
    # images (another question about the place, not overlapping the target): a stage 1 that
    # found the wrong entity, which the answer (the GT boxes) moves away from.
    stage2_decoy_share: float = 0.0
    # The teacher's reasoning quotes the query as the example's prompt does, so that it
    # repeats the prompt's tokens (teacher.teacher_think); off: "The map labels <query>; ...".
    think_quoted: bool = False
    # A name question's teacher reasoning says its target's socio-class in place of the name.
    think_class_for_names: bool = False
    # Share of samples that also give a single-stage example (boxes and points in one answer,
    # the paper's "w/o reflection" prompt), so that one policy answers all three prompts.
    single_stage_share: float = 0.0
    # Which teacher examples each sample gives: "stage1" (its boxes) and "stage2" (boxes and
    # points, reading the drawn stage-1 answer); single_stage_share adds the third.
    stages: list[Literal["stage1", "stage2"]] = dataclasses.field(
        default_factory=lambda: ["stage1", "stage2"]
    )
    # Share of each step's samples per query level (socio-name, socio-class, socio-function);
    # None: samples drawn uniformly. kind_word_names: name queries only where the name holds
    # a word of the target's socio-class ("Jinan No. 2 Middle School": "School").
    level_shares: dict[str, float] | None = None
    kind_word_names: bool = False
    # Dense labels on the image tokens (training only): see AuxSettings.
    aux: AuxSettings = dataclasses.field(default_factory=AuxSettings)

    def _checks(self) -> list[tuple[bool, str]]:
        low, high = self.min_pixels, self.max_pixels
        return [
            *super()._checks(),
            (0 <= self.stage2_box_noise < 1, "stage2_box_noise must be in [0, 1)"),
            (0 <= self.stage2_decoy_share <= 1, "stage2_decoy_share must be in [0, 1]"),
            (0 <= self.single_stage_share <= 1, "single_stage_share must be in [0, 1]"),
            (low is None or low >= 1, "min_pixels must be >= 1 or null"),
            (high is None or high >= (low or 1), "max_pixels must be >= min_pixels or null"),
            (
                len(self.stages) == len(set(self.stages)) >= 1,
                f"stages must list stage1 and/or stage2 once each, got {self.stages}",
            ),
            (
                self.level_shares is None
                or (
                    set(self.level_shares) <= set(LEVELS)
                    and all(v >= 0 for v in self.level_shares.values())
                    and sum(self.level_shares.values()) > 0
                ),
                f"level_shares: shares >= 0 (not all 0) of the levels {', '.join(LEVELS)};"
                f" got {self.level_shares}",
            ),
        ]


@dataclass
class TeacherBatch:
    """Prompts with their teacher answers, ready for one forward (:meth:`of`).

    ``inputs``: the processor's encoding of the prompts; ``ids`` / ``mask``: each answer's
    tokens followed by ``<|im_end|>``, right-padded; ``answers``: the text of each answer as the
    model writes it (without what the chat template's generation prompt already opened,
    ``VLMProcessor.generated_part``: Qwen3.5's ``<think>``); ``image_token_id``: the placeholder
    of the images' merged tokens in ``inputs["input_ids"]``.
    """

    inputs: dict
    ids: torch.Tensor
    mask: torch.Tensor
    answers: list[str]
    image_token_id: int

    @classmethod
    def of(cls, policy, examples: list[tuple[Prompt, str]]) -> TeacherBatch:
        tokenizer = policy.processor.tokenizer
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        inputs = policy.encode([p.text for p, _ in examples], [list(p.images) for p, _ in examples])
        answers = [policy.processor.generated_part(answer) for _, answer in examples]
        ids, mask = pad_right(
            [[*tokenizer(answer).input_ids, end] for answer in answers], tokenizer.pad_token_id
        )
        return cls(inputs, ids, mask, answers, policy.model.config.image_token_id)

    def image_tokens(self, row: int) -> torch.Tensor:
        """Where row ``row``'s image tokens sit in its sequence (the map's, then the satellite
        image's)."""
        return torch.nonzero(self.inputs["input_ids"][row].cpu() == self.image_token_id)[:, 0]

    def predicted_at(self, answer_indices: Sequence[int]) -> torch.Tensor:
        """The sequence positions (prompt, then answer) whose output predicts the answer tokens
        at ``answer_indices``: each one position before the token itself."""
        length = self.inputs["input_ids"].shape[1]
        return torch.tensor(list(answer_indices), dtype=torch.long) + length - 1


def supervised_loss(policy, examples: list[tuple[Prompt, str]]) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answers (each followed by ``<|im_end|>``)."""
    logp, mask = _answer_logprobs(policy, examples)
    return -(logp * mask).sum() / mask.sum()


def sample_aux_labels(
    sample, frames: Frames, family: PolicyFamily, tokenizer, others: Sequence = ()
) -> aux_labels.TokenLabels:
    """Position, entity, name and look labels (:mod:`socioseg.train.aux_labels`) of the image
    tokens of each of ``sample``'s teacher examples (all show the two images in the VLM
    frame). ``others``: the other samples about the same images, whose entities get entity
    and name labels too. An entity's name is known where a name question asks for it."""
    width, height = frames.vlm_size
    tokens = aux_labels.LabelTokens.of(tokenizer)

    def name(s) -> int:
        return tokens.of_name(tokenizer, s.query if s.level == "socio-name" else None)

    labels = aux_labels.example_labels(
        np.asarray(sample.mask, dtype=bool),
        tokens.of_class(tokenizer, sample.socio_class),
        frames,
        (height // family.factor, width // family.factor),
        tokens,
        family.answer_frame,
        [
            (np.asarray(o.mask, bool), tokens.of_class(tokenizer, o.socio_class), name(o))
            for o in others
        ],
        name(sample),
    )
    return dataclasses.replace(labels, query=sample.query)


def same_place(dataset) -> dict[int, list[int]]:
    """For each sample of ``dataset``, the other samples that show the same map and satellite
    image (questions about one place): those whose images are stored with the same bytes
    (``SocioSegDataset.place``; read, never decoded)."""
    groups: dict[bytes, list[int]] = {}
    for index in range(len(dataset)):
        groups.setdefault(dataset.place(index), []).append(index)
    return {i: [j for j in group if j != i] for group in groups.values() for i in group}


def supervised_losses(
    policy,
    examples: list[tuple[Prompt, str]],
    labels: list[aux_labels.TokenLabels],
    aux: AuxSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one step and its parts: answer NLL (:func:`supervised_loss`, the same value),
    plus ``aux.position`` x the position cross-entropy and ``aux.entity`` x the entity one at
    the image tokens (read after decoder layers ``aux.layer`` and ``aux.entity_layer``;
    ``aux.entity_balance``: on-entity and "none" tokens weigh half each), plus
    ``aux.attention`` x the answer's attention label (``aux.attention_edges``: each number
    looks at the target's line nearest it), plus ``aux.attention_first`` x the same label at
    the first coordinate digit alone, plus ``aux.query`` x the cross-entropy of the asked-for
    class read at the position that writes that digit (after ``aux.query_layer``), plus
    ``aux.copy`` x the copy label (the reasoning's query looks at the prompt's, head 1), plus
    ``aux.name`` x the name cross-entropy at the image tokens (after ``aux.name_layer``).
    ``labels``: each example's image-token labels. Without ``aux`` weights only the answer
    NLL runs."""
    if not aux.active:
        loss = supervised_loss(policy, examples)
        return loss, {"nll": float(loss.detach())}
    tokenizer = policy.processor.tokenizer
    batch = TeacherBatch.of(policy, examples)
    layers = policy.model.get_decoder().config.num_hidden_layers
    attention_layer = (aux.attention_layer or layers) if aux.looks else None
    entity_layer = aux.layer if aux.entity_layer is None else aux.entity_layer
    found = [aux_labels.coordinate_positions(tokenizer, answer) for answer in batch.answers]
    asked = [  # (row, answer index of the first digit, class token) of the query label
        (row, digits[0][0], label.target)
        for row, (digits, label) in enumerate(zip(found, labels, strict=True))
        if digits and label.target != aux_labels.IGNORE
    ]
    read_at = None
    if aux.query > 0 and asked:
        rows, firsts, _ = zip(*asked, strict=True)
        read_at = torch.stack([torch.tensor(rows), batch.predicted_at(firsts)], dim=1)
    logp, image_logits, weights, read_logits = policy.logprobs_and_image_logits(
        batch.inputs,
        batch.ids,
        batch.mask,
        (aux.layer, entity_layer, *([aux.name_layer] if aux.name > 0 else [])),
        attention_layer,
        read_at,
        entity_layer if aux.query_layer is None else aux.query_layer,
    )
    mask = batch.mask.to(logp.device, logp.dtype)
    nll = -(logp * mask).sum() / mask.sum()
    position = torch.from_numpy(np.concatenate([label.position for label in labels]))
    entity = torch.from_numpy(np.concatenate([label.entity for label in labels]))
    if len(position) != image_logits[0].shape[0]:
        raise ValueError(
            f"{len(position)} image-token labels for {image_logits[0].shape[0]} image tokens"
        )
    none = aux_labels.LabelTokens.of(tokenizer).none if aux.entity_balance else None
    parts = aux_labels.aux_losses(*image_logits[:2], position, entity, none)
    loss = nll + aux.position * parts["aux_position"] + aux.entity * parts["aux_entity"]
    if aux.name > 0:
        names = [
            np.full(len(label.position), aux_labels.IGNORE) if label.name is None else label.name
            for label in labels
        ]
        name = torch.from_numpy(np.concatenate(names)).to(image_logits[2].device)
        parts["aux_name"] = (
            torch.nn.functional.cross_entropy(image_logits[2], name, ignore_index=aux_labels.IGNORE)
            if (name != aux_labels.IGNORE).any()
            else nll * 0.0
        )
        loss = loss + aux.name * parts["aux_name"]
    if aux.query > 0:
        classes = torch.tensor([token for _, _, token in asked], dtype=torch.long)
        parts["aux_query"] = (
            torch.nn.functional.cross_entropy(read_logits, classes.to(read_logits.device))
            if asked
            else nll * 0.0
        )
        loss = loss + aux.query * parts["aux_query"]
    if weights is not None:
        looks = _attention_labels(batch, found, labels, weights.shape[-1], aux.attention_edges)
        if aux.attention > 0:
            parts["aux_attention"] = aux_labels.attention_loss(weights, looks)
            loss = loss + aux.attention * parts["aux_attention"]
        if aux.attention_first > 0:
            firsts = [(positions[:1], where[:1]) for positions, where in looks]
            parts["aux_attention_first"] = aux_labels.attention_loss(weights, firsts)
            loss = loss + aux.attention_first * parts["aux_attention_first"]
        if aux.copy > 0:
            copies = _copy_labels(batch, examples, labels, tokenizer, weights.shape[-1])
            parts["aux_copy"] = aux_labels.attention_loss(weights, copies, head=1)
            loss = loss + aux.copy * parts["aux_copy"]
    return loss, {"nll": float(nll.detach())} | {k: float(v.detach()) for k, v in parts.items()}


def _attention_labels(
    batch: TeacherBatch,
    found: list[list[tuple[int, int, int]]],
    labels: list[aux_labels.TokenLabels],
    length: int,
    edges: bool,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example, the positions that write its coordinate digits (``found``) and what each
    looks at over the ``length`` positions of the sequence (:func:`aux_labels.digit_looks` at
    the example's image tokens), as :func:`aux_labels.attention_loss` takes them."""
    out = []
    for row, (digits, label) in enumerate(zip(found, labels, strict=True)):
        looks = torch.zeros(len(digits), length, dtype=torch.bool)
        looks[:, batch.image_tokens(row)] = torch.from_numpy(
            aux_labels.digit_looks(label.look, label.grid, digits, label.scale, edges)
        )
        out.append((batch.predicted_at([i for i, _, _ in digits]), looks))
    return out


def _copy_labels(
    batch: TeacherBatch,
    examples: list[tuple[Prompt, str]],
    labels: list[aux_labels.TokenLabels],
    tokenizer,
    length: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example, the positions that write the query in its reasoning and the prompt tokens
    each looks at (:func:`aux_labels.copy_looks`), as :func:`aux_labels.attention_loss`
    takes them."""
    out = []
    for row, ((prompt, _), answer, label) in enumerate(
        zip(examples, batch.answers, labels, strict=True)
    ):
        ids = batch.inputs["input_ids"][row].tolist()
        indices, looks = aux_labels.copy_looks(tokenizer, ids, prompt.text, answer, label.query)
        where = torch.zeros(len(indices), length, dtype=torch.bool)
        where[:, : len(ids)] = torch.from_numpy(looks)
        out.append((batch.predicted_at(indices), where))
    return out


def answer_nll(policy, examples: list[tuple[Prompt, str]], chunk: int = 16) -> float:
    """:func:`supervised_loss` over all of ``examples`` without gradients, ``chunk`` at a time
    (the token mean over every answer, not a mean of chunk means)."""
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(examples), chunk):
            logp, mask = _answer_logprobs(policy, examples[start : start + chunk])
            total -= float((logp * mask).sum())
            tokens += float(mask.sum())
    return total / tokens


def _answer_logprobs(policy, examples: list[tuple[Prompt, str]]):
    """Per-token log-probabilities of each answer (as :class:`TeacherBatch` tokenizes it) and
    ``<|im_end|>`` after it, with their mask."""
    batch = TeacherBatch.of(policy, examples)
    logp = policy.response_logprobs(batch.inputs, batch.ids, batch.mask)
    return logp, batch.mask.to(logp.device, logp.dtype)


def has_kind_word(query: str, socio_class: str | None) -> bool:
    """Whether a name ``query`` holds a word of its target's ``socio_class`` (any case)."""
    words = set(query.lower().split())
    return socio_class is not None and any(w in words for w in socio_class.lower().split())


class SampleDraws:
    """Which samples a warm-up step trains on (:class:`SftConfig`'s ``level_shares`` and
    ``kind_word_names``): uniform over the dataset when neither is set; else a level drawn by
    its share, then a sample of that level (name queries without a kind word left out)."""

    def __init__(self, dataset, config: SftConfig) -> None:
        self.size = len(dataset)
        self.pools: dict[str, np.ndarray] | None = None
        if config.level_shares is None and not config.kind_word_names:
            return
        pools: dict[str, list[int]] = {}
        for index in range(len(dataset)):
            level, socio_class = dataset.level(index)
            named = config.kind_word_names and level == "socio-name"
            if named and not has_kind_word(dataset.query(index), socio_class):
                continue
            pools.setdefault(level, []).append(index)
        shares = config.level_shares or {level: float(len(p)) for level, p in pools.items()}
        missing = [level for level, share in shares.items() if share > 0 and level not in pools]
        if missing:
            raise ValueError(
                f"level_shares: the data has no sample of level {', '.join(missing)}"
                + (" with a kind word in its name" if "socio-name" in missing else "")
                + "; give that level the share 0 or use other data"
            )
        self.levels = [level for level in shares if shares[level] > 0]
        weights = np.array([shares[level] for level in self.levels], dtype=float)
        self.weights = weights / weights.sum()
        self.pools = {level: np.asarray(pools[level]) for level in self.levels}

    def draw(self, rng: np.random.Generator, count: int) -> list[int]:
        if self.pools is None:
            return [int(i) for i in rng.integers(0, self.size, count)]
        out = []
        for _ in range(count):
            pool = self.pools[self.levels[int(rng.choice(len(self.levels), p=self.weights))]]
            out.append(int(pool[int(rng.integers(0, len(pool)))]))
        return out


def step_examples(
    sample,
    config: SftConfig,
    frame: tuple[int, int],
    rng: np.random.Generator,
    family,
    others: Iterable = (),
) -> list[tuple[Prompt, str]]:
    """The teacher examples one sample gives a warm-up step: ``config.stages`` of
    :func:`teacher_examples`, plus the single-stage one on a ``single_stage_share`` of draws;
    on a ``stage2_decoy_share`` of draws stage 2 reads the boxes of one of ``others`` (other
    samples about the same images) whose entity does not overlap the target's, where there is
    one (else its own). ``others`` is read only on those draws."""
    single = bool(rng.random() < config.single_stage_share)
    decoy = None
    if config.stage2_decoy_share > 0 and rng.random() < config.stage2_decoy_share:
        target = np.asarray(sample.mask, dtype=bool)
        apart = [m for m in (np.asarray(o.mask, dtype=bool) for o in others) if m.any()]
        apart = [m for m in apart if not (m & target).any()]
        if apart:
            decoy = apart[int(rng.integers(0, len(apart)))]
    own = teacher_examples(
        sample,
        *frame,
        rng,
        config.stage2_box_noise,
        single,
        family,
        config.stage2_snap,
        decoy,
        config.think_quoted,
        config.think_class_for_names,
    )
    kept = [*config.stages, "single"]
    return [example for kind, example in zip(STAGE_KINDS, own, strict=False) if kind in kept]


def train_sft(
    config: SftConfig,
    out: str | Path,
    overwrite: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    resume: bool = False,
) -> Path:
    """Run the warm-up as the module docstring says; write the policy to ``out`` (float32).
    ``resume``: continue the interrupted run in ``out`` (:class:`model_folder.SupervisedRun`)."""
    from socioseg.data.dataset import load_socioseg
    from socioseg.models.vlm import VisionLanguageModel

    run = model_folder.SupervisedRun(out, config, overwrite, resume)
    policy = VisionLanguageModel.from_pretrained(
        config.vlm, config.device, "float32", config.min_pixels, config.max_pixels
    )
    own = policy.processor.defaults
    low = config.min_pixels or own.min_pixels or DEFAULT_MIN_PIXELS
    high = config.max_pixels or own.max_pixels or DEFAULT_MAX_PIXELS
    policy.processor.defaults = dataclasses.replace(own, min_pixels=low, max_pixels=high)
    dataset = load_socioseg(config.data, config.split, levels=config.levels)
    if len(dataset) == 0:
        raise ValueError(f"{config.data} [{config.split}] has no samples")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    updates = SupervisedUpdates((p for p in policy.model.parameters() if p.requires_grad), config)
    policy.model.train()
    draws = SampleDraws(dataset, config)
    wanted = config.aux.entity_others or config.stage2_decoy_share > 0
    places = same_place(dataset) if wanted else {}
    done, elapsed = run.restore(policy.model, updates, rng)
    started, stats = time.perf_counter() - elapsed, {}
    tokenizer = policy.processor.tokenizer
    for step in range(done + 1, config.steps + 1):
        examples, labels = [], []
        for index in draws.draw(rng, config.batch_size):
            sample = dataset[index]
            near = places.get(index, [])
            # A list where the entity labels need every one; else loaded only for a decoy.
            others = (dataset[j] for j in near)
            if config.aux.entity_others:
                others = list(others)
            own = step_examples(sample, config, (low, high), rng, policy.family, others)
            examples += own
            if config.aux.active:
                frames = Frames.for_image(sample.sat.size, low, high, policy.family.factor)
                others = others if config.aux.entity_others else []
                label = sample_aux_labels(sample, frames, policy.family, tokenizer, others)
                labels += [label] * len(own)
        loss, stats = supervised_losses(policy, examples, labels, config.aux)
        updates.step(loss)
        stats["elapsed_s"] = time.perf_counter() - started
        if step % config.log_every == 0 or step == config.steps:
            run.log.log(step, stats, csv_only=("elapsed_s",))
            if on_log is not None:
                on_log(step, stats)
        run.save(step, stats["elapsed_s"], policy.model, updates, rng)
    policy.model.eval().save_pretrained(run.tmp)
    policy.processor.save_pretrained(run.tmp)
    record = {"command": "sft", "config": dataclasses.asdict(config), "last": stats}
    return run.publish(record)
