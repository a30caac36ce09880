"""Render one synthetic tile twice: as a web map and as a satellite photo, same geometry."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from socioseg.data.synth.city import Part, Poly, Region, Road

# --- the web map ----------------------------------------------------------------------------

MAP_BACKGROUND = (243, 241, 236)
MAP_FILL = {
    "generic": (234, 231, 224),
    "green": (214, 236, 196),
    "bare": (238, 234, 222),
    "water": (170, 211, 223),
    "residential": (232, 228, 232),
    "office": (236, 232, 244),
    "hotel": (248, 232, 226),
    "hospital": (252, 226, 226),
    "government": (238, 234, 246),
    "campus": (255, 246, 216),
    "park": (200, 232, 178),
    "plaza": (240, 238, 232),
    "stadium": (222, 242, 228),
    "pitch": (222, 242, 228),
    "museum": (246, 236, 222),
    "mall": (250, 230, 222),
    "station": (232, 232, 240),
    "depot": (232, 232, 240),
    "factory": (236, 224, 234),
}
MAP_PART = {
    "water": (170, 211, 223),
    "lawn": (205, 235, 176),
    "plaza": (247, 246, 242),
    "paved": (247, 246, 242),
    "parking": (236, 236, 236),
    "building": (217, 208, 201),
    "track": (232, 190, 170),
    "field": (170, 224, 190),
    "pitch": (150, 214, 176),
    "court": (180, 214, 220),
}
BUILDING_OUTLINE = (194, 184, 175)
ROAD_FILL = {True: (252, 214, 138), False: (255, 255, 255)}
ROAD_CASING = {True: (222, 176, 96), False: (210, 204, 194)}
TEXT_HALO = (255, 255, 255)


@dataclass(frozen=True)
class Label:
    """A POI pin and its name at ``at`` (tile pixels); ``color`` is the category colour."""

    at: tuple[float, float]
    text: str
    color: tuple[int, int, int]
    major: bool = True


@lru_cache(maxsize=8)
def _font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (Latin script), or the TrueType/OpenType font at ``path``."""
    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


def render_map(
    size: int, regions: list[Region], roads: list[Road], labels: list[Label]
) -> Image.Image:
    return draw_map(size, regions, roads, labels)[0]


def draw_map(
    size: int, regions: list[Region], roads: list[Road], labels: list[Label]
) -> tuple[Image.Image, list[PlacedLabel]]:
    """The web map of a tile and where its labels went (:func:`place_labels`)."""
    s = size / 768
    image = Image.new("RGB", (size, size), MAP_BACKGROUND)
    draw = ImageDraw.Draw(image)
    for region in regions:
        draw.polygon(region.poly, fill=MAP_FILL[region.style])
    for region in regions:
        for part in region.parts:
            _map_part(draw, part, s)
    paint_roads(draw, [RoadLine([road.p0, road.p1], road.width, road.major) for road in roads], s)
    return image, place_labels(draw, labels, (size, size), s)


@dataclass(frozen=True)
class PlacedLabel:
    """A label as drawn: ``box`` is its text's ``(x0, y0, x1, y1)`` in image pixels (halo
    included), ``first_word`` the part of that box that holds the text's first word."""

    label: Label
    box: tuple[float, float, float, float]
    first_word: tuple[float, float, float, float]


@dataclass(frozen=True)
class RoadLine:
    """A road as a polyline in image pixels, ``width`` pixels wide; major roads are yellow."""

    points: Poly
    width: float
    major: bool


def paint_roads(draw: ImageDraw.ImageDraw, roads: list[RoadLine], s: float) -> None:
    """Web-map roads: a casing 3 ``s`` wider under each fill, minor roads below major ones.

    ``s``: the map's scale relative to a 768-px SocioSeg tile (line and text sizes grow with it).
    """
    for major in (False, True):
        for road in roads:
            if road.major == major:
                width = round(road.width + 3 * s)
                draw.line(road.points, fill=ROAD_CASING[major], width=width, joint="curve")
        for road in roads:
            if road.major == major:
                width = round(road.width)
                draw.line(road.points, fill=ROAD_FILL[major], width=width, joint="curve")


def paint_area(
    image: Image.Image,
    exterior: Poly,
    holes: list[Poly],
    fill: tuple[int, int, int],
    outline: tuple[int, int, int] | None = None,
) -> None:
    """Fill a polygon (image pixels) with holes left unpainted; ``outline`` traces its rings."""
    draw = ImageDraw.Draw(image)
    if not holes:
        draw.polygon(exterior, fill=fill, outline=outline)
        return
    stencil = Image.new("L", image.size, 0)
    pen = ImageDraw.Draw(stencil)
    pen.polygon(exterior, fill=255)
    for hole in holes:
        pen.polygon(hole, fill=0)
    image.paste(fill, mask=stencil)
    if outline is not None:
        for ring in (exterior, *holes):
            draw.line([*ring, ring[0]], fill=outline, width=1)


def _map_part(draw: ImageDraw.ImageDraw, part: Part, s: float) -> None:
    if part.kind == "building":
        draw.polygon(part.poly, fill=MAP_PART["building"], outline=BUILDING_OUTLINE)
    elif part.kind in MAP_PART:
        draw.polygon(part.poly, fill=MAP_PART[part.kind])
    elif part.kind == "path":
        draw.line(part.poly, fill=(255, 255, 255), width=max(1, round(part.size * 0.8)))
    elif part.kind == "rail":
        draw.line(part.poly, fill=(160, 160, 168), width=max(1, round(2 * s)))


def place_labels(
    draw: ImageDraw.ImageDraw,
    labels: list[Label],
    size: tuple[int, int],
    s: float,
    font_path: str | None = None,
) -> list[PlacedLabel]:
    """Draw pins and names; names go right, left, below or above their pin, avoiding overlaps.

    ``size``: the image's ``(width, height)``; ``s``: scale relative to a 768-px tile;
    ``font_path``: a font file for scripts Pillow's bundled font lacks (e.g. Chinese).
    Entity labels are placed first; a minor label with no free spot is left out, as web maps do.
    Returns the labels drawn, in the order drawn, with where their text lies.
    """
    labels = sorted(labels, key=lambda lb: not lb.major)
    pins = [pin_box(lb, s) for lb in labels]
    taken: list[tuple[float, float, float, float]] = [
        p for p, lb in zip(pins, labels, strict=True) if lb.major
    ]
    placed = []
    for label, pin in zip(labels, pins, strict=True):
        x, y = label.at
        r = (pin[2] - pin[0]) / 2
        font = _font(label_font_size(label, s), font_path)
        halo = halo_width(s)
        left, top, right, bottom = draw.textbbox(
            (0, 0), label.text, font=font, stroke_width=halo, anchor="lm"
        )
        w, h, gap = right - left, bottom - top, r + 3 * s
        spots = [
            ((x + gap, y), "lm", (x + gap, y - h / 2, x + gap + w, y + h / 2)),
            ((x - gap, y), "rm", (x - gap - w, y - h / 2, x - gap, y + h / 2)),
            ((x, y + gap), "mt", (x - w / 2, y + gap, x + w / 2, y + gap + h)),
            ((x, y - gap), "mb", (x - w / 2, y - gap - h, x + w / 2, y - gap)),
        ]
        free = [
            sp
            for sp in spots
            if _inside(sp[2], size) and not any(_overlap(sp[2], b) for b in taken)
        ]
        if not free and not label.major:
            continue
        if not free:
            free = [
                min(
                    spots,
                    key=lambda sp: (
                        sum(_overlap_area(sp[2], b) for b in taken) - 1e6 * _inside(sp[2], size)
                    ),
                )
            ]
        xy, anchor, box = free[0]
        taken += [box] if label.major else [box, pin]
        draw_label(draw, label, xy, anchor, font, s)
        word = draw.textlength(label.text.split()[0], font=font) + 2 * halo
        placed.append(PlacedLabel(label, box, (box[0], box[1], min(box[0] + word, box[2]), box[3])))
    return placed


def label_font_size(label: Label, s: float) -> int:
    """Pixel size of a label's text: 13 (major) or 11 (minor) at scale ``s``, at least 8."""
    return max(8, round((13 if label.major else 11) * s))


def halo_width(s: float) -> int:
    """Width in pixels of the white halo around label text at scale ``s``."""
    return max(1, round(2 * s))


def draw_label(
    draw: ImageDraw.ImageDraw,
    label: Label,
    xy: tuple[float, float],
    anchor: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    s: float,
) -> None:
    """Draw a label's pin at ``label.at`` and its text at ``xy`` with Pillow ``anchor``.

    Majors: text in the darkened category colour; minors: grey text and a smaller pin.
    """
    x, y = label.at
    pin = pin_box(label, s)
    r = (pin[2] - pin[0]) / 2
    draw.ellipse(pin, fill=label.color, outline=(255, 255, 255), width=max(1, round(1.5 * s)))
    dot = r * 0.35
    draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=(255, 255, 255))
    color = tuple(int(c * 0.6) for c in label.color) if label.major else (110, 110, 110)
    draw.text(
        xy,
        label.text,
        fill=color,
        font=font,
        anchor=anchor,
        stroke_width=halo_width(s),
        stroke_fill=TEXT_HALO,
    )


def pin_box(label: Label, s: float) -> tuple[float, float, float, float]:
    """The pin's bounding box ``(x0, y0, x1, y1)`` in image pixels: radius 6 ``s`` (major)
    or 4 ``s`` (minor) around ``label.at``."""
    x, y = label.at
    r = (6 if label.major else 4) * s
    return (x - r, y - r, x + r, y + r)


def _inside(box, size: tuple[int, int]) -> bool:
    return box[0] >= 1 and box[1] >= 1 and box[2] <= size[0] - 1 and box[3] <= size[1] - 1


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _overlap_area(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


# --- the satellite photo ----------------------------------------------------------------------

# ground: (RGB base, amplitude of its low/mid-frequency mottling)
GROUNDS: dict[str, tuple[tuple[int, int, int], float]] = {
    "field": ((122, 120, 92), 12),
    "grass": ((92, 112, 66), 10),
    "park": ((60, 86, 48), 14),
    "soil": ((156, 138, 112), 9),
    "paved": ((164, 162, 156), 4),
    "plaza": ((188, 184, 176), 4),
    "asphalt": ((90, 91, 94), 3),
    "sidewalk": ((160, 156, 150), 3),
    "water": ((40, 68, 78), 4),
    "parking": ((104, 104, 107), 2),
    "lawn": ((88, 122, 62), 7),
    "path": ((182, 175, 162), 3),
}
SENSOR_NOISE = 4.0  # std of the per-pixel noise over the finished image
_GROUND_IDS = {name: k for k, name in enumerate(GROUNDS)}
_GROUND_PARTS = ("water", "lawn", "paved", "plaza", "parking")
SHADOW = (0.8, 1.0)  # shadow direction per unit of height (sun in the north-west)


def render_satellite(
    rng: np.random.Generator, size: int, regions: list[Region], roads: list[Road]
) -> Image.Image:
    s = size / 768
    labels = Image.new("L", (size, size), _GROUND_IDS["field"])
    ground = ImageDraw.Draw(labels)
    for region in regions:
        ground.polygon(region.poly, fill=_GROUND_IDS[region.ground])
        for part in region.parts:
            if part.kind in _GROUND_PARTS:
                ground.polygon(part.poly, fill=_GROUND_IDS[part.kind])
            elif part.kind == "path":
                ground.line(part.poly, fill=_GROUND_IDS["path"], width=max(1, round(part.size)))
    for road in roads:
        ground.line(
            [road.p0, road.p1], fill=_GROUND_IDS["sidewalk"], width=round(road.width + 6 * s)
        )
    for road in roads:
        ground.line([road.p0, road.p1], fill=_GROUND_IDS["asphalt"], width=round(road.width))
    pixels = _texture(rng, np.asarray(labels), size)
    pixels *= _shadows(regions, size)[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for region in regions:
        for part in region.parts:
            _sat_part(rng, draw, part, s)
    for road in roads:
        if road.major:
            _dashes(draw, road, s)
    grainy = np.asarray(image).astype(np.int16) + _grain(rng, size)
    out = cv2.GaussianBlur(np.clip(grainy, 0, 255).astype(np.uint8), (0, 0), 0.9 * max(s, 0.5))
    return Image.fromarray(out)


def _texture(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Per-ground colour plus low- and mid-frequency luminance noise, ``size x size x 3``.

    Pixel-level noise is added once over the finished image (roofs included), not here.
    """
    n = len(GROUNDS)
    colors = np.zeros((1, 256, 3), dtype=np.float32)
    colors[0, :n] = [g[0] for g in GROUNDS.values()]
    colors[0, :n] += rng.uniform(-8, 8, 3).astype(np.float32)  # a per-tile colour cast
    amps = np.zeros((1, 256), dtype=np.float32)
    amps[0, :n] = [g[1] for g in GROUNDS.values()]
    base = cv2.LUT(cv2.merge([labels] * 3), colors)
    low = _smooth_noise(rng, 6, size) * np.float32(0.6)
    mid = cv2.resize(rng.standard_normal((size // 10, size // 10), dtype=np.float32), (size, size))
    noise = cv2.LUT(labels, amps) * (low + mid)
    return base + cv2.merge([noise] * 3)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Noise that varies over ``size / cells`` pixels (cubic up to 64, then linear: cheaper)."""
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(cv2.resize(grid, (64, 64), interpolation=cv2.INTER_CUBIC), (size, size))


@lru_cache(maxsize=1)
def _grain_pattern() -> np.ndarray:
    """A fixed field of sensor noise (int16); tiles take random crops of it, which is much
    cheaper than drawing fresh noise for every tile."""
    noise = np.random.default_rng(0).standard_normal((1536, 1536), dtype=np.float32)
    return np.round(noise * np.float32(SENSOR_NOISE)).astype(np.int16)


def _grain(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size x size x 1`` int16 luminance noise."""
    pattern = _grain_pattern()
    if size > pattern.shape[0] // 2:
        noise = rng.standard_normal((size, size), dtype=np.float32) * np.float32(SENSOR_NOISE)
        return np.round(noise).astype(np.int16)[..., None]
    y, x = rng.integers(0, pattern.shape[0] - size, 2)
    return pattern[y : y + size, x : x + size, None]


def _shadows(regions: list[Region], size: int) -> np.ndarray:
    """A multiplicative shade (1 = lit) from building and tree shadows.

    A building's shadow is its footprint swept along the sun direction; drawing the footprint
    at the full and at half the offset covers the sweep for every footprint wider than half
    its shadow, which holds for all generated buildings.
    """
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    dx, dy = SHADOW
    for region in regions:
        for part in region.parts:
            if part.kind == "building":
                for k in (0.5, 1.0):
                    ox, oy = k * dx * part.size, k * dy * part.size
                    draw.polygon([(x + ox, y + oy) for x, y in part.poly], fill=255)
            elif part.kind == "tree":
                (x, y), r = part.poly[0], part.size
                x, y = x + 0.6 * r, y + 0.7 * r
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    soft = cv2.blur(np.asarray(image), (3, 3)).astype(np.float32)
    return 1 - soft * np.float32(0.5 / 255)


def _sat_part(rng: np.random.Generator, draw: ImageDraw.ImageDraw, part: Part, s: float) -> None:
    kind = part.kind
    if kind == "building":
        color = _jitter(rng, part.color or (190, 190, 186), 10)
        draw.polygon(part.poly, fill=color, outline=tuple(max(0, c - 25) for c in color))
        if part.ridges and len(part.poly) == 4:
            _ridges(draw, part.poly, part.ridges, color)
    elif kind == "tree":
        (x, y), r = part.poly[0], part.size
        color = _jitter(rng, (46, 70, 40), 10)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
        h = r * 0.45
        draw.ellipse(
            [x - r * 0.6 - h, y - r * 0.6 - h, x - r * 0.6 + h, y - r * 0.6 + h],
            fill=tuple(c + 14 for c in color),
        )
    elif kind == "vehicle":
        draw.polygon(part.poly, fill=_jitter(rng, part.color or (200, 200, 200), 8))
    elif kind == "track":
        draw.polygon(part.poly, fill=(168, 82, 66))
    elif kind == "field":
        draw.polygon(part.poly, fill=(74, 128, 62))
    elif kind == "lane":
        draw.polygon(part.poly, outline=(214, 200, 190))
    elif kind in ("pitch", "court"):
        fill = (70, 134, 64) if kind == "pitch" else _jitter(rng, (64, 110, 150), 20)
        draw.polygon(part.poly, fill=fill, outline=(230, 230, 226), width=max(1, round(1.5 * s)))
        # The halfway line (pitch) or the net (court) crosses the long axis at its middle.
        a, b, c, d = part.poly
        along_ab = np.hypot(b[0] - a[0], b[1] - a[1]) >= np.hypot(d[0] - a[0], d[1] - a[1])
        line = [_mid(a, b), _mid(d, c)] if along_ab else [_mid(a, d), _mid(b, c)]
        draw.line(line, fill=(230, 230, 226), width=1)
    elif kind == "rail":
        _rail(draw, part, s)


def _ridges(draw: ImageDraw.ImageDraw, quad: Poly, n: int, color) -> None:
    a, b, c, d = quad
    line = tuple(max(0, v - 30) for v in color)
    for t in np.linspace(0, 1, n + 2)[1:-1]:
        draw.line([_lerp(a, b, t), _lerp(d, c, t)], fill=line, width=1)


def _rail(draw: ImageDraw.ImageDraw, part: Part, s: float) -> None:
    draw.line(part.poly, fill=(120, 108, 96), width=max(2, round(part.size)))
    (x0, y0), (x1, y1) = part.poly
    length = max(1e-6, float(np.hypot(x1 - x0, y1 - y0)))
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    off = part.size * 0.25
    for sign in (-1, 1):
        line = [
            (x0 + sign * off * nx, y0 + sign * off * ny),
            (x1 + sign * off * nx, y1 + sign * off * ny),
        ]
        draw.line(line, fill=(70, 66, 64), width=1)


def _dashes(draw: ImageDraw.ImageDraw, road: Road, s: float) -> None:
    width = max(1, round(1.2 * s))
    for t in np.arange(0, 1, 0.02):
        dash = [_lerp(road.p0, road.p1, t), _lerp(road.p0, road.p1, t + 0.01)]
        draw.line(dash, fill=(200, 196, 170), width=width)


def _jitter(rng: np.random.Generator, color, amount: float) -> tuple[int, int, int]:
    d = amount * (2 * rng.random() - 1)
    return tuple(min(255, max(0, int(c + d))) for c in color)


def _lerp(p, q, t: float) -> tuple[float, float]:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def _mid(p, q) -> tuple[float, float]:
    return _lerp(p, q, 0.5)


def render_mask(size: int, polys: list[Poly]) -> np.ndarray:
    """``size x size`` bool mask, True inside any of ``polys``."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for poly in polys:
        draw.polygon(poly, fill=255)
    return np.asarray(image) > 0
