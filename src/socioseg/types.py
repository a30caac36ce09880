"""Small value types shared across socioseg.

Coordinate frames (stated once, used everywhere):

- **image frame**: pixels of an image as the user supplied it (the satellite image's own
  width x height). Final masks and reported boxes/points live here.
- **VLM frame**: pixels of the image after the Qwen-VL ``smart_resize`` (multiples of the
  policy family's patch x merge: 28 for Qwen2.5-VL, 32 for Qwen3-VL and Qwen3.5). The
  segmenter works in it (it embeds the satellite image resized to this frame, as the released
  system does). Qwen2.5-VL reads and writes absolute coordinates in this frame.
- **relative frame**: 0-1000 on each axis, the coordinates Qwen3-VL and Qwen3.5 answer in;
  parsed answers are moved from it to the VLM frame before anything uses them.

All boxes are XYXY ``(x1, y1, x2, y2)``; points are ``(x, y)``. Boxes parsed from model output
keep the values the model wrote (possibly inverted or outside the image), as SAM2 receives them.
Conversions between frames go through :class:`socioseg.geometry.Frames` only.
Masks are ``H x W`` ``bool`` numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

Mode = Literal["two-stage", "stage1", "single-stage"]
MODES: tuple[str, ...] = ("two-stage", "stage1", "single-stage")
# A baseline beside the method's modes: SAM 3's concept segmenter given the query text alone
# (no VLM, no map; socioseg.models.concept). Its eval report row is named so.
CONCEPT_MODE = "sam3-concept"

Level = Literal["socio-name", "socio-class", "socio-function", "unknown"]
# Bounds of sizes, one set whether a value comes from a command-line flag or a config file:
# an upper bound keeps a typo from asking for more memory or time than any machine has.
MAX_BATCH_SIZE = 1024
MAX_NEW_TOKENS = 32768
MAX_STEPS = 10_000_000

LEVELS: tuple[str, ...] = ("socio-name", "socio-class", "socio-function", "unknown")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, XYXY, in the frame named by whoever holds it."""

    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True)
class Point:
    """A point ``(x, y)`` in the frame named by whoever holds it."""

    x: float
    y: float

    def as_list(self) -> list[float]:
        return [self.x, self.y]


@dataclass(frozen=True)
class Target:
    """One object the model asked for: a box and zero or more positive points (same frame)."""

    box: Box
    points: tuple[Point, ...] = ()


@dataclass(frozen=True)
class ParsedAnswer:
    """What was usable in one model response, and why the rest was not.

    ``answer_text`` is the stripped text between ``<answer>`` and ``</answer>`` (``""`` when the
    tags are missing). ``targets`` are in the VLM frame: the objects SAM2 is given. ``problems``
    are human-readable reasons for everything skipped and for odd values that were kept; an
    empty tuple means the answer was used in full and nothing looked odd.
    """

    answer_text: str
    targets: tuple[Target, ...]
    problems: tuple[str, ...] = ()
    has_think: bool = False


@dataclass(frozen=True)
class StageResult:
    """One VLM stage: its raw response, the parse, and the SAM mask made from it.

    ``mask``: H x W bool in the satellite image frame. ``targets_image`` are the parsed targets
    mapped to the satellite image frame (what users and files see). ``sam_scores``: SAM's
    predicted IoU of each target's kept mask, in target order (empty when not measured).
    ``mean_logprob``: mean log-probability per token of the response under the policy
    (``None`` when not measured); both serve as confidences.
    """

    name: str
    prompt_text: str
    response: str
    parsed: ParsedAnswer
    targets_image: tuple[Target, ...]
    mask: np.ndarray
    sam_scores: tuple[float, ...] = ()
    mean_logprob: float | None = None


@dataclass(frozen=True)
class Prediction:
    """The result of one ``SocioReasoner.segment`` call.

    ``mask``: H x W bool, the final mask in the satellite image frame. ``stage1`` always holds the
    localisation stage (for ``single-stage`` it is the only stage); ``stage2`` is ``None`` unless
    the mode is ``two-stage``. ``feedback_map`` / ``feedback_sat`` are the rendered stage-2 inputs
    (VLM frame). ``final_source`` says where the final mask came from: ``"stage2"``, ``"stage1"``
    (mode ``stage1``), ``"single-stage"``, ``"empty"`` (stage 2 gave no usable object, the
    released behaviour) or ``"stage1-fallback"`` (the same case with the fallback option on).
    """

    query: str
    mode: str
    mask: np.ndarray
    stage1: StageResult
    stage2: StageResult | None
    image_size: tuple[int, int]
    vlm_size: tuple[int, int]
    final_source: str
    feedback_map: Image.Image | None = None
    feedback_sat: Image.Image | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def stage1_mask(self) -> np.ndarray:
        return self.stage1.mask


class InputError(ValueError):
    """An input image or query that cannot be used; the message names it and says why."""
