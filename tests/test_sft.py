"""Format warm-up: teacher answers from the GT earn full reward, and the loss trains."""

import math

import pytest
import torch

from socioseg.answers import answer_text
from socioseg.data.synth import generate_sample
from socioseg.geometry import Frames
from socioseg.models.families import QWEN2_5_VL
from socioseg.train.config import ConfigError
from socioseg.train.rewards import stage1_rewards, stage2_rewards
from socioseg.train.sft import supervised_loss
from socioseg.train.teacher import teacher_boxes, teacher_examples
from tests.runs import Killed, kill_at, metric_rows


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


def test_noisy_stage2_examples_copy_the_reread_boxes_and_point_into_the_entity():
    import json
    import re

    import numpy as np

    from socioseg.train.teacher import noisy_boxes

    sample = generate_sample(7, size=256)
    frames = Frames.for_image(sample.sat.size, 3136, 65536)
    gt_vlm = teacher_boxes(sample.mask, frames)
    rng = np.random.default_rng(3)
    first, second, single = teacher_examples(sample, 3136, 65536, rng, 0.2, single_stage=True)
    assert json.loads(re.search("<answer>(.*)</answer>", first[1]).group(1)) == [
        {"bbox_2d": b} for b in gt_vlm
    ]
    prompt, answer = second
    reread = json.loads(re.search(r"are: (\[.*?\])\.Please", prompt.text).group(1))
    objects = json.loads(re.search("<answer>(.*)</answer>", answer).group(1))
    boxes = [o["bbox_2d"] for o in reread]
    assert boxes != gt_vlm and [o["bbox_2d"] for o in objects] == boxes
    # Each coordinate moved by at most 20% of its GT box's side (plus rounding).
    for (a, b, c, d), (x1, y1, x2, y2) in zip(boxes, gt_vlm, strict=True):
        w, h = x2 - x1, y2 - y1
        assert max(abs(a - x1), abs(c - x2)) <= 0.2 * w + 1
        assert max(abs(b - y1), abs(d - y2)) <= 0.2 * h + 1
    # The stage-2 answer is what the reward wants: boxes copied, points strictly inside, on
    # the entity.
    reward = stage2_rewards(answer, json.dumps(reread), sample.mask, sample.mask)
    assert reward.format == 2.0
    scale = sample.sat.width / frames.vlm_size[0]
    for obj in objects:
        for x, y in obj["points"]:
            assert sample.mask[int(y * scale), int(x * scale)]
    assert "points" in single[1] and "with bboxs and some points" in single[0].text
    for x1, y1, x2, y2 in noisy_boxes(rng, [[0, 0, 5, 5], [240, 240, 252, 252]], 0.9, (252, 252)):
        assert x1 >= 0 and x2 <= 252 and x2 - x1 >= 4 and y2 - y1 >= 4


def test_teacher_answers_of_a_relative_family_are_0_to_1000_and_earn_the_full_reward():
    import json

    from socioseg.models.families import QWEN3_VL

    sample = generate_sample(4, size=256)
    (first, answer1), (_, answer2) = teacher_examples(sample, 3136, 65536, family=QWEN3_VL)
    frames = Frames.for_image(sample.sat.size, 3136, 65536, factor=32)
    assert first.images[1].size == frames.vlm_size and frames.vlm_size[0] % 32 == 0
    gt_vlm = teacher_boxes(sample.mask, frames)
    width, height = frames.vlm_size
    by_hand = [
        [
            round(x1 * 1000 / width),
            round(y1 * 1000 / height),
            round(x2 * 1000 / width),
            round(y2 * 1000 / height),
        ]
        for x1, y1, x2, y2 in gt_vlm
    ]
    assert [o["bbox_2d"] for o in json.loads(answer_text(answer1))] == by_hand
    reward = stage1_rewards(
        answer1, gt_vlm, to_vlm=lambda xy: frames.points_array(xy, "relative", "vlm")
    )
    assert (reward.format, reward.accuracy, reward.length) == (2.0, 1.0, 1.0)
    stage2 = stage2_rewards(answer2, answer_text(answer1), sample.mask, sample.mask)
    assert stage2.format == 2.0


def test_stages_choose_which_teacher_examples_a_sample_gives():
    import numpy as np

    from socioseg import prompts
    from socioseg.train.sft import SftConfig, step_examples

    sample = generate_sample(2, size=128)
    frame = (3136, 12544)
    both = step_examples(sample, SftConfig(), frame, np.random.default_rng(0), QWEN2_5_VL)
    assert len(both) == 2 and both[0][0].text == prompts.stage1_text(sample.query)
    one = SftConfig(stages=["stage1"], single_stage_share=1.0)
    stage1 = step_examples(sample, one, frame, np.random.default_rng(0), QWEN2_5_VL)
    assert [p.text for p, _ in stage1] == [
        prompts.stage1_text(sample.query),
        prompts.single_stage_text(sample.query),
    ]
    with pytest.raises(ConfigError, match="stages must list"):
        SftConfig(stages=[])
    with pytest.raises(ConfigError, match="does not match"):
        SftConfig(stages=["stage3"])


def test_level_shares_and_kind_word_names_pick_the_samples_a_step_draws(tmp_path):
    import numpy as np

    from socioseg.data.dataset import load_socioseg
    from socioseg.data.synth import write_dataset
    from socioseg.train.sft import SampleDraws, SftConfig, has_kind_word

    assert has_kind_word("Jinan No. 2 Middle School", "School")
    assert has_kind_word("Licheng Football Field", "Soccer Field")  # "field"
    assert not has_kind_word("Licheng Zoo", "School") and not has_kind_word("Zoo", None)
    write_dataset(tmp_path / "data", n=30, seed=0, size=128, queries=3)
    dataset = load_socioseg(tmp_path / "data", "train")
    levels = [dataset.level(i) for i in range(len(dataset))]
    rng = np.random.default_rng(0)
    classes = SampleDraws(dataset, SftConfig(level_shares={"socio-class": 1.0}))
    assert {levels[i][0] for i in classes.draw(rng, 50)} == {"socio-class"}
    named = SampleDraws(dataset, SftConfig(level_shares={"socio-name": 1}, kind_word_names=True))
    drawn = named.draw(rng, 50)
    assert {levels[i][0] for i in drawn} == {"socio-name"}
    assert all(has_kind_word(dataset.query(i), levels[i][1]) for i in drawn)
    kind_word = sum(
        has_kind_word(dataset.query(i), c) for i, (lv, c) in enumerate(levels) if lv == "socio-name"
    )
    assert len(set(drawn)) <= kind_word < sum(lv == "socio-name" for lv, _ in levels)
    mix = SampleDraws(dataset, SftConfig(level_shares={"socio-class": 1, "socio-name": 3}))
    drawn = [levels[i][0] for i in mix.draw(rng, 400)]
    assert 0.68 < drawn.count("socio-name") / 400 < 0.82
    uniform = SampleDraws(dataset, SftConfig())
    assert uniform.draw(np.random.default_rng(1), 5) == [
        int(i) for i in np.random.default_rng(1).integers(0, len(dataset), 5)
    ]
    with pytest.raises(ConfigError, match="level_shares"):
        SftConfig(level_shares={"socio-place": 1.0})


def _saving_run(tiny_models, tmp_path, **fields):
    """The config of a short tiny-policy run that keeps its state after every step, on 4
    synthetic tiles of two questions each written to ``tmp_path / "data"``."""
    from socioseg.data.synth import write_dataset
    from socioseg.train.sft import SftConfig

    write_dataset(tmp_path / "data", n=4, seed=0, size=128, queries=2)
    return SftConfig(
        vlm=str(tiny_models[0]),
        data=str(tmp_path / "data"),
        batch_size=1,
        min_pixels=3136,
        max_pixels=12544,
        log_every=1,
        save_every=1,
        **fields,
    )


def test_a_killed_sft_resumes_to_the_policy_of_an_uninterrupted_run(tiny_models, tmp_path):
    from safetensors.torch import load_file

    from socioseg.train.config import AuxSettings
    from socioseg.train.sft import train_sft

    config = _saving_run(
        tiny_models,
        tmp_path,
        steps=3,
        single_stage_share=0.5,  # a draw from the run's generator at every step
        aux=AuxSettings(position=1.0, attention=1.0),
    )
    whole = train_sft(config, tmp_path / "whole")
    with pytest.raises(Killed):
        train_sft(config, tmp_path / "cut", on_log=kill_at(2))
    cut = train_sft(config, tmp_path / "cut", resume=True)
    assert metric_rows(cut) == metric_rows(whole) and len(metric_rows(cut)) == 4
    ours, theirs = (load_file(folder / "model.safetensors") for folder in (cut, whole))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_run_saved_before_a_config_field_existed_resumes_with_it_at_its_default(
    tiny_models, tmp_path
):
    """A state written by an older socioseg lacks the newer config fields; each counts at its
    default (the loss the old run computed), so the run resumes; another value is refused."""
    import dataclasses
    import json

    from socioseg.train.checkpoint import CheckpointError
    from socioseg.train.config import AuxSettings
    from socioseg.train.sft import train_sft

    config = _saving_run(tiny_models, tmp_path, steps=2, aux=AuxSettings(position=1.0))
    with pytest.raises(Killed):
        train_sft(config, tmp_path / "cut", on_log=kill_at(2))
    (progress,) = (tmp_path / "cut").glob(".socioseg-partial/resume-*/progress.json")
    record = json.loads(progress.read_text())
    del record["config"]["aux"]["query"], record["config"]["kind_word_names"]
    progress.write_text(json.dumps(record))
    asking = dataclasses.replace(config, aux=AuxSettings(position=1.0, query=1.0))
    with pytest.raises(CheckpointError, match=r"another config \(aux\.query\)"):
        train_sft(asking, tmp_path / "cut", resume=True)
    assert (train_sft(config, tmp_path / "cut", resume=True) / "model.safetensors").is_file()


def _drawn_and_answered(example) -> tuple[list, list]:
    import json
    import re

    prompt, answer = example
    drawn = json.loads(re.search(r"are: (\[.*?\])\.Please", prompt.text).group(1))
    objects = json.loads(re.search("<answer>(.*)</answer>", answer).group(1))
    return [o["bbox_2d"] for o in drawn], objects


def test_snapped_stage2_answers_the_gt_boxes_whatever_boxes_it_reads():
    import numpy as np

    from socioseg.data.synth import generate_tile
    from socioseg.train.sft import SftConfig, step_examples

    target, *others = generate_tile(7, 0, size=256, queries=3, placement="random")
    frame = (3136, 65536)
    frames = Frames.for_image(target.sat.size, *frame)
    gt_vlm = teacher_boxes(target.mask, frames)
    scale = target.sat.width / frames.vlm_size[0]

    noisy = SftConfig(stage2_box_noise=0.2, stage2_snap=True)
    drawn, objects = _drawn_and_answered(
        step_examples(target, noisy, frame, np.random.default_rng(3), QWEN2_5_VL)[1]
    )
    assert drawn != gt_vlm and [o["bbox_2d"] for o in objects] == gt_vlm

    decoys = SftConfig(stage2_snap=True, stage2_decoy_share=1.0)
    example = step_examples(target, decoys, frame, np.random.default_rng(0), QWEN2_5_VL, others)[1]
    drawn, objects = _drawn_and_answered(example)
    apart = [o for o in others if not (np.asarray(o.mask) & np.asarray(target.mask)).any()]
    assert apart and drawn in [teacher_boxes(o.mask, frames) for o in apart]
    assert [o["bbox_2d"] for o in objects] == gt_vlm
    for obj in objects:
        assert obj["points"]
        for x, y in obj["points"]:
            assert target.mask[int(y * scale), int(x * scale)]
    # What the images show is the decoy's box: the stage-2 map differs from the plain map only
    # around the drawn box (its outline and the coarse mask inside it).
    (plain_prompt, _), _ = step_examples(
        target, SftConfig(), frame, np.random.default_rng(0), QWEN2_5_VL
    )
    plain = np.asarray(plain_prompt.images[0], dtype=int)
    shown = np.asarray(example[0].images[0], dtype=int)
    ys, xs = np.nonzero(np.abs(shown - plain).sum(-1))
    ((x1, y1, x2, y2),) = drawn
    assert len(xs) and xs.min() >= x1 - 3 and xs.max() <= x2 + 3
    assert ys.min() >= y1 - 3 and ys.max() <= y2 + 3


def test_a_decoy_is_never_the_target_itself():
    import numpy as np

    from socioseg.data.synth import generate_tile
    from socioseg.train.sft import SftConfig, step_examples

    target, *_ = generate_tile(7, 0, size=256, queries=3, placement="random")
    config = SftConfig(stage2_decoy_share=1.0)
    frame = (3136, 65536)
    frames = Frames.for_image(target.sat.size, *frame)
    # The same entity asked another way overlaps the target: it cannot stand for a wrong one.
    example = step_examples(target, config, frame, np.random.default_rng(0), QWEN2_5_VL, [target])
    drawn, objects = _drawn_and_answered(example[1])
    assert drawn == teacher_boxes(target.mask, frames) == [o["bbox_2d"] for o in objects]
    with pytest.raises(ConfigError, match="stage2_decoy_share"):
        SftConfig(stage2_decoy_share=1.5)


def test_a_tiles_other_questions_are_read_only_for_a_decoy():
    import numpy as np

    from socioseg.data.synth import generate_tile
    from socioseg.train.sft import SftConfig, step_examples

    target, *others = generate_tile(7, 0, size=256, queries=3, placement="random")
    read = []

    def loading():
        for other in others:
            read.append(other)
            yield other

    frame, rng = (3136, 65536), np.random.default_rng(0)
    step_examples(target, SftConfig(), frame, rng, QWEN2_5_VL, loading())
    assert read == []
    step_examples(target, SftConfig(stage2_decoy_share=1.0), frame, rng, QWEN2_5_VL, loading())
    assert read == others


def _sublist(part: list, whole: list) -> bool:
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_quoted_reasoning_repeats_the_prompts_own_tokens_of_the_query():
    import re

    import numpy as np
    from transformers import AutoTokenizer

    from socioseg.data.synth import generate_tile
    from socioseg.models.sources import MINI_DIR

    tokenizer = AutoTokenizer.from_pretrained(MINI_DIR / "vlm")
    tiles = (generate_tile(7, i, size=256, queries=3, placement="random") for i in range(20))
    name = next(s for tile in tiles for s in tile if s.level == "socio-name" and " " in s.query)

    def copied(examples):
        """Per example: the reasoning's tokens between "labels" and what follows the query,
        and whether they occur, in that order, among the prompt's tokens."""
        runs = []
        for prompt, answer in examples:
            think = re.search("<think>The map labels (.*?)(;| and) its", answer).group(1)
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            head = tokenizer("<think>The map labels", add_special_tokens=False)["input_ids"]
            tail = tokenizer(think, add_special_tokens=False)["input_ids"]
            run = ids[len(head) : len(head) + len(tail)]
            runs.append(
                _sublist(run, tokenizer(prompt.text, add_special_tokens=False)["input_ids"])
            )
        return runs

    frame = (3136, 65536)
    quoted = teacher_examples(name, *frame, np.random.default_rng(2), 0.2, True, quoted_think=True)
    plain = teacher_examples(name, *frame, np.random.default_rng(2), 0.2, True)
    assert copied(quoted) == [True, True, True]
    assert copied(plain) == [False, False, False]
    assert "'" + name.query + "'" in quoted[0][1] and '"' + name.query + '"' in quoted[1][1]
    # Only the reasoning changes: the same prompts, the same answers after it.
    for (p, a), (q, b) in zip(quoted, plain, strict=True):
        assert p.text == q.text and a.split("</think>")[1] == b.split("</think>")[1]


def test_class_for_names_reasoning_says_the_targets_class_and_nothing_else_changes():
    import numpy as np

    from socioseg.data.synth import generate_tile

    tiles = [generate_tile(7, i, size=256, queries=3, placement="random") for i in range(6)]
    name = next(s for tile in tiles for s in tile if s.level == "socio-name")
    other = next(s for tile in tiles for s in tile if s.level == "socio-class")
    frame = (3136, 65536)
    told = teacher_examples(name, *frame, np.random.default_rng(2), 0.2, True, class_for_names=True)
    plain = teacher_examples(name, *frame, np.random.default_rng(2), 0.2, True)
    for (p, a), (q, b) in zip(told, plain, strict=True):
        assert a.startswith(f"<think>The map labels {name.socio_class}; its outline")
        assert b.startswith(f"<think>The map labels {name.query}; its outline")
        assert p.text == q.text and a.split("</think>")[1] == b.split("</think>")[1]
    # Other levels say their query as before.
    (_, a), *_ = teacher_examples(other, *frame, class_for_names=True)
    assert a.startswith(f"<think>The map labels {other.query}; its outline")
