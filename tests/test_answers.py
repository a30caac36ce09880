"""Parsing tables: what is used, what is dropped, and the reason given."""

import pytest

from socioseg.answers import answer_text, clean_response, parse_answer

FRAME = (756, 756)


def parse(text, points=False):
    return parse_answer(text, FRAME, expect_points=points)


def boxes(parsed):
    return [t.box.as_list() for t in parsed.targets]


def test_valid_stage1_answer():
    parsed = parse(
        '<think>a</think><answer>[{"bbox_2d": [1, 2, 30, 40]}, '
        '{"bbox_2d": [50.5, 60, 70, 80]}]</answer>'
    )
    assert boxes(parsed) == [[1, 2, 30, 40], [50.5, 60, 70, 80]]
    assert parsed.problems == ()
    assert parsed.has_think


def test_valid_stage2_answer_with_points():
    parsed = parse(
        '<answer>[{"bbox_2d": [10, 10, 100, 100], "points": [[20, 30], [50, 50]]}]</answer>',
        points=True,
    )
    assert [p.as_list() for p in parsed.targets[0].points] == [[20, 30], [50, 50]]
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<think>no answer here</think>", "no <answer>"),
        ('<answer>[{"bbox_2d": [1, 2, 3', "not closed"),
        ('<answer>[{"bbox_2d": [1, 2, 3, 4]</answer>', "not valid JSON"),
        ('<answer>{"boxes": 1}</answer>', "no 'bbox_2d'"),
        ("<answer>42</answer>", "not a list"),
        ('<answer>["box"]</answer>', "not a JSON object"),
    ],
)
def test_unusable_answers_give_no_targets_and_a_reason(response, reason):
    parsed = parse(response)
    assert parsed.targets == ()
    assert any(reason in p for p in parsed.problems), parsed.problems


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ('{"bbox_2d": [1, 2, 3]}', "must be 4 numbers"),
        ('{"bbox_2d": [1, 2, 3, true]}', "must be 4 numbers"),
        ('{"bbox_2d": ["1", 2, 3, 4]}', "must be 4 numbers"),
        ('{"bbox": [1, 2, 3, 4]}', "no 'bbox_2d'"),
        ('{"bbox_2d": [30, 40, 1, 2]}', "inverted box"),
        ('{"bbox_2d": [5, 5, 5, 9]}', "empty box"),
        ('{"bbox_2d": [800, 10, 900, 50]}', "outside the 756x756 frame"),
    ],
)
def test_bad_items_are_dropped_and_the_good_kept(item, reason):
    parsed = parse(f'<answer>[{item}, {{"bbox_2d": [1, 1, 9, 9]}}]</answer>')
    assert boxes(parsed) == [[1, 1, 9, 9]]
    assert any(reason in p and p.startswith("object 0") for p in parsed.problems)


def test_box_past_the_edge_is_kept_as_given_and_reported():
    parsed = parse('<answer>[{"bbox_2d": [700, 10, 790, 50]}]</answer>')
    assert boxes(parsed) == [[700, 10, 790, 50]]
    assert "reaches past" in parsed.problems[0]


def test_points_outside_their_box_or_malformed_are_dropped():
    parsed = parse(
        '<answer>[{"bbox_2d": [10, 10, 100, 100], "points": [[5, 50], [10, 10], [50], '
        '[50, "a"], [99, 99]]}]</answer>',
        points=True,
    )
    assert [p.as_list() for p in parsed.targets[0].points] == [[10, 10], [99, 99]]
    reasons = " | ".join(parsed.problems)
    assert "point 0 [5, 50] is outside its box" in reasons
    assert "point 2 must be [x, y]" in reasons and "point 3 must be [x, y]" in reasons


def test_missing_points_keep_the_box_and_say_so():
    parsed = parse('<answer>[{"bbox_2d": [10, 10, 100, 100]}]</answer>', points=True)
    assert boxes(parsed) == [[10, 10, 100, 100]] and parsed.targets[0].points == ()
    assert "no 'points'" in parsed.problems[0]


def test_single_quotes_are_read_and_reported():
    parsed = parse("<answer>[{'bbox_2d': [1, 2, 30, 40]}]</answer>")
    assert boxes(parsed) == [[1, 2, 30, 40]]
    assert "single quotes" in parsed.problems[0]


def test_single_object_is_read_as_a_list_and_reported():
    parsed = parse('<answer>{"bbox_2d": [1, 2, 30, 40]}</answer>')
    assert boxes(parsed) == [[1, 2, 30, 40]]
    assert "single object" in parsed.problems[0]


def test_stage1_ignores_points_and_extra_keys_with_a_note():
    parsed = parse('<answer>[{"bbox_2d": [1, 2, 30, 40], "points": [], "label": "zoo"}]</answer>')
    assert boxes(parsed) == [[1, 2, 30, 40]]
    assert len(parsed.problems) == 2


def test_answer_text_takes_first_answer_and_strips():
    assert answer_text("x<answer> [1] </answer><answer>[2]</answer>") == "[1]"
    assert answer_text("<answer>[1]") is None
    assert (
        clean_response("<answer>[]</answer><|im_end|><|endoftext|><pad>") == "<answer>[]</answer>"
    )


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "\x00\x01",
        "<answer></answer>",
        "<answer>null</answer>",
        "<answer>[NaN, Infinity]</answer>",
        "<answer>" * 1000,
    ],
)
def test_parser_never_raises(junk):
    parse(junk, points=True)
