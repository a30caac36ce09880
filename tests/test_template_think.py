"""A chat template that opens ``<think>`` itself (Qwen3.5's published thinking mode).

Its generation prompt ends ``<|im_start|>assistant\\n<think>\\n``, so the model's tokens start
inside the reasoning. socioseg reads each response with that opening in front (the answer
parser and the rewards see ``<think>...</think><answer>...``) and trains teacher answers
without it (the template already wrote it).
"""

from __future__ import annotations

import pytest
import torch

from socioseg.answers import parse_answer
from socioseg.models.builders import QWEN3_VL_CHAT_TEMPLATE, build_tiny_policy
from socioseg.train.rewards import stage1_rewards

OPENING = "<think>\n"
THINKING_TEMPLATE = QWEN3_VL_CHAT_TEMPLATE.replace(
    "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}"
)
MIN_PIXELS, MAX_PIXELS = 64 * 64, 128 * 128
FRAME = (1000, 1000)  # the relative frame Qwen3.5 answers in


@pytest.fixture(scope="module")
def thinking_qwen3_5(tmp_path_factory):
    """A tiny Qwen3.5 whose saved chat template opens <think> as the published one does."""
    from transformers import AutoTokenizer

    from socioseg.models.vlm import VisionLanguageModel

    assert THINKING_TEMPLATE != QWEN3_VL_CHAT_TEMPLATE
    folder = build_tiny_policy(tmp_path_factory.mktemp("q35") / "vlm", "qwen3_5")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = THINKING_TEMPLATE
    tokenizer.save_pretrained(folder)
    return VisionLanguageModel.from_pretrained(str(folder), "cpu", None, MIN_PIXELS, MAX_PIXELS)


def test_the_template_opening_is_found_and_only_for_a_template_that_opens_it(
    thinking_qwen3_5, tmp_path
):
    from socioseg.models.vlm import VisionLanguageModel

    processor = thinking_qwen3_5.processor
    assert processor.chat_text("School").endswith("<|im_start|>assistant\n<think>\n")
    assert processor.response_prefix == OPENING
    plain = build_tiny_policy(tmp_path / "plain", "qwen3_5")
    assert VisionLanguageModel.from_pretrained(str(plain), "cpu").processor.response_prefix == ""


def test_generated_text_is_read_with_the_opening_in_front(thinking_qwen3_5):
    from socioseg import prompts
    from socioseg.models.vlm import SamplingSettings
    from tests.conftest import noise_image

    images = [noise_image(96, 64, 1), noise_image(96, 64, 2)]
    inputs = thinking_qwen3_5.encode([prompts.stage1_text("School")], [images])
    sampling = SamplingSettings(greedy=True, max_new_tokens=6)
    (generation,) = thinking_qwen3_5.generate(inputs, sampling)
    tokenizer = thinking_qwen3_5.processor.tokenizer
    decoded = tokenizer.decode(list(generation.token_ids), skip_special_tokens=True)
    assert generation.text == OPENING + decoded
    # The opening is the prompt's: its tokens end the input, not the generated ids.
    opening_ids = tokenizer(OPENING).input_ids
    assert inputs["input_ids"][0, -len(opening_ids) :].tolist() == opening_ids


def test_parser_and_reward_see_the_whole_response(thinking_qwen3_5):
    """What the model writes after the template's <think>: without the opening the answer
    has no reasoning block and loses the format reward's structure points."""
    answer = '<answer>[{"bbox_2d": [100, 200, 400, 600]}]</answer>'
    written = "School north of the road.</think>" + answer
    full = thinking_qwen3_5.processor.full_response(written)
    assert full == OPENING + written
    assert parse_answer(full, FRAME).has_think and not parse_answer(written, FRAME).has_think
    gt = [[100, 200, 400, 600]]
    with_opening, alone = stage1_rewards(full, gt), stage1_rewards(written, gt)
    assert with_opening.format > alone.format
    # The same answer written whole (as the prompts ask of other families) scores the same.
    whole = "<think>School north of the road.</think>" + answer
    assert with_opening == stage1_rewards(whole, gt)


def test_teacher_answers_are_trained_without_the_opening(thinking_qwen3_5):
    from socioseg.data import load_example
    from socioseg.models.families import QWEN3_5
    from socioseg.train.sft import answer_nll
    from socioseg.train.teacher import teacher_examples

    processor = thinking_qwen3_5.processor
    prompt, answer = teacher_examples(load_example(0), MIN_PIXELS, MAX_PIXELS, family=QWEN3_5)[0]
    assert answer.startswith("<think>")
    generated = processor.generated_part(answer)
    assert generated == answer.removeprefix("<think>")
    assert parse_answer(processor.full_response(generated), FRAME) == parse_answer(answer, FRAME)

    # By hand: the mean NLL of the answer's own tokens after the prompt (which ends "<think>\n").
    tokenizer = processor.tokenizer
    ids = [*tokenizer(generated).input_ids, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    inputs = thinking_qwen3_5.encode([prompt.text], [list(prompt.images)])
    with torch.no_grad():
        logp = thinking_qwen3_5.response_logprobs(
            inputs, torch.tensor([ids]), torch.ones(1, len(ids))
        )
    assert answer_nll(thinking_qwen3_5, [(prompt, answer)]) == pytest.approx(
        -float(logp.mean()), rel=1e-5
    )


def test_the_image_token_labels_train_the_same_answer_tokens(thinking_qwen3_5):
    """With the aux labels on, the answer NLL is the one without them: the opening the
    template wrote is not trained twice, and each coordinate digit is found in what the model
    writes."""
    from socioseg.data import load_example
    from socioseg.geometry import Frames
    from socioseg.models.families import QWEN3_5
    from socioseg.train import aux_labels
    from socioseg.train.config import AuxSettings
    from socioseg.train.sft import (
        TeacherBatch,
        sample_aux_labels,
        supervised_loss,
        supervised_losses,
    )
    from socioseg.train.teacher import teacher_examples

    sample = load_example(0)
    examples = teacher_examples(sample, MIN_PIXELS, MAX_PIXELS, family=QWEN3_5)[:1]
    tokenizer = thinking_qwen3_5.processor.tokenizer
    frames = Frames.for_image(sample.sat.size, MIN_PIXELS, MAX_PIXELS, QWEN3_5.factor)
    labels = [sample_aux_labels(sample, frames, QWEN3_5, tokenizer)]
    with torch.no_grad():
        plain = supervised_loss(thinking_qwen3_5, examples)
        _, parts = supervised_losses(thinking_qwen3_5, examples, labels, AuxSettings(1.0, 1.0))
    assert parts["nll"] == pytest.approx(float(plain), rel=1e-5)

    batch = TeacherBatch.of(thinking_qwen3_5, examples)
    ids = batch.ids[0][batch.mask[0].bool()].tolist()
    (answer,) = batch.answers
    found = aux_labels.coordinate_positions(tokenizer, answer)
    assert found, "the teacher answer has coordinates"
    for index, _, value in found:  # each found digit is a digit of its number, at its place
        assert tokenizer.decode(ids[index]) in str(value)
