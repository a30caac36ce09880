"""Teacher answers built from ground-truth masks: what the warm-up (``socioseg sft``) and the
diagnostics (scripts/policy_boxes.py, learning_check.py, position_probe.py) expect a policy to
answer.

Stage 1's teacher answer is the GT boxes; stage 2's re-reads them (or a noisy copy standing for
an imperfect stage 1) and adds points deep inside the GT within each box; the single-stage one
gives the boxes with their points. Numbers are written in the policy family's coordinate
convention, from VLM-frame values moved only by :class:`~socioseg.geometry.Frames`.
"""

from __future__ import annotations

import json

import numpy as np

from socioseg import prompts
from socioseg.engine import Prompt, vlm_images
from socioseg.geometry import Frames
from socioseg.models.families import QWEN2_5_VL, AnswerFrame, PolicyFamily
from socioseg.render import feedback_images
from socioseg.train.rewards import gt_boxes_from_mask

POINTS_PER_BOX = 2
STAGE_KINDS = ("stage1", "stage2", "single")  # teacher_examples' order


def teacher_boxes(mask: np.ndarray, frames: Frames) -> list[list[int]]:
    """GT boxes of ``mask`` (image frame) as integer XYXY in the VLM frame."""
    return _vlm_boxes(_image_boxes(mask), frames)


def _image_boxes(mask: np.ndarray) -> np.ndarray:
    return np.asarray(gt_boxes_from_mask(mask), dtype=float).reshape(-1, 4)


def _vlm_boxes(image_boxes: np.ndarray, frames: Frames) -> list[list[int]]:
    return np.rint(frames.points_array(image_boxes, "image", "vlm")).astype(int).tolist()


def _boxes_json(boxes: list[list[int]], frames: Frames, frame: AnswerFrame = "vlm") -> str:
    return _answer_json([{"bbox_2d": b} for b in boxes], frames, frame)


def _answer_json(objects: list[dict], frames: Frames, frame: AnswerFrame) -> str:
    """Answer objects (VLM-frame integers) as JSON in the family's convention ``frame``
    (relative: 0-1000 integers, moved by ``Frames``)."""
    if frame != "vlm":

        def moved(values: list) -> list:
            xy = np.asarray(values, dtype=float).reshape(-1, 2)
            return np.rint(frames.points_array(xy, "vlm", frame)).astype(int).tolist()

        objects = [
            {
                key: [v for pair in moved(value) for v in pair]
                if key == "bbox_2d"
                else moved(value)
                for key, value in obj.items()
            }
            for obj in objects
        ]
    return json.dumps(objects)


def teacher_points(
    mask: np.ndarray, box_image: list[float], box_vlm: list[int], frames: Frames
) -> list[list[int]]:
    """Up to two points deep inside the mask within its box, in the VLM frame.

    ``box_image`` / ``box_vlm``: the same GT box in the image and VLM frames. Points are strictly
    inside ``box_vlm`` (the stage-2 reward's rule), so boxes too thin for that get none.
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_image)
    crop = np.ascontiguousarray(mask[y1:y2, x1:x2], dtype=np.uint8)
    if crop.size == 0 or not crop.any():
        return []
    # A background border, so that depth also counts the distance to the box's edges.
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1].copy()
    points = []
    for _ in range(POINTS_PER_BOX):
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        if depth[y, x] <= 0:
            break
        points.append([x + x1 + 0.5, y + y1 + 0.5])
        cv2.circle(depth, (int(x), int(y)), max(2, int(depth[y, x])), 0, -1)
    bx1, by1, bx2, by2 = box_vlm
    if not points or bx2 - bx1 < 2 or by2 - by1 < 2:
        return []
    vlm = np.rint(frames.points_array(np.asarray(points, dtype=float), "image", "vlm"))
    vlm[:, 0] = vlm[:, 0].clip(bx1 + 1, bx2 - 1)  # rounding must not land on the edge
    vlm[:, 1] = vlm[:, 1].clip(by1 + 1, by2 - 1)
    return vlm.astype(int).tolist()


def noisy_boxes(
    rng: np.random.Generator, boxes: list[list[int]], noise: float, size: tuple[int, int]
) -> list[list[int]]:
    """``boxes`` (VLM frame) with each coordinate moved by up to ``noise`` of the box's side.

    Clipped to the ``size`` = (width, height) frame; a box keeps at least 4 px per side, so
    that points can lie strictly inside it.
    """
    width, height = size
    out = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        shift = rng.uniform(-noise, noise, 4) * np.array([w, h, w, h])
        a, b, c, d = np.rint(np.array([x1, y1, x2, y2]) + shift).astype(int).tolist()
        a, b = min(max(a, 0), width - 4), min(max(b, 0), height - 4)
        out.append([a, b, min(max(c, a + 4), width), min(max(d, b + 4), height)])
    return out


def teacher_think(said: str, quote: str | None = None) -> str:
    """The reasoning a teacher answer opens with: what the map labels, ``said`` (the query, or
    for a name its target's class). With ``quote`` it is written between two of them, as the
    prompt quotes the query (stage 1 ``'Heping Park'``, stage 2 ``"Heping Park"``), so that the
    reasoning repeats the prompt's very tokens: after a space alone the tokenizer splits many
    names otherwise (`` Heping``, one token, where the prompt has ``He``, ``ping``)."""
    if quote is None:
        return f"<think>The map labels {said}; its outline is visible on the image.</think>"
    written = f"{quote}{said}{quote}"
    return f"<think>The map labels {written} and its outline is visible on the image.</think>"


def teacher_examples(
    sample,
    min_pixels: int,
    max_pixels: int,
    rng: np.random.Generator | None = None,
    box_noise: float = 0.0,
    single_stage: bool = False,
    family: PolicyFamily = QWEN2_5_VL,
    snap: bool = False,
    decoy: np.ndarray | None = None,
    quoted_think: bool = False,
    class_for_names: bool = False,
) -> list[tuple[Prompt, str]]:
    """(prompt, answer) pairs for both stages of one sample (objects with sat, map, mask).

    Stage 1's answer is the GT boxes. Stage 2's prompt draws the boxes a stage 1 gave, with
    the GT pixels inside them as the coarse mask: the GT boxes, or with ``rng`` and
    ``box_noise`` a noisy copy of them (:func:`noisy_boxes`, standing for an imperfect stage
    1). Its answer copies the drawn boxes and adds points deep inside the GT within each; with
    ``snap`` it answers the GT boxes and their points instead (stage 2 corrects the drawn
    boxes). ``decoy``: a mask (image frame) of another entity of the same images, which stage
    2 then draws in place of the GT (a stage 1 that found the wrong entity; its pixels are the
    coarse mask) and which the answer, the GT boxes with their points, moves away from. With
    ``single_stage`` a third example asks the single-stage prompt, answered with the GT boxes
    and their points. Answers are written in the policy ``family``'s coordinate convention
    (Qwen3-VL: relative 0-1000), from the VLM-frame values.
    """
    frames = Frames.for_image(sample.sat.size, min_pixels, max_pixels, family.factor)
    frame = family.answer_frame
    mask = np.asarray(sample.mask, dtype=bool)
    images = vlm_images(sample.sat, sample.map, frames)
    gt_image = _image_boxes(mask)
    boxes = _vlm_boxes(gt_image, frames)
    drawn_mask, drawn_image, drawn = mask, gt_image, boxes
    if decoy is not None:
        drawn_mask = np.asarray(decoy, dtype=bool)
        drawn_image = _image_boxes(drawn_mask)
        drawn = _vlm_boxes(drawn_image, frames)
    coarse = drawn_mask
    if rng is not None and box_noise > 0:
        drawn = noisy_boxes(rng, drawn, box_noise, images[0].size)
        drawn_image = frames.points_array(np.asarray(drawn, float).reshape(-1, 4), "vlm", "image")
        inside = np.zeros_like(drawn_mask)
        for x1, y1, x2, y2 in np.rint(drawn_image).astype(int).clip(0):
            inside[y1:y2, x1:x2] = True
        coarse = drawn_mask & inside

    def with_points(vlm_boxes: list[list[int]], image_boxes: np.ndarray) -> str:
        return _answer_json(
            [
                {"bbox_2d": b, "points": teacher_points(mask, ib, b, frames)}
                for b, ib in zip(vlm_boxes, image_boxes.tolist(), strict=True)
            ],
            frames,
            frame,
        )

    if snap or decoy is not None:
        answered, stage2_answer = boxes, with_points(boxes, gt_image)
    else:
        answered, stage2_answer = drawn, with_points(drawn, drawn_image)
    texts = [
        prompts.stage1_text(sample.query),
        prompts.stage2_text(sample.query, _boxes_json(drawn, frames, frame)),
    ]
    if single_stage:
        texts.append(prompts.single_stage_text(sample.query))

    named = class_for_names and sample.level == "socio-name" and sample.socio_class
    said = sample.socio_class if named else sample.query

    def opened(text: str, body: str) -> str:
        quote = text[text.find(sample.query) - 1] if quoted_think else None
        return f"{teacher_think(said, quote)}<answer>{body}</answer>"

    examples = [
        (Prompt(texts[0], images), opened(texts[0], _boxes_json(boxes, frames, frame))),
        (
            Prompt(texts[1], feedback_images(*images, drawn, coarse)),
            opened(texts[1], stage2_answer),
        ),
    ]
    if single_stage:  # the GT boxes with their points: stage 2's answer if it gives them
        answer = stage2_answer if answered is boxes else with_points(boxes, gt_image)
        examples.append((Prompt(texts[2], images), opened(texts[2], answer)))
    return examples
