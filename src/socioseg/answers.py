"""Model text -> :class:`~socioseg.types.ParsedAnswer`. Total: never raises on model output.

The model answers ``<think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y],
...]}, ...]</answer>`` with absolute coordinates in the VLM frame. Everything unusable is dropped
and reported in ``ParsedAnswer.problems``; nothing is repaired silently.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from socioseg.types import Box, ParsedAnswer, Point, Target

# Strings the released reward code strips from a response before scoring it.
SPECIAL_STRINGS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "<pad>")

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


def clean_response(text: str) -> str:
    """Remove the special strings the released code strips (``<|im_end|>`` etc.)."""
    for special in SPECIAL_STRINGS:
        text = text.replace(special, "")
    return text


def answer_text(response: str) -> str | None:
    """The stripped text between the first ``<answer>`` and the next ``</answer>``, else None."""
    start = response.find(_ANSWER_OPEN)
    if start < 0:
        return None
    start += len(_ANSWER_OPEN)
    end = response.find(_ANSWER_CLOSE, start)
    if end < 0:
        return None
    return response[start:end].strip()


def is_number(value: Any) -> bool:
    """True for a finite JSON number (int or float, never bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _load_json(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``; JSON too deep or with huge numbers is a reason."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, error.msg
    except (ValueError, RecursionError) as error:
        return None, f"unreadable: {type(error).__name__}"


def parse_answer(
    response: str, frame_size: tuple[int, int], *, expect_points: bool
) -> ParsedAnswer:
    """Parse one stage's response into targets in the VLM frame.

    Args:
        response: raw decoded model text.
        frame_size: ``(width, height)`` of the VLM frame the coordinates refer to.
        expect_points: True for stage 2 / single-stage answers (``points`` per object).

    Returns:
        ``ParsedAnswer`` whose targets are the usable objects, in answer order. Dropped: items
        that are not objects, lack a 4-number ``bbox_2d``, have an inverted or empty box, or lie
        wholly outside the frame; points that are malformed or outside their box (edges count as
        inside). A box reaching past the frame edge is kept as the model gave it and reported.
    """
    text = clean_response(response)
    has_think = bool(_THINK_RE.search(text))
    body = answer_text(text)
    if body is None:
        reason = "no <answer>...</answer> in the response"
        if _ANSWER_OPEN in text:
            reason = "<answer> is not closed (truncated response?)"
        return ParsedAnswer("", (), (reason,), has_think)

    problems: list[str] = []
    data, error = _load_json(body)
    if error is not None:
        data, second_error = _load_json(body.replace("'", '"'))
        if second_error is not None:
            return ParsedAnswer(body, (), (f"answer is not valid JSON ({error})",), has_think)
        problems.append("answer used single quotes; read after replacing them with double quotes")

    if isinstance(data, dict):
        data = [data]
        problems.append("answer is a single object, not a list; read as a list of one")
    if not isinstance(data, list):
        problems.append(f"answer is a JSON {type(data).__name__}, not a list of objects")
        return ParsedAnswer(body, (), tuple(problems), has_think)

    targets = []
    for index, item in enumerate(data):
        target = _parse_item(item, index, frame_size, expect_points, problems)
        if target is not None:
            targets.append(target)
    return ParsedAnswer(body, tuple(targets), tuple(problems), has_think)


def _parse_item(
    item: Any,
    index: int,
    frame_size: tuple[int, int],
    expect_points: bool,
    problems: list[str],
) -> Target | None:
    name = f"object {index}"
    if not isinstance(item, dict):
        problems.append(f"{name}: not a JSON object, dropped")
        return None
    raw_box = item.get("bbox_2d")
    if raw_box is None:
        problems.append(f"{name}: no 'bbox_2d' (keys: {sorted(item)}), dropped")
        return None
    if not (isinstance(raw_box, list) and len(raw_box) == 4 and all(map(is_number, raw_box))):
        problems.append(f"{name}: 'bbox_2d' must be 4 numbers, got {raw_box!r}, dropped")
        return None
    x1, y1, x2, y2 = (float(v) for v in raw_box)
    if x1 > x2 or y1 > y2:
        problems.append(f"{name}: inverted box {raw_box}, dropped")
        return None
    if x1 == x2 or y1 == y2:
        problems.append(f"{name}: empty box {raw_box}, dropped")
        return None
    width, height = frame_size
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        problems.append(f"{name}: box {raw_box} lies outside the {width}x{height} frame, dropped")
        return None
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        problems.append(f"{name}: box {raw_box} reaches past the {width}x{height} frame")
    box = Box(x1, y1, x2, y2)

    extra = sorted(set(item) - {"bbox_2d", "points"})
    if extra:
        problems.append(f"{name}: ignored unexpected keys {extra}")
    if not expect_points:
        if "points" in item:
            problems.append(f"{name}: 'points' are not asked for in this stage, ignored")
        return Target(box)
    return Target(box, _parse_points(item.get("points"), box, name, problems))


def _parse_points(raw: Any, box: Box, name: str, problems: list[str]) -> tuple[Point, ...]:
    if raw is None:
        problems.append(f"{name}: no 'points'; the box is used alone")
        return ()
    if not isinstance(raw, list):
        problems.append(f"{name}: 'points' is not a list, ignored")
        return ()
    points = []
    for j, raw_point in enumerate(raw):
        ok = isinstance(raw_point, list) and len(raw_point) == 2 and all(map(is_number, raw_point))
        if not ok:
            problems.append(f"{name}: point {j} must be [x, y], got {raw_point!r}, dropped")
            continue
        x, y = float(raw_point[0]), float(raw_point[1])
        if not (box.x1 <= x <= box.x2 and box.y1 <= y <= box.y2):
            problems.append(f"{name}: point {j} {raw_point} is outside its box, dropped")
            continue
        points.append(Point(x, y))
    return tuple(points)
