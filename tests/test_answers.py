"""Reading answers: exactly the objects the released system hands SAM2, and why others are not."""

import json
import random
import re

import pytest

from socioseg.answers import _has_think, answer_text, clean_response, parse_answer

FRAME = (756, 756)


def parse(text):
    return parse_answer(text, FRAME)


def objects(parsed):
    return [(t.box.as_list(), [p.as_list() for p in t.points]) for t in parsed.targets]


def test_valid_stage1_answer():
    parsed = parse(
        '<think>a</think><answer>[{"bbox_2d": [1, 2, 30, 40]}, '
        '{"bbox_2d": [50.5, 60, 70, 80]}]</answer>'
    )
    assert objects(parsed) == [([1, 2, 30, 40], []), ([50.5, 60, 70, 80], [])]
    assert parsed.problems == ()
    assert parsed.has_think


def test_valid_stage2_answer_with_points():
    parsed = parse(
        '<answer>[{"bbox_2d": [10, 10, 100, 100], "points": [[20, 30], [50, 50]]}]</answer>'
    )
    assert objects(parsed) == [([10, 10, 100, 100], [[20, 30], [50, 50]])]
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<think>no answer here</think>", "no <answer>"),
        ('<answer>[{"bbox_2d": [1, 2, 3', "not closed"),
        ('<answer>[{"bbox_2d": [1, 2, 3, 4]</answer>', "not valid JSON"),
        ("<answer>[{'bbox_2d': [1, 2, 30, 40]}]</answer>", "single quotes are not JSON"),
        ('<answer>{"bbox_2d": [1, 2, 30, 40]}</answer>', "a single object, not a list"),
        ("<answer>42</answer>", "a JSON int, not a list"),
    ],
)
def test_answers_without_a_list_give_no_objects_and_a_reason(response, reason):
    parsed = parse(response)
    assert parsed.targets == ()
    assert any(reason in p for p in parsed.problems), parsed.problems


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ('"box"', "not a JSON object"),
        ('{"bbox_2d": [1, 2, 3]}', "must be a list of 4"),
        ('{"bbox": [1, 2, 3, 4]}', "must be a list of 4"),
        ('{"bbox_2d": ["1", 2, 3, 4]}', "'1' is not a number"),
        ('{"bbox_2d": [1, null, 3, 4]}', "None is not a number"),
        ('{"bbox_2d": [1, [2], 3, 4]}', "[2] is not a number"),
        (f'{{"bbox_2d": [1, 2, 3, {2**63}]}}', "is not a number"),
        ('{"bbox_2d": [1, 2, 30, 40], "points": null}', "'points' is not a list"),
        ('{"bbox_2d": [1, 2, 30, 40], "points": [[5]]}', "'points' is not a list"),
        ('{"bbox_2d": [1, 2, 30, 40], "points": 3}', "'points' is not a list"),
        ('{"bbox_2d": [1, 2, 30, 40], "points": [[5, "a"]]}', "'a' is not a number"),
    ],
)
def test_elements_sam_cannot_take_are_skipped_the_rest_kept(item, reason):
    parsed = parse(f'<answer>[{item}, {{"bbox_2d": [1, 1, 9, 9]}}]</answer>')
    assert objects(parsed) == [([1, 1, 9, 9], [])]
    assert any(reason in p and p.startswith("object 0") for p in parsed.problems), parsed.problems


@pytest.mark.parametrize(
    ("item", "kept", "reason"),
    [
        ('{"bbox_2d": [30, 40, 1, 2]}', ([30, 40, 1, 2], []), "inverted box"),
        ('{"bbox_2d": [5, 5, 5, 9]}', ([5, 5, 5, 9], []), "empty box"),
        ('{"bbox_2d": [800, 10, 900, 50]}', ([800, 10, 900, 50], []), "outside the 756x756"),
        ('{"bbox_2d": [700, 10, 790, 50]}', ([700, 10, 790, 50], []), "reaches past"),
        ('{"bbox_2d": [true, 0, 9, 9]}', ([1, 0, 9, 9], []), None),
        ('{"bbox_2d": [NaN, 0, 9, 9]}', None, "non-finite"),
        (
            '{"bbox_2d": [0, 0, 9, 9], "points": [[50, 1]]}',
            ([0, 0, 9, 9], [[50, 1]]),
            "outside its",
        ),
        ('{"bbox_2d": [0, 0, 9, 9], "points": [[1, 2, 3]]}', ([0, 0, 9, 9], [[1, 2]]), "first two"),
        ('{"bbox_2d": [0, 0, 9, 9], "points": ""}', ([0, 0, 9, 9], []), None),
        ('{"bbox_2d": [0, 0, 9, 9], "label": "zoo"}', ([0, 0, 9, 9], []), "unexpected keys"),
    ],
)
def test_odd_values_go_to_sam_as_given_and_are_reported(item, kept, reason):
    parsed = parse(f"<answer>[{item}]</answer>")
    assert len(parsed.targets) == 1
    if kept is not None:
        assert objects(parsed) == [kept]
    if reason is None:
        assert parsed.problems == ()
    else:
        assert any(reason in p for p in parsed.problems), parsed.problems


def test_answer_text_takes_first_answer_and_strips():
    assert answer_text("x<answer> [1] </answer><answer>[2]</answer>") == "[1]"
    assert answer_text("<answer>[1]") is None
    assert (
        clean_response("<answer>[]</answer><|im_end|><|endoftext|><pad>") == "<answer>[]</answer>"
    )


@pytest.mark.parametrize(
    "junk",
    ["", "\x00\x01", "<answer></answer>", "<answer>null</answer>", "<answer>" * 1000],
)
def test_parser_never_raises(junk):
    assert parse(junk).targets == ()


# ---- the released rule, written independently, on a generated corpus ------------------------

_INT64 = (-(2**63), 2**63 - 1)


def released_objects(response: str) -> list[tuple[list[float], list[list[float]]]]:
    """SPEC "Parsing, for SAM", step by step, with the regex the released code uses."""
    match = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
    if match is None:
        return []
    try:
        data = json.loads(match.group(1).strip())
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, list):
        return []
    kept = []
    for obj in data:
        if not isinstance(obj, dict):
            continue
        box = obj.get("bbox_2d", [])
        try:
            points = [[p[0], p[1]] for p in obj.get("points", [])]
        except (TypeError, IndexError, KeyError):
            continue
        if not (isinstance(box, list) and len(box) == 4):
            continue
        values = box + [v for p in points for v in p]
        sam_takes = [
            type(v) in (bool, float) or (type(v) is int and _INT64[0] <= v <= _INT64[1])
            for v in values
        ]
        if all(sam_takes):
            kept.append(([float(v) for v in box], [[float(x), float(y)] for x, y in points]))
    return kept


_VALUES = [0, 5, 755, 756.5, -3, 1.25, True, False, None, "7", "", [1], {}, 2**63 - 1, 2**63]
_VALUES += [-(2**63) - 1, 1e400, -1e400, float("nan")]
_POINTS = [None, 3, "", "ab", "a", {}, {"ab": 1}, [], [[1]], [[1, 2, 3]], [1, 2], [[1, "x"]]]
_POINTS += [[[None, 1]], [{"a": 1}], ["xy"], [[True, 2.5]], [[1, 2], [3, 4]]]


def _element(rng: random.Random):
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([1, "x", None, [1, 2, 3, 4], True])
    item = {}
    if rng.random() < 0.9:
        length = rng.choice([4, 4, 4, 4, 3, 5, 0])
        box = [rng.choice(_VALUES) if rng.random() < 0.2 else rng.randint(-50, 800)]
        box += [rng.choice(_VALUES) if rng.random() < 0.1 else rng.uniform(-50, 800)]
        box = (box * 4)[:length]
        rng.shuffle(box)
        item["bbox_2d"] = box if rng.random() < 0.95 else rng.choice(["1,2,3,4", None, 4])
    if rng.random() < 0.6:
        if rng.random() < 0.7:
            pts = [[rng.randint(-10, 800), rng.uniform(0, 800)] for _ in range(rng.randint(0, 4))]
            item["points"] = pts
        else:
            item["points"] = rng.choice(_POINTS)
    if rng.random() < 0.1:
        item["label"] = "x"
    return item


def _response(rng: random.Random) -> str:
    data = [_element(rng) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.08:
        data = data[0] if data else {}
    body = json.dumps(data)
    if rng.random() < 0.05:
        body = body.replace('"', "'")
    if rng.random() < 0.05:
        body = body[: rng.randint(0, len(body))]
    if rng.random() < 0.03:
        body = "[" * 5000 + "]" * 5000
    pad = rng.choice(["", " ", "\n ", "\u3000"])
    answer = f"<answer>{pad}{body}{pad}</answer>"
    wrappers = [
        f"<think>t</think>{answer}",
        answer,
        f"{answer}<answer>[]</answer>",
        f"<answer>{answer}",
        answer.replace("</answer>", ""),
        f"<think>{answer}</think>",
        f'<answer>[{{"bbox_2d": [1, 2, 3, 4]}}]</answer>{answer}',
    ]
    return rng.choice(wrappers)


def _same(ours, reference) -> bool:
    return json.dumps(ours) == json.dumps(reference)  # NaN and infinities compare as text


def test_objects_equal_the_released_rule_on_generated_answers():
    rng = random.Random(9)
    responses = [_response(rng) for _ in range(4000)]
    kept_some = 0
    for response in responses:
        ours = objects(parse(response))
        reference = released_objects(response)
        assert _same(ours, reference), response
        kept_some += bool(reference)
    assert kept_some > 1000  # the corpus exercises kept objects, not only rejections


# ---- linear time -----------------------------------------------------------------------------


class CountingStr(str):
    """A str that counts the characters its scans may read (find, startswith, indexing)."""

    def __new__(cls, value):
        obj = super().__new__(cls, value)
        obj.work = 0
        return obj

    def find(self, sub, start=0, *args):
        found = super().find(sub, start, *args)
        self.work += (len(self) if found < 0 else found + len(sub)) - start
        return found

    def startswith(self, prefix, start=0, *args):
        self.work += len(prefix)
        return super().startswith(prefix, start, *args)

    def __getitem__(self, key):
        self.work += 1
        return super().__getitem__(key)


PATHOLOGICAL = [
    lambda n: "<think>" * n,
    lambda n: "<answer>" * n,
    lambda n: "<think>" * n + "</think>" + "<answer>" * n,
    lambda n: ("<think>" + " " * 5) * n + "</answer>",
]


@pytest.mark.parametrize("make", PATHOLOGICAL)
def test_answer_scans_are_linear(make):
    def work(n):
        text = CountingStr(make(n))
        answer_text(text)
        _has_think(text)
        return text.work

    small, large = work(5000), work(10000)
    assert small >= len(make(5000)) // 2  # the scan reads the text through the counter
    assert large <= 2.1 * small + 100
