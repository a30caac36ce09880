"""Which names an OSM map shows, and where: chosen by rank like a web map, none overlapping.

SocioSeg's maps (and the synthetic ones the models also learn from) label every entity a query
can be about, plus a few minor POIs per tile; a dense city centre in OSM has hundreds of named
shops and cafés per tile. So labels are:

1. Ranked: named areas of a SocioSeg class (the query targets: schools, hospitals, parks,
   stations, malls, ...) first, then other named areas, then POI nodes of a SocioSeg class,
   then the rest; within each tier larger areas first, then features with more importance tags
   (``wikidata``, ``wikipedia``, ``tourism=attraction``, ``heritage``), then by name.
2. Thinned to the synthetic maps' density: besides the query targets, each 384 m x 384 m cell
   (one SocioSeg tile of 768 px at 0.5 m) shows at most :data:`OTHERS_PER_TILE` labels, the
   synthetic maps' mean of minor labels per tile; a cell partly off the raster gets that
   number times the share of it on the raster, rounded up. A name already shown within half a
   cell is not repeated.
3. Placed at the first of eight spots around the pin (right, left, below, above, then the
   diagonals) where the text lies wholly inside the image and overlaps no text or pin already
   placed (the pin must be free and inside too); a label with no such spot is left out, pin
   and all.
4. Drawn in the first font of the chain that has every glyph (:mod:`socioseg.region.fonts`);
   a label no font can draw is left out.

Query targets and POIs of a SocioSeg class are drawn as the synthetic maps' entities (pin and
text in the category colour, 13 px text at 0.5 m); the rest as their minor POIs (grey, 11 px).
Every label left out is counted by reason in the :class:`LabelReport`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from PIL import ImageDraw

from socioseg.data.synth.paint import Label, draw_label, halo_width, label_font_size, pin_box
from socioseg.region.fonts import FontChain

OTHERS_PER_TILE = 3  # synthetic maps: 2.97 minor labels drawn per 768-px tile (300 tiles)
TILE_PX = 768  # a SocioSeg tile's side at scale s = 1 (0.5 m per pixel: 384 m)
MINOR_PIN = (150, 150, 150)  # the synthetic maps' minor POI pin
IMPORTANCE_TAGS = ("wikidata", "wikipedia", "heritage")
LEFT_OUT_REASONS = ("no font", "density", "no room", "repeated")


class Poi(NamedTuple):
    """A named OSM feature: WGS-84 ``lon``, ``lat`` of its pin, its label and urban function.

    ``area_m2``: ground area of a named area (0 for a node); ``socio_class``: the SocioSeg
    class its tags name (``None``: none); ``importance``: how many importance tags it has.
    """

    lon: float
    lat: float
    name: str
    function: str
    area_m2: float = 0.0
    socio_class: str | None = None
    importance: int = 0

    @property
    def is_target(self) -> bool:
        """A named area of a SocioSeg class: what a query may ask for."""
        return self.area_m2 > 0 and self.socio_class is not None


def importance(tags) -> int:
    """How many of the importance tags (see the module docstring) ``tags`` carry."""
    return sum(key in tags for key in IMPORTANCE_TAGS) + (tags.get("tourism") == "attraction")


def rank_key(poi: Poi) -> tuple:
    """Sort key: lower first (the module docstring's order)."""
    tier = 0 if poi.is_target else 1 if poi.area_m2 > 0 else 2 if poi.socio_class is not None else 3
    return (tier, -poi.area_m2, -poi.importance, poi.name, poi.lon, poi.lat)


@dataclass(frozen=True)
class PlacedLabel:
    """A drawn label: text drawn at ``xy`` with anchor ``"lm"`` in ``font`` (file, face,
    size; file ``None`` for Pillow's bundled font); ``box`` its text box with halo and
    ``pin`` its pin box, both ``(x0, y0, x1, y1)`` image pixels."""

    text: str
    xy: tuple[float, float]
    font: tuple[str | None, int, int]
    box: tuple[float, float, float, float]
    pin: tuple[float, float, float, float]
    target: bool


@dataclass
class LabelReport:
    """What the labelling did: ``on_map`` named POIs with their pin on the image, the labels
    ``placed``, counts of those ``left_out`` by reason, and the query targets among them."""

    on_map: int = 0
    placed: list[PlacedLabel] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFT_OUT_REASONS, 0))
    targets: int = 0
    targets_placed: int = 0

    def line(self) -> str:
        """One line for the map summary."""
        out = ", ".join(f"{n} {why}" for why, n in self.left_out.items() if n)
        return (
            f"labels: {len(self.placed)} of {self.on_map} named places shown "
            f"({self.targets_placed} of {self.targets} query-target areas)"
            + (f"; left out: {out}" if out else "")
        )


def place_map_labels(
    draw: ImageDraw.ImageDraw,
    pois: list[tuple[tuple[float, float], Poi]],
    size: tuple[int, int],
    s: float,
    fonts: FontChain,
) -> LabelReport:
    """Choose, place and draw labels (module docstring) on an image of ``size`` (W, H).

    ``pois``: ``(pin position in image pixels (x right, y down), Poi)``; ``s``: the map's
    scale relative to SocioSeg's 0.5 m per pixel (sizes and the density cell grow with it).
    """
    report = LabelReport()
    cell = TILE_PX * s
    budgets: dict[tuple[int, int], int] = {}
    labels = [
        (Label(at, poi.name, _pin_color(poi), major=poi.socio_class is not None), poi)
        for at, poi in sorted(pois, key=lambda item: rank_key(item[1]))
    ]
    labels = [(label, poi) for label, poi in labels if _inside(pin_box(label, s), size)]
    # The targets' pins are kept free from the start, so no text covers a target still to come.
    reserved = [pin_box(label, s) for label, poi in labels if poi.is_target]
    taken: list[tuple[float, float, float, float]] = []
    shown: dict[str, list[tuple[float, float]]] = {}
    for label, poi in labels:
        at, pin = label.at, pin_box(label, s)
        report.on_map += 1
        report.targets += poi.is_target
        key = (int(at[0] // cell), int(at[1] // cell))
        if key not in budgets:
            budgets[key] = _cell_budget(key, cell, size)
        size_px = label_font_size(label, s)
        chosen = fonts.font_for(poi.name, size_px)
        face, font = chosen or (None, None)
        reason = None
        if chosen is None:
            reason = "no font"
        elif any(math.dist(at, p) < cell / 2 for p in shown.get(poi.name, ())):
            reason = "repeated"
        elif not poi.is_target and budgets[key] <= 0:
            reason = "density"
        pin_free = not any(_overlap(pin, t) for t in taken)
        spot = None
        if reason is None and pin_free:
            spot = _free_spot(draw, label, font, s, size, taken + reserved)
        if reason is None and spot is None:
            reason = "no room"
        if reason is not None:
            report.left_out[reason] += 1
            continue
        xy, box = spot
        taken += [box, pin]
        shown.setdefault(poi.name, []).append(at)
        budgets[key] -= not poi.is_target
        report.targets_placed += poi.is_target
        draw_label(draw, label, xy, "lm", font, s)
        report.placed.append(PlacedLabel(poi.name, xy, (*face, size_px), box, pin, poi.is_target))
    return report


def _pin_color(poi: Poi) -> tuple[int, int, int]:
    from socioseg.data.synth.catalog import FUNCTION_COLORS

    return FUNCTION_COLORS[poi.function] if poi.socio_class is not None else MINOR_PIN


def _cell_budget(key: tuple[int, int], cell: float, size: tuple[int, int]) -> int:
    """:data:`OTHERS_PER_TILE` times the share of cell ``key`` on the image, rounded up."""
    (i, j), (width, height) = key, size
    inside_w = min(width, (i + 1) * cell) - i * cell
    inside_h = min(height, (j + 1) * cell) - j * cell
    return math.ceil(OTHERS_PER_TILE * inside_w * inside_h / cell**2 - 1e-9)


def _free_spot(draw, label: Label, font, s: float, size, taken):
    """``(xy for anchor "lm", text box)`` of the first free spot around the pin, or None."""
    left, top, right, bottom = draw.textbbox(
        (0, 0), label.text, font=font, stroke_width=halo_width(s), anchor="lm"
    )
    w, h = right - left, bottom - top
    x, y = label.at
    pin = pin_box(label, s)
    gap = (pin[2] - pin[0]) / 2 + 3 * s
    d = gap * 0.7  # diagonal spots: the same gap, at 45 degrees
    corners = (  # top-left corner of the text box at each spot, in order of preference
        (x + gap, y - h / 2),
        (x - gap - w, y - h / 2),
        (x - w / 2, y + gap),
        (x - w / 2, y - gap - h),
        (x + d, y - d - h),
        (x + d, y + d),
        (x - d - w, y - d - h),
        (x - d - w, y + d),
    )
    for bx, by in corners:
        box = (bx, by, bx + w, by + h)
        free = not _overlap(box, pin) and not any(_overlap(box, t) for t in taken)
        if free and _inside(box, size):
            return (bx - left, by - top), box
    return None


def _inside(box, size: tuple[int, int]) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= size[0] and box[3] <= size[1]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
