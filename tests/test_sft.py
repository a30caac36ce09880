"""Format warm-up: teacher answers from the GT earn full reward, and the loss trains."""

import math

import torch

from socioseg.answers import answer_text
from socioseg.data.synth import generate_sample
from socioseg.geometry import Frames
from socioseg.rl.rewards import stage1_rewards, stage2_rewards
from socioseg.rl.sft import supervised_loss, teacher_boxes, teacher_examples


def test_teacher_answers_earn_the_full_stage1_reward_and_valid_stage2_format():
    sample = generate_sample(4, size=256)
    (first, answer1), (second, answer2) = teacher_examples(sample, 3136, 65536)
    frames = Frames.for_image(sample.sat.size, 3136, 65536)
    gt_vlm = teacher_boxes(sample.mask, frames)
    assert first.images[1].size == frames.vlm_size == second.images[0].size
    reward1 = stage1_rewards(answer1, gt_vlm)
    assert (reward1.format, reward1.accuracy, reward1.length) == (2.0, 1.0, 1.0)
    reward2 = stage2_rewards(answer2, answer_text(answer1), sample.mask, sample.mask)
    assert reward2.format == 2.0 and reward2.accuracy == 1.0


def test_supervised_loss_is_finite_and_has_gradients(tiny_vlm):
    sample = generate_sample(1, size=128)
    examples = teacher_examples(sample, 3136, 12544)
    loss = supervised_loss(tiny_vlm, examples)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in tiny_vlm.model.parameters() if p.grad is not None]
    assert grads and any(torch.any(g != 0) for g in grads)
    tiny_vlm.model.zero_grad(set_to_none=True)
