"""The prompt texts: the only place they live.

The released checkpoint was trained on exactly these strings (missing spaces after full stops,
'...' quoting in stage 1 and "..." in stage 2, the stage-2 example's missing bracket and all).
Do not edit them: a changed character changes the model's behaviour.

Every policy family (:mod:`socioseg.models.families`) gets these same strings. The placeholders
in the answer examples (``bx1``, ``px1``, ...) name no convention; each family answers in the
one it was pre-trained on, and the engine converts through :class:`socioseg.geometry.Frames`:

- Qwen2.5-VL (the released checkpoint): absolute pixels of the VLM frame (the resized image,
  sides multiples of 28);
- Qwen3-VL and Qwen3.5: relative coordinates, 0-1000 on each axis with the origin at the top
  left (``x_pixels = x * W / 1000``), whatever the image size. Stage 2 quotes the stage-1
  answer verbatim, so its boxes stay in the same convention.

Rewards are computed after conversion to the VLM frame, so their thresholds mean the same for
every family.
"""

from __future__ import annotations

import re

STAGE1_ANSWER_EXAMPLE = '[{"bbox_2d": [bx1,by1,bx2,by2]}, {"bbox_2d": [bx3,by3,bx4,by4]}]'

POINTS_ANSWER_EXAMPLE = (
    '[{"bbox_2d": [bx1,by1,bx2,by2], "points": [[px1,py1],[px2,py2],[px3,py3]]}, '
    '{"bbox_2d": [bx3,by3,bx4,by4], "points": [[px4,py4],[px5,py5],[px6,py6]}]'
)

_INTRO = (
    "You will be given two images. The first is a map and the second is a corresponding "
    "satellite image."
)
_COMPARE = "Compare the difference between object(s) and find the most closely matched object(s)."

STAGE1_TEMPLATE = (
    _INTRO + "Please find '{query}' with bboxs." + _COMPARE + "Output the thinking process in "
    "<think> </think> and final answer in <answer> </answer> tags. Please use English.Output the "
    "bbox(es) in JSON format.i.e., <think>thinking process here </think><answer>{answer}</answer>"
)

STAGE2_TEMPLATE = (
    _INTRO + 'Now some bbox(s) and the results after SAM segmentation for "{query}" have been '
    "rendered on these two images.The found bbox(s) are: {boxes}.Please add some points "
    "appropriately to each bbox to better represent the area of interest.Output the thinking "
    "process in <think> </think> and final answer in <answer> </answer> tags.i.e., <think> "
    "thinking process here </think><answer>{answer}</answer>"
)

SINGLE_STAGE_TEMPLATE = (
    _INTRO + "Please find '{query}' with bboxs and some points appropriately to each bbox to "
    "better represent the area of interest." + _COMPARE + "Output the thinking process in "
    "<think> </think> and final answer in <answer> </answer> tags. Please use English.Output the "
    "bbox(es) in JSON format.i.e., <think>thinking process here </think><answer>{answer}</answer>"
)


def _fill(template: str, **values: str) -> str:
    # One pass over the template, not str.format: queries and answers may hold braces, and a
    # query that contains "{answer}" must not be filled in again.
    return re.sub(r"\{(query|boxes|answer)\}", lambda m: values[m.group(1)], template)


def stage1_text(query: str) -> str:
    """User text of stage 1 (localise with boxes), before the chat template."""
    return _fill(STAGE1_TEMPLATE, query=query, answer=STAGE1_ANSWER_EXAMPLE)


def stage2_text(query: str, boxes_text: str) -> str:
    """User text of stage 2 (add points); ``boxes_text`` is the stage-1 answer text verbatim."""
    return _fill(STAGE2_TEMPLATE, query=query, boxes=boxes_text, answer=POINTS_ANSWER_EXAMPLE)


def single_stage_text(query: str) -> str:
    """User text of the single-stage baseline (boxes and points in one answer)."""
    return _fill(SINGLE_STAGE_TEMPLATE, query=query, answer=POINTS_ANSWER_EXAMPLE)


def chat_messages(text: str) -> list[dict]:
    """The chat of one stage: the map image, the satellite image, then the text."""
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}],
        }
    ]
