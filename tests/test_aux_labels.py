"""Dense labels on the image tokens (``aux:`` of ``socioseg sft``): what they are, what they do."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from socioseg.data.synth import generate_sample, write_dataset
from socioseg.geometry import Frames
from socioseg.train.aux_labels import (
    IGNORE,
    LabelTokens,
    attention_loss,
    aux_losses,
    coordinate_positions,
    example_labels,
    position_digit,
    token_coverage,
)
from socioseg.train.config import AuxSettings, ConfigError
from socioseg.train.sft import (
    SftConfig,
    sample_aux_labels,
    supervised_loss,
    supervised_losses,
    train_sft,
)
from socioseg.train.teacher import teacher_examples


def _hand_made_mask(scale: int) -> np.ndarray:
    """A 2 x 3-token image (56 x 84 px in the VLM frame, ``scale`` x that in the image frame).

    Token (row, column) -> share of its 28 x 28 px covered:
    (0,0) all, (0,1) 17/28 columns, (0,2) exactly half, (1,0) 11/28 rows, (1,1) none, (1,2) all.
    """
    mask = np.zeros((56, 84), bool)
    mask[0:28, 0:28] = True
    mask[0:28, 28 : 28 + 17] = True
    mask[0:14, 56:84] = True
    mask[28 : 28 + 11, 0:28] = True
    mask[28:56, 56:84] = True
    return mask.repeat(scale, 0).repeat(scale, 1)


def _reference_forward(model, inputs, ids, mask=None, eager: bool = False, **outputs):
    """transformers' own forward of encoded prompts followed by answer ``ids`` (with their
    ``mask`` when padded), the whole model on eager attention when ``eager``: the independent
    reference for what socioseg reads inside one forward."""
    before = model.config._attn_implementation
    if eager:
        model.set_attn_implementation("eager")
    try:
        return model.model(
            input_ids=torch.cat([inputs["input_ids"], ids], 1),
            attention_mask=None if mask is None else torch.cat([inputs["attention_mask"], mask], 1),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(ids, dtype=torch.int32)], 1
            ),
            **outputs,
        )
    finally:
        model.set_attn_implementation(before)


@pytest.mark.parametrize("scale", [1, 2])
def test_labels_of_a_hand_made_2x3_token_image(scale):
    from socioseg.models.builders import build_mini_tokenizer

    tokenizer = build_mini_tokenizer()
    tokens = LabelTokens.of(tokenizer)
    digit = {d: tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    frames = Frames((84 * scale, 56 * scale), (84, 56))
    mask = _hand_made_mask(scale)
    coverage = token_coverage(mask, frames, (2, 3))
    assert np.allclose(coverage, [[1, 17 / 28, 0.5], [11 / 28, 0, 1]])
    school = tokenizer("School").input_ids[0]
    none = tokenizer("none").input_ids[0]
    labels = example_labels(mask, school, frames, (2, 3), tokens)
    position, entity, look = labels.position, labels.entity, labels.look
    assert labels.scale == (3 / 84, 2 / 56)  # token lines per VLM pixel on x and y
    # map: each token's column, row-major; satellite: each token's row
    columns = [digit[c] for c in (0, 1, 2, 0, 1, 2)]
    rows = [digit[r] for r in (0, 0, 0, 1, 1, 1)]
    assert position.tolist() == columns + rows
    # more than half covered: the class; half or less: "none"; the same on both images
    one_image = [school, school, none, none, none, school]
    assert entity.tolist() == one_image + one_image
    # the answer's attention label: every token the mask touches at all
    assert look.tolist() == [True, True, True, True, False, True] * 2
    # a target of no known class: its tokens are left out, the others are still "none"
    unknown = example_labels(mask, IGNORE, frames, (2, 3), tokens).entity
    assert unknown.tolist() == [IGNORE, IGNORE, none, none, none, IGNORE] * 2


def test_a_side_longer_than_ten_tokens_gives_each_index_its_tenth():
    assert position_digit(np.arange(10), 10).tolist() == list(range(10))
    assert position_digit(np.array([0, 1, 2, 9, 10, 19]), 20).tolist() == [0, 0, 1, 4, 5, 9]


def _teacher_batch(policy, sample):
    """A sample's teacher examples (both stages, the tests' small frame) and their labels."""
    examples = teacher_examples(sample, 3136, 12544)
    frames = Frames.for_image(sample.sat.size, 3136, 12544, policy.family.factor)
    label = sample_aux_labels(sample, frames, policy.family, policy.processor.tokenizer)
    return examples, [label] * len(examples)


def test_the_default_config_computes_todays_loss_and_aux_losses_change_only_the_total(tiny_vlm):
    sample = generate_sample(1, size=128)
    examples, labels = _teacher_batch(tiny_vlm, sample)
    with torch.no_grad():
        today = supervised_loss(tiny_vlm, examples)
        loss, parts = supervised_losses(tiny_vlm, examples, labels, AuxSettings())
        assert torch.equal(loss, today) and parts == {"nll": float(today)}
        both, parts = supervised_losses(tiny_vlm, examples, labels, AuxSettings(0.5, 2.0))
    assert parts["nll"] == pytest.approx(float(today), rel=1e-5)
    expected = parts["nll"] + 0.5 * parts["aux_position"] + 2.0 * parts["aux_entity"]
    assert float(both) == pytest.approx(expected, rel=1e-5)
    assert parts["aux_position"] > 0 and parts["aux_entity"] > 0


def test_the_entity_labels_are_read_at_their_own_layer(tiny_vlm):
    """``aux.entity_layer``: the entity labels read after that layer, the position labels
    after ``aux.layer``; each value is the one both labels get when read at its layer."""
    examples, labels = _teacher_batch(tiny_vlm, generate_sample(1, size=128))
    examples, labels = examples[:1], labels[:1]  # the stage-1 example
    with torch.no_grad():
        _, split = supervised_losses(tiny_vlm, examples, labels, AuxSettings(1, 1, 1, 2))
        _, first = supervised_losses(tiny_vlm, examples, labels, AuxSettings(1, 1, 1))
        _, last = supervised_losses(tiny_vlm, examples, labels, AuxSettings(1, 1, 2))
    assert split["aux_position"] == first["aux_position"] != last["aux_position"]
    assert split["aux_entity"] == last["aux_entity"] != first["aux_entity"]
    with pytest.raises(ConfigError, match="entity_layer must be >= 1"):
        AuxSettings(entity=1.0, entity_layer=0)


def _sft(tmp_path, vlm, name: str, aux: AuxSettings):
    config = SftConfig(
        vlm=str(vlm),
        data=str(tmp_path / "data"),
        steps=2,
        batch_size=1,
        min_pixels=3136,
        max_pixels=12544,
        log_every=1,
        aux=aux,
    )
    return train_sft(config, tmp_path / name)


def test_a_run_with_aux_weights_logs_them_and_trains_the_lm_head_and_vision_tower(
    tiny_models, tmp_path
):
    write_dataset(tmp_path / "data", n=4, seed=0, size=128)
    plain = _sft(tmp_path, tiny_models[0], "plain", AuxSettings())
    aux = _sft(tmp_path, tiny_models[0], "aux", AuxSettings(position=1.0, entity=1.0))
    assert (plain / "metrics.csv").read_text().splitlines()[0] == "step,nll,elapsed_s"
    rows = (aux / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,nll,aux_position,aux_entity,elapsed_s"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    before, after = load_file(plain / "model.safetensors"), load_file(aux / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    head = [n for n in changed if "lm_head" in n or "embed_tokens" in n]
    vision = [n for n in changed if "visual" in n]
    assert head and vision  # same seed and data: only the aux losses differ


def test_labels_read_after_an_earlier_layer_are_that_layers_hidden_states(tiny_vlm):
    """``aux.layer``: the image logits are the LM head on the (normed) hidden states after that
    layer, as transformers' own ``output_hidden_states`` gives them; the answer is unchanged,
    and the layers above get no gradient from these labels."""
    from socioseg.models.vlm import pad_right

    sample = generate_sample(1, size=128)
    prompt, answer = teacher_examples(sample, 3136, 12544)[0]
    tokenizer = tiny_vlm.processor.tokenizer
    inputs = tiny_vlm.encode([prompt.text], [list(prompt.images)])
    ids, mask = pad_right([tokenizer(answer).input_ids], tokenizer.pad_token_id)
    model = tiny_vlm.model
    layers = model.config.text_config.num_hidden_layers
    assert layers == 2
    with torch.no_grad():
        last_logp, (last,), *_ = tiny_vlm.logprobs_and_image_logits(inputs, ids, mask)
        _, (same,), *_ = tiny_vlm.logprobs_and_image_logits(inputs, ids, mask, (layers,))
        first_logp, (first, both), *_ = tiny_vlm.logprobs_and_image_logits(
            inputs, ids, mask, (1, None)
        )
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states
    assert torch.equal(same, last) and torch.equal(first_logp, last_logp)
    assert torch.equal(both, last)
    with pytest.raises(ConfigError, match="layer must be >= 1"):
        AuxSettings(position=1.0, layer=0)
    is_image = inputs["input_ids"] == model.config.image_token_id
    decoder = model.model.language_model
    expected = model.lm_head(decoder.norm(hidden[1])[is_image]).float()
    assert torch.allclose(first, expected, atol=1e-5)
    assert not torch.allclose(first, last, atol=1e-3)
    with pytest.raises(ValueError, match="decoder layers 1-2"):
        tiny_vlm.logprobs_and_image_logits(inputs, ids, mask, (1, 3))
    model.zero_grad()
    tiny_vlm.logprobs_and_image_logits(inputs, ids, mask, (1,))[1][0].logsumexp(-1).sum().backward()
    top = [p.grad for p in decoder.layers[1].parameters()]
    assert all(g is None or not g.any() for g in top)
    assert any(p.grad is not None and p.grad.any() for p in decoder.layers[0].parameters())
    model.zero_grad()


def test_a_balanced_entity_loss_weighs_entity_and_none_tokens_half_each():
    # five tokens over a vocabulary of 4: token 3 is "none", 1 a class; the last is unlabelled
    logits = torch.tensor(
        [[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0], [0.0, 2.0, 0.0, 0.0],
         [5.0, 0.0, 0.0, 0.0]]
    )  # fmt: skip
    entity = torch.tensor([3, 3, 3, 1, IGNORE])
    position = torch.tensor([0, 1, 2, 3, 0])
    logp = torch.log_softmax(logits, -1)
    none_mean = -(logp[0, 3] + logp[1, 3] + logp[2, 3]) / 3
    plain = -(logp[0, 3] + logp[1, 3] + logp[2, 3] + logp[3, 1]) / 4
    balanced = (none_mean - logp[3, 1]) / 2
    assert torch.isclose(aux_losses(logits, logits, position, entity)["aux_entity"], plain)
    got = aux_losses(logits, logits, position, entity, none=3)["aux_entity"]
    assert torch.isclose(got, balanced)
    # a batch with no entity token is the mean over the "none" ones
    only_none = aux_losses(logits[:3], logits[:3], position[:3], entity[:3], none=3)
    assert torch.isclose(only_none["aux_entity"], none_mean)


def test_the_attention_label_is_minus_the_log_mass_on_the_target_at_coordinate_digits():
    from socioseg.models.builders import build_mini_tokenizer

    tokenizer = build_mini_tokenizer()
    answer = '<think>Bay 2 School</think><answer>[{"bbox_2d": [7, 45, 9, 10]}]</answer>'
    ids = tokenizer(answer).input_ids
    found = coordinate_positions(tokenizer, answer)
    # neither the digit in the place name nor bbox_2d's is a coordinate; 7 4 5 9 1 0 are,
    # of the numbers x 7, y 45, x 9, y 10
    assert "".join(tokenizer.decode([ids[i]]) for i, _, _ in found) == "745910"
    assert [axis for _, axis, _ in found] == [0, 1, 1, 0, 1, 1]
    assert [value for _, _, value in found] == [7, 45, 45, 9, 10, 10]
    assert coordinate_positions(tokenizer, "no answer 3") == []
    weights = torch.zeros(2, 2, 4, 4)
    weights[0, 0, 2] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    weights[0, 0, 3] = torch.tensor([0.5, 0.25, 0.25, 0.0])
    weights[0, 1] = 1.0  # another head: not read
    looks = torch.zeros(3, 4, dtype=torch.bool)
    looks[0, 1:3] = True  # the digit at position 2 looks at positions 1, 2
    looks[1, 0] = True  # the one at 3 at position 0
    queries = [  # position 1 has nothing to look at: left out
        (torch.tensor([2, 3, 1]), looks),
        (torch.tensor([], dtype=torch.long), torch.zeros(0, 4, dtype=torch.bool)),
    ]
    expected = -(np.log(0.2 + 0.3) + np.log(0.5)) / 2
    assert float(attention_loss(weights, queries)) == pytest.approx(expected, rel=1e-5)


def test_the_attention_label_reads_the_layer_transformers_returns(tiny_vlm):
    from socioseg.models.vlm import pad_right

    sample = generate_sample(1, size=128)
    examples = teacher_examples(sample, 3136, 12544)[:1]
    prompt, answer = examples[0]
    tokenizer = tiny_vlm.processor.tokenizer
    frames = Frames.for_image(sample.sat.size, 3136, 12544, tiny_vlm.family.factor)
    labels = [sample_aux_labels(sample, frames, tiny_vlm.family, tokenizer)]
    aux = AuxSettings(attention=2.0, attention_layer=1)
    model = tiny_vlm.model
    before = model.config._attn_implementation
    with torch.no_grad():
        loss, parts = supervised_losses(tiny_vlm, examples, labels, aux)
        assert model.config._attn_implementation == before
        edges = AuxSettings(attention=2.0, attention_layer=1, attention_edges=True)
        _, edge_parts = supervised_losses(tiny_vlm, examples, labels, edges)
    # each number looks at part of the target's tokens: less mass, a higher loss
    assert edge_parts["aux_attention"] > parts["aux_attention"]
    with torch.no_grad():
        inputs = tiny_vlm.encode([prompt.text], [list(prompt.images)])
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids, _ = pad_right([[*tokenizer(answer).input_ids, end]], tokenizer.pad_token_id)
        out = _reference_forward(model, inputs, ids, eager=True, output_attentions=True)
    first = out.attentions[0][0, 0]  # layer 1, head 0
    image = torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id)[:, 0]
    half = len(image) // 2  # the map's tokens, then the satellite image's
    on_target = torch.from_numpy(labels[0].look)
    looks = (image[:half][on_target[:half]], image[half:][on_target[half:]])
    length = inputs["input_ids"].shape[1]
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    start = len(tokenizer(answer.split("<answer>")[0]).input_ids)
    pieces = [tokenizer.decode([t]) for t in ids[0].tolist()]
    masses, number = [], -1
    for j, t in enumerate(ids[0].tolist()):
        if j < start or t not in digits or pieces[j - 1][-1].isalpha() or pieces[j - 1][-1] == "_":
            continue
        if not pieces[j - 1][-1].isdigit():
            number += 1  # a new number: x, y, x, y, ...
        masses.append(first[length - 1 + j, looks[number % 2]].sum())
    assert number >= 3  # at least one box's four numbers
    mass = torch.stack(masses)
    assert parts["aux_attention"] == pytest.approx(float(-torch.log(mass + 1e-6).mean()), rel=1e-4)
    total = parts["nll"] + 2.0 * parts["aux_attention"]
    assert float(loss) == pytest.approx(total, rel=1e-5)
    # attention_first: the first coordinate digit's term alone, added with its own weight
    both = AuxSettings(attention=2.0, attention_layer=1, attention_first=3.0)
    with torch.no_grad():
        loss, parts = supervised_losses(tiny_vlm, examples, labels, both)
    assert parts["aux_attention_first"] == pytest.approx(
        float(-torch.log(mass[0] + 1e-6)), rel=1e-4
    )
    total = parts["nll"] + 2.0 * parts["aux_attention"] + 3.0 * parts["aux_attention_first"]
    assert float(loss) == pytest.approx(total, rel=1e-5)
    with torch.no_grad():
        _, alone = supervised_losses(
            tiny_vlm, examples, labels, AuxSettings(attention_first=1.0, attention_layer=1)
        )
    assert "aux_attention" not in alone
    assert alone["aux_attention_first"] == pytest.approx(parts["aux_attention_first"], rel=1e-5)


def test_the_query_label_names_the_asked_class_where_the_first_digit_is_written(tiny_vlm):
    """``aux.query``: after ``query_layer`` (transformers' own ``output_hidden_states``, normed),
    the LM head at the position that writes each answer's first coordinate digit is scored
    against the asked-for entity's class token; a batch of two answers of different lengths."""
    samples = [generate_sample(1, size=128), generate_sample(3, size=128)]
    examples = [teacher_examples(sample, 3136, 12544)[0] for sample in samples]
    tokenizer = tiny_vlm.processor.tokenizer
    labels = []
    for sample in samples:
        frames = Frames.for_image(sample.sat.size, 3136, 12544, tiny_vlm.family.factor)
        labels.append(sample_aux_labels(sample, frames, tiny_vlm.family, tokenizer))
    aux = AuxSettings(query=2.0, query_layer=1)
    model = tiny_vlm.model
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    expected = []
    with torch.no_grad():
        loss, parts = supervised_losses(tiny_vlm, examples, labels, aux)
        for sample, (prompt, answer) in zip(samples, examples, strict=True):
            inputs = tiny_vlm.encode([prompt.text], [list(prompt.images)])
            ids = tokenizer(answer).input_ids
            start = len(tokenizer(answer.split("<answer>")[0]).input_ids)
            pieces = [tokenizer.decode([t]) for t in ids]
            first = next(
                j
                for j in range(start, len(ids))
                if ids[j] in digits and not pieces[j - 1][-1].isalnum() and pieces[j - 1] != "_"
            )
            out = _reference_forward(model, inputs, torch.tensor([ids]), output_hidden_states=True)
            hidden = out.hidden_states[1]
            at = hidden[0, inputs["input_ids"].shape[1] - 1 + first]
            logits = model.lm_head(model.model.language_model.norm(at)).float()
            target = tokenizer(sample.socio_class).input_ids[0]
            expected.append(float(torch.logsumexp(logits, -1) - logits[target]))
    assert samples[0].socio_class != samples[1].socio_class
    assert parts["aux_query"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert float(loss) == pytest.approx(parts["nll"] + 2.0 * parts["aux_query"], rel=1e-5)
    with pytest.raises(ConfigError, match="query_layer must be >= 1"):
        AuxSettings(query=1.0, query_layer=0)


def test_only_the_read_layer_runs_eager_and_its_weights_are_transformers_own(tiny_vlm):
    """A padded batch of two: the attention weights of the read layer equal what transformers
    returns with the whole model eager (``output_attentions``), the answers' log-probs equal
    those of a forward that reads no weights, and the other layers keep their implementation."""
    from socioseg.models.vlm import pad_right

    samples = [generate_sample(1, size=128), generate_sample(3, size=128)]
    examples = [teacher_examples(sample, 3136, 12544)[0] for sample in samples]
    tokenizer = tiny_vlm.processor.tokenizer
    inputs = tiny_vlm.encode([p.text for p, _ in examples], [list(p.images) for p, _ in examples])
    ids, mask = pad_right([tokenizer(a).input_ids for _, a in examples], tokenizer.pad_token_id)
    assert not mask.all()  # one answer is padded
    model = tiny_vlm.model
    before = model.config._attn_implementation
    assert before != "eager"
    seen = []
    hooks = [
        layer.self_attn.register_forward_pre_hook(
            lambda module, _a: seen.append(module.config._attn_implementation)
        )
        for layer in model.get_decoder().layers
    ]
    try:
        with torch.no_grad():
            read = tiny_vlm.logprobs_and_image_logits(inputs, ids, mask, attention_layer=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [before, "eager"] and model.config._attn_implementation == before
    with torch.no_grad():
        plain = tiny_vlm.logprobs_and_image_logits(inputs, ids, mask)
        out = _reference_forward(model, inputs, ids, mask, eager=True, output_attentions=True)
    real = torch.cat([inputs["attention_mask"], mask], 1).bool()
    for row in range(2):  # the rows of real tokens (a padded query's row is never read)
        expected = out.attentions[1][row][:, real[row]]
        assert torch.allclose(read.attention[row][:, real[row]], expected, atol=1e-5)
    kept = mask.bool()
    assert torch.allclose(read.logp[kept], plain.logp[kept], atol=1e-5)


def test_every_mask_form_becomes_eager_attentions_additive_mask():
    """The read layer adds the mask eager attention expects, whatever form the model's own
    implementation built: SDPA's causal skip (None) and 4D boolean mask, flash attention's 2D
    padding mask (a GPU path), eager's own; by hand for a 2 x 3 batch, row 0 padded last."""
    from socioseg.models import vlm

    hidden = torch.zeros(2, 3, 4)
    low = torch.finfo(torch.float32).min
    causal = torch.tensor([[0, low, low], [0, 0, low], [0, 0, 0]])
    padded = causal.clone()
    padded[:, 2] = low  # row 0's last token is padding: no query looks at it

    def added(mask):
        return vlm._additive_mask(None, (), {"hidden_states": hidden, "attention_mask": mask})[1][
            "attention_mask"
        ]

    assert torch.equal(added(None), causal[None, None])
    two_d = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.equal(added(two_d), torch.stack([padded, causal])[:, None])
    four_d = torch.stack([padded, causal])[:, None] == 0
    assert torch.equal(added(four_d), torch.stack([padded, causal])[:, None])
    assert torch.equal(added(torch.stack([padded, causal])[:, None]), added(four_d))
    with pytest.raises(ValueError, match="SDPA, eager or flash"):
        added(object())


def test_with_edges_each_number_looks_at_the_targets_line_nearest_it():
    """A target on columns 1-3 and rows 0-1 of a 3 x 4 grid (both images), 28 px tokens: a
    box's x1 (30) looks at its left column, x2 (112) at its right one, y1 (0) at its top row,
    y2 (56) at its bottom row; without edges every x looks at all its map tokens."""
    from socioseg.train.aux_labels import digit_looks

    on = np.zeros((3, 4), bool)
    on[0:2, 1:4] = True
    look = np.concatenate([on.reshape(-1), on.reshape(-1)])
    digits = [(5, 0, 30), (6, 1, 0), (7, 0, 112), (8, 1, 56)]
    looks = digit_looks(look, (3, 4), digits, (1 / 28, 1 / 28), edges=True)

    def tokens(image: int, cells) -> list[bool]:
        want = np.zeros((2, 3, 4), bool)
        for r, c in cells:
            want[image, r, c] = True
        return want.reshape(-1).tolist()

    assert looks[0].tolist() == tokens(0, [(0, 1), (1, 1)])  # x1: the map's left column
    assert looks[1].tolist() == tokens(1, [(0, 1), (0, 2), (0, 3)])  # y1: the top row
    assert looks[2].tolist() == tokens(0, [(0, 3), (1, 3)])  # x2 = 112 = 4 x 28: right column
    assert looks[3].tolist() == tokens(1, [(1, 1), (1, 2), (1, 3)])  # y2 = 56: bottom row
    plain = digit_looks(look, (3, 4), digits, (1 / 28, 1 / 28), edges=False)
    assert (
        plain[0].tolist()
        == plain[2].tolist()
        == tokens(0, [(r, c) for r in (0, 1) for c in (1, 2, 3)])
    )
    nothing = digit_looks(np.zeros(24, bool), (3, 4), digits, (1 / 28, 1 / 28), edges=True)
    assert not nothing.any()


def test_other_entities_of_the_place_label_their_own_tokens():
    """The target holds token (0, 0); another entity of class "Park" covers (1, 2) fully and
    (0, 1) by a quarter; one of unknown class covers (1, 0). Only (1, 2) becomes "Park", on
    both images; the target's tokens keep the target's class. Names the same way: the
    target "Qinghe Primary School", the park "Heping Park", the third has none."""
    from socioseg.models.builders import build_mini_tokenizer

    tokenizer = build_mini_tokenizer()
    tokens = LabelTokens.of(tokenizer)
    school, park = (tokenizer(name).input_ids[0] for name in ("School", "Park"))
    qinghe, heping = (tokenizer(name).input_ids[0] for name in (" Qinghe", " Heping"))
    assert tokens.of_name(tokenizer, "Qinghe Primary School") == qinghe
    assert tokens.of_name(tokenizer, "Heping Park") == heping != qinghe
    assert tokens.of_name(tokenizer, None) == tokens.of_name(tokenizer, "  ") == IGNORE
    frames = Frames((84, 56), (84, 56))
    target = np.zeros((56, 84), bool)
    target[0:28, 0:28] = True
    other = np.zeros((56, 84), bool)
    other[28:56, 56:84] = True
    other[0:14, 28:42] = True  # a quarter of token (0, 1)
    unknown = np.zeros((56, 84), bool)
    unknown[28:56, 0:28] = True
    others = [(other, park, heping), (unknown, IGNORE, IGNORE)]
    labels = example_labels(
        target, school, frames, (2, 3), tokens, others=others, name_token=qinghe
    )
    none, no = tokens.none, IGNORE
    assert labels.entity.tolist() == [school, none, none, none, none, park] * 2
    assert labels.name.tolist() == [qinghe, no, no, no, no, heping] * 2
    alone = example_labels(target, school, frames, (2, 3), tokens)
    assert alone.entity.tolist() == [school, none, none, none, none, none] * 2
    assert alone.name.tolist() == [no] * 12  # no name known: no name label
    assert np.array_equal(labels.look, alone.look)  # the attention label stays the target's


def test_the_name_label_is_each_named_entitys_first_word_read_at_its_own_layer(tiny_vlm):
    """``aux.name``: a tile's name questions label their entities' tokens with the first word
    of the name (the mini tokenizer writes each place as one token); the loss is the LM
    head's cross-entropy on them after ``name_layer`` (transformers' own
    ``output_hidden_states``, normed), the unnamed tokens left out."""
    from socioseg.data.synth import generate_tile
    from socioseg.models.builders import build_mini_tokenizer

    tile = generate_tile(7, 0, size=128, queries=3)  # two district governments: names tell
    named = [s for s in tile if s.level == "socio-name"]
    sample, others = named[0], [s for s in tile if s is not named[0]]
    frames = Frames.for_image(sample.sat.size, 3136, 12544, tiny_vlm.family.factor)
    mini = build_mini_tokenizer()
    label = sample_aux_labels(sample, frames, tiny_vlm.family, mini, others)

    def covers(s) -> np.ndarray:  # the tokens an entity covers more than half of
        return token_coverage(np.asarray(s.mask), frames, label.grid).reshape(-1) > 0.5

    assert [(s.query.split()[0], covers(s).any()) for s in named] == [
        ("Taishan", True),
        ("Longhua", True),
    ]
    first = {s.query: mini(" " + s.query.split()[0]).input_ids[0] for s in named}
    assert len(set(first.values())) == 2  # one token per place, not the same one
    for s in named:
        assert (label.name[np.tile(covers(s), 2)] == first[s.query]).all()
    unnamed = ~np.tile(covers(named[0]) | covers(named[1]), 2)
    assert (label.name[unnamed] == IGNORE).all()  # the class question's target has no name

    tokenizer = tiny_vlm.processor.tokenizer  # the loss, on the tiny model's own labels
    label = sample_aux_labels(sample, frames, tiny_vlm.family, tokenizer, others)
    prompt, answer = teacher_examples(sample, 3136, 12544)[0]
    model = tiny_vlm.model
    with torch.no_grad():
        loss, parts = supervised_losses(
            tiny_vlm, [(prompt, answer)], [label], AuxSettings(name=0.5, name_layer=1)
        )
        _, plain = supervised_losses(tiny_vlm, [(prompt, answer)], [label], AuxSettings(1.0))
        inputs = tiny_vlm.encode([prompt.text], [list(prompt.images)])
        ids = torch.tensor([tokenizer(answer).input_ids])
        hidden = _reference_forward(model, inputs, ids, output_hidden_states=True).hidden_states[1]
        is_image = inputs["input_ids"] == model.config.image_token_id
        logits = model.lm_head(model.model.language_model.norm(hidden[:, : is_image.shape[1]]))
        logits = logits[is_image].float()
        kept = torch.from_numpy(label.name) != IGNORE
        names = torch.from_numpy(label.name)[kept]
        expected = (torch.logsumexp(logits[kept], -1) - logits[kept, names]).mean()
    assert kept.any() and "aux_name" not in plain
    assert parts["aux_name"] == pytest.approx(float(expected), rel=1e-4)
    assert float(loss) == pytest.approx(parts["nll"] + 0.5 * parts["aux_name"], rel=1e-5)
    with pytest.raises(ConfigError, match="name_layer must be >= 1"):
        AuxSettings(name=1.0, name_layer=0)


def test_same_place_groups_the_questions_about_one_tile(tmp_path):
    from socioseg.data.dataset import load_socioseg
    from socioseg.data.synth import write_dataset
    from socioseg.train.sft import same_place

    write_dataset(tmp_path / "data", n=6, seed=0, size=128, queries=3)
    dataset = load_socioseg(tmp_path / "data", "train")
    ids = dataset.ids
    places = same_place(dataset)
    tile = [i.rsplit("-", 1)[0] if i.count("-") == 2 else i for i in ids]  # synth-NNNNN[-k]
    for index, others in places.items():
        assert sorted(others) == [
            j for j in range(len(ids)) if j != index and tile[j] == tile[index]
        ]
    assert any(places.values())  # some tiles have several questions


def test_same_place_reads_the_stored_bytes_of_every_layout(tmp_path):
    """The Hub layout (parquet, images as bytes) groups as the folder layout does; a question
    whose satellite image is missing is named, not left out."""
    import shutil

    from socioseg.data.dataset import DataError, load_socioseg
    from socioseg.data.synth import write_dataset
    from socioseg.train.sft import same_place

    write_dataset(tmp_path / "folder", n=6, seed=0, size=128, queries=3)
    write_dataset(tmp_path / "hub", n=6, seed=0, size=128, queries=3, fmt="parquet")
    folder = load_socioseg(tmp_path / "folder", "train")
    hub = load_socioseg(tmp_path / "hub", "train", cache_dir=str(tmp_path / "cache"))
    assert hub.ids == folder.ids and same_place(hub) == same_place(folder)
    assert any(same_place(hub).values())
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "folder", broken)
    (broken / "train" / folder.ids[1] / "sat.png").unlink()
    with pytest.raises(DataError, match=f"{folder.ids[1]}.*sat.png: image is missing"):
        same_place(load_socioseg(broken, "train"))


def test_the_copy_label_points_each_query_token_of_the_reasoning_at_the_same_characters(
    tiny_vlm,
):
    """Each token that writes the query in a teacher answer's reasoning looks at the prompt
    tokens holding the same characters of the query, in every prompt (the quotes differ)."""
    from socioseg.train.aux_labels import copy_looks

    sample = generate_sample(3, size=128)
    query = "Heping Garden Hotel"
    sample = dataclasses.replace(sample, query=query)
    tokenizer = tiny_vlm.processor.tokenizer
    for prompt, answer in teacher_examples(sample, 3136, 12544, single_stage=True):
        ids = tiny_vlm.encode([prompt.text], [list(prompt.images)])["input_ids"][0].tolist()
        indices, looks = copy_looks(tokenizer, ids, prompt.text, answer, query)
        written = tokenizer(answer, return_offsets_mapping=True).offset_mapping
        # by hand: the answer's tokens inside "labels <query>;" and their text
        start = answer.index(query)
        inside = [k for k, (a, b) in enumerate(written) if a < start + len(query) and b > start]
        assert indices == inside and len(indices) >= 3
        for k, row in zip(indices, looks, strict=True):
            piece = answer[written[k][0] : written[k][1]].strip()
            seen = tokenizer.decode([ids[p] for p in np.nonzero(row)[0]]).strip("'\" ")
            assert piece in seen and seen in query  # the same characters, from the quote
    assert copy_looks(tokenizer, ids, prompt.text, answer, "Zoo")[0] == []
    with pytest.raises(ValueError, match="do not hold"):
        copy_looks(tokenizer, ids[:5], prompt.text, answer, query)


def test_the_copy_weight_adds_its_attention_loss(tiny_vlm):
    sample = generate_sample(1, size=128)
    examples, labels = _teacher_batch(tiny_vlm, sample)
    assert labels[0].query == sample.query
    with torch.no_grad():
        loss, parts = supervised_losses(tiny_vlm, examples, labels, AuxSettings(copy=0.5))
    assert 0 < parts["aux_copy"] < 50
    assert float(loss) == pytest.approx(parts["nll"] + 0.5 * parts["aux_copy"], rel=1e-5)
