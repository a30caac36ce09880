"""Model text -> :class:`~socioseg.types.ParsedAnswer`. Total: never raises on model output.

The model answers ``<think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y],
...]}, ...]</answer>`` with absolute coordinates in the VLM frame. :func:`parse_answer` keeps
exactly the objects the released system hands SAM2, values as given; everything skipped or odd
is reported in ``ParsedAnswer.problems``; nothing is repaired. Every scan is linear in the
length of the response (``str.find``, no backtracking pattern).
"""

from __future__ import annotations

import json
import math
from typing import Any

from socioseg.types import Box, ParsedAnswer, Point, Target

# Strings the released reward code strips from a response before scoring it.
SPECIAL_STRINGS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "<pad>")

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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


def parse_answer(response: str, frame_size: tuple[int, int]) -> ParsedAnswer:
    """Parse one stage's response into the objects the released system hands SAM2.

    One rule for every stage (SPEC, "The SAM side, exactly as released"): the text between the
    first ``<answer>`` and the next ``</answer>``, stripped, read with ``json.loads``; anything
    but a JSON list gives no objects (a lone object is not wrapped, single quotes are not
    repaired). Per element, in order: skipped unless a JSON object; ``box =
    obj.get("bbox_2d", [])``; ``points = [[p[0], p[1]] for p in obj.get("points", [])]``,
    skipped if that fails; kept iff ``box`` is a list of 4 and every box and point value is one
    SAM takes as a number (an int within int64, a float, a bool as 0/1), else skipped.

    Args:
        response: raw decoded model text.
        frame_size: ``(width, height)`` of the VLM frame the coordinates refer to; used only to
            report boxes that leave it.

    Returns:
        ``ParsedAnswer`` whose targets are the kept objects in answer order, with their values
        as given (inverted, empty and out-of-frame boxes and points outside their box are kept
        and reported in ``problems``, as is every skipped element with its reason).
    """
    has_think = _has_think(response)
    body = answer_text(response)
    if body is None:
        reason = "no <answer>...</answer> in the response"
        if _ANSWER_OPEN in response:
            reason = "<answer> is not closed (truncated response?)"
        return ParsedAnswer("", (), (reason,), has_think)
    data, error = _load_json(body)
    if error is not None:
        hint = " (single quotes are not JSON)" if "'" in body else ""
        return ParsedAnswer(body, (), (f"answer is not valid JSON ({error}){hint}",), has_think)
    if not isinstance(data, list):
        kind = "a single object" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        problems = (f"answer is {kind}, not a list of objects: nothing is segmented",)
        return ParsedAnswer(body, (), problems, has_think)
    problems: list[str] = []
    targets = []
    for index, item in enumerate(data):
        target = _parse_item(item, f"object {index}", problems)
        if target is not None:
            _report_odd_values(target, f"object {index}", frame_size, problems)
            targets.append(target)
    return ParsedAnswer(body, tuple(targets), tuple(problems), has_think)


def _has_think(text: str) -> bool:
    """Whether ``<think>...</think>`` occurs (a linear scan, same as a non-greedy search)."""
    start = text.find(_THINK_OPEN)
    return start >= 0 and text.find(_THINK_CLOSE, start + len(_THINK_OPEN)) >= 0


def _sam_number(value: Any) -> bool:
    """Whether SAM2's prompt tensors take ``value``: a bool, a float, an int within int64."""
    if isinstance(value, bool | float):
        return True
    return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX


def _parse_item(item: Any, name: str, problems: list[str]) -> Target | None:
    """The released per-element rule; None (and a problem) when the element is skipped."""
    if not isinstance(item, dict):
        problems.append(f"{name}: not a JSON object, skipped")
        return None
    raw_box = item.get("bbox_2d", [])
    raw_points = item.get("points", [])
    try:
        pairs = [[p[0], p[1]] for p in raw_points]
    except (TypeError, IndexError, KeyError):
        problems.append(f"{name}: 'points' is not a list of [x, y] pairs ({raw_points!r}), skipped")
        return None
    if not (isinstance(raw_box, list) and len(raw_box) == 4):
        problems.append(f"{name}: 'bbox_2d' must be a list of 4 numbers, got {raw_box!r}, skipped")
        return None
    for value in [*raw_box, *(v for pair in pairs for v in pair)]:
        if not _sam_number(value):
            problems.append(f"{name}: {value!r} is not a number SAM2 can take, skipped")
            return None
    extra = sorted(set(item) - {"bbox_2d", "points"})
    if extra:
        problems.append(f"{name}: ignored unexpected keys {extra}")
    if any(len(p) > 2 for p in raw_points):
        problems.append(f"{name}: a point has more than 2 values; its first two are used")
    box = Box(*(float(v) for v in raw_box))
    return Target(box, tuple(Point(float(x), float(y)) for x, y in pairs))


def _report_odd_values(target: Target, name: str, frame: tuple[int, int], problems: list[str]):
    """Add a problem for each odd but kept value: SAM2 gets it as given."""
    box = target.box
    values = [*box.as_list(), *(v for p in target.points for v in p.as_list())]
    if not all(math.isfinite(v) for v in values):
        problems.append(f"{name}: non-finite coordinate (NaN or infinity), given to SAM2 as is")
        return
    if box.x1 > box.x2 or box.y1 > box.y2:
        problems.append(f"{name}: inverted box {box.as_list()}, given to SAM2 as is")
    elif box.x1 == box.x2 or box.y1 == box.y2:
        problems.append(f"{name}: empty box {box.as_list()}, given to SAM2 as is")
    width, height = frame
    left, right = sorted((box.x1, box.x2))
    top, bottom = sorted((box.y1, box.y2))
    if right <= 0 or bottom <= 0 or left >= width or top >= height:
        problems.append(f"{name}: box {box.as_list()} lies outside the {width}x{height} frame")
    elif left < 0 or top < 0 or right > width or bottom > height:
        problems.append(f"{name}: box {box.as_list()} reaches past the {width}x{height} frame")
    for j, p in enumerate(target.points):
        if not (left <= p.x <= right and top <= p.y <= bottom):
            problems.append(f"{name}: point {j} {p.as_list()} is outside its box")
