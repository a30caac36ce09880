"""What each land-use style puts inside its region: buildings, trees, fields, water, parking.

Each style function takes the random generator, the region's :class:`Frame` and the scale
``s`` (tile size / 768) and returns ``(ground, parts)``. Sizes are written for a 768-pixel tile
and multiplied by ``s``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from socioseg.data.synth.city import HOUSE_COLORS, ROOF_COLORS, VEHICLE_COLORS, Color, Frame, Part

Rng = np.random.Generator
Style = Callable[[Rng, Frame, float], tuple[str, list[Part]]]


def _pick(rng: Rng, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _building(f: Frame, box: tuple[float, float, float, float], color: Color, h: float, ridges=0):
    return Part("building", f.rect(*box), color, h, ridges)


def _trees(rng: Rng, f: Frame, s: float, n: int, box=None, radius=(4.0, 8.0)) -> list[Part]:
    x0, y0, x1, y1 = box or (0, 0, f.w, f.h)
    if x1 <= x0 or y1 <= y0:
        return []
    xs = rng.uniform(x0, x1, n)
    ys = rng.uniform(y0, y1, n)
    rs = rng.uniform(*radius, n) * s
    return [Part("tree", [f.pt(x, y)], None, r) for x, y, r in zip(xs, ys, rs, strict=True)]


def _tree_row(rng: Rng, f: Frame, s: float, y: float, x0: float, x1: float) -> list[Part]:
    step = rng.uniform(11, 15) * s
    return [
        Part("tree", [f.pt(x, y)], None, rng.uniform(4, 6) * s) for x in np.arange(x0, x1, step)
    ]


def _parking(rng: Rng, f: Frame, s: float, box) -> list[Part]:
    """An asphalt lot with rows of parked cars."""
    x0, y0, x1, y1 = box
    parts = [Part("parking", f.rect(*box))]
    car_w, car_l = 5 * s, 9 * s
    for y in np.arange(y0 + 2 * s, y1 - car_l, car_l + 8 * s):
        for x in np.arange(x0 + 2 * s, x1 - car_w, car_w + 2.5 * s):
            if rng.random() < 0.6:
                color = _pick(rng, VEHICLE_COLORS)
                parts.append(Part("vehicle", f.rect(x, y, x + car_w, y + car_l), color))
    return parts


def _track(f: Frame, s: float, cx: float, cy: float, r: float, vertical: bool, pitch=True):
    """A red running track with a grass infield, lane lines and a marked pitch."""
    half = 1.15 * r
    lane = 0.24 * r
    parts = [
        Part("track", f.stadium(cx, cy, half, r, vertical)),
        Part("field", f.stadium(cx, cy, half, r - lane, vertical)),
    ]
    parts += [Part("lane", f.stadium(cx, cy, half, r - k * lane / 3, vertical)) for k in (1, 2)]
    if pitch:
        a, b = half + 0.35 * (r - lane), 0.62 * (r - lane)
        box = (cx - b, cy - a, cx + b, cy + a) if vertical else (cx - a, cy - b, cx + a, cy + b)
        parts.append(Part("pitch", f.rect(*box)))
    return parts


def generic_houses(rng: Rng, f: Frame, s: float):
    cell = rng.uniform(18, 28) * s
    parts: list[Part] = []
    for x in np.arange(4 * s, f.w - cell, cell):
        for y in np.arange(4 * s, f.h - cell, cell):
            roll = rng.random()
            if roll < 0.72:
                bw, bh = cell * rng.uniform(0.55, 0.85), cell * rng.uniform(0.5, 0.85)
                color = _pick(rng, HOUSE_COLORS)
                parts.append(_building(f, (x, y, x + bw, y + bh), color, rng.uniform(2, 5) * s))
            elif roll < 0.85:
                parts += _trees(rng, f, s, 1, (x, y, x + cell, y + cell), (3, 6))
    return _pick(rng, ("soil", "grass", "field")), parts


def generic_green(rng: Rng, f: Frame, s: float):
    n = int(f.w * f.h / (1400 * s * s))
    parts = []
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = rng.uniform(0, f.w), rng.uniform(0, f.h)
        rx, ry = rng.uniform(20, 60) * s, rng.uniform(20, 60) * s
        box = (max(0, cx - rx), max(0, cy - ry), min(f.w, cx + rx), min(f.h, cy + ry))
        parts += _trees(rng, f, s, n // 4, box)
    return "grass", parts


def bare(rng: Rng, f: Frame, s: float):
    parts = [
        Part("path", [f.pt(0, rng.uniform(0, f.h)), f.pt(f.w, rng.uniform(0, f.h))], None, 3 * s)
    ]
    x, y = rng.uniform(0.1, 0.6) * f.w, rng.uniform(0.1, 0.6) * f.h
    parts.append(_building(f, (x, y, x + 24 * s, y + 12 * s), (84, 118, 150), 3 * s))
    return "soil", parts


def water(rng: Rng, f: Frame, s: float):
    return "water", []


def residential(rng: Rng, f: Frame, s: float):
    m = 10 * s
    ring = [f.pt(m / 2, m / 2), f.pt(f.w - m / 2, m / 2), f.pt(f.w - m / 2, f.h - m / 2)]
    ring += [f.pt(m / 2, f.h - m / 2), f.pt(m / 2, m / 2)]
    parts = [Part("path", ring, None, 4 * s)]
    gap, depth = rng.uniform(40, 54) * s, rng.uniform(11, 15) * s
    length, color, h = rng.uniform(40, 70) * s, _pick(rng, ROOF_COLORS), rng.uniform(8, 14) * s
    y = m + 4 * s
    while y + depth < f.h - m:
        x = m + 4 * s
        while x + length < f.w - m:
            parts.append(_building(f, (x, y, x + length, y + depth), color, h))
            x += length + rng.uniform(8, 14) * s
        parts += _tree_row(rng, f, s, y + depth + gap / 2, m + 6 * s, f.w - m)
        y += gap
    return "grass", parts


def office(rng: Rng, f: Frame, s: float):
    n = int(rng.integers(1, 4))
    col = f.w / n
    parts: list[Part] = [Part("lawn", f.rect(0.05 * f.w, 0.7 * f.h, 0.95 * f.w, 0.95 * f.h))]
    for k in range(n):
        side = min(col, 0.6 * f.h) * rng.uniform(0.45, 0.65)
        x = k * col + (col - side) / 2
        y = rng.uniform(0.08, 0.12) * f.h
        color = _pick(rng, ROOF_COLORS[:2] + ROOF_COLORS[4:5])
        parts.append(_building(f, (x, y, x + side, y + side), color, rng.uniform(16, 28) * s))
    parts += _trees(rng, f, s, int(f.w / (14 * s)), (0, 0.72 * f.h, f.w, 0.93 * f.h))
    return "paved", parts


def hotel(rng: Rng, f: Frame, s: float):
    ground, parts = office(rng, f, s)
    x, y = rng.uniform(0.1, 0.5) * f.w, 0.75 * f.h
    parts.insert(1, Part("water", f.rect(x, y, x + 0.25 * f.w, y + 0.12 * f.h)))
    return ground, parts


def hospital(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    color, tall = _pick(rng, ROOF_COLORS[:2]), rng.uniform(10, 15) * s
    t = 0.14 * min(w, h)
    parts = [
        _building(f, (0.1 * w, 0.08 * h, 0.1 * w + t, 0.6 * h), color, tall),
        _building(f, (0.9 * w - t, 0.08 * h, 0.9 * w, 0.6 * h), color, tall),
        _building(f, (0.1 * w + t, 0.28 * h, 0.9 * w - t, 0.28 * h + t), color, tall * 0.8),
    ]
    parts += _parking(rng, f, s, (0.08 * w, 0.7 * h, 0.6 * w, 0.93 * h))
    parts.append(_building(f, (0.66 * w, 0.7 * h, 0.92 * w, 0.92 * h), color, 6 * s))
    parts += _tree_row(rng, f, s, 0.65 * h, 0.05 * w, 0.95 * w)
    return "paved", parts


def government(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    parts = [
        _building(f, (0.25 * w, 0.08 * h, 0.75 * w, 0.3 * h), _pick(rng, ROOF_COLORS), 10 * s),
        Part("lawn", f.rect(0.15 * w, 0.42 * h, 0.45 * w, 0.85 * h)),
        Part("lawn", f.rect(0.55 * w, 0.42 * h, 0.85 * w, 0.85 * h)),
    ]
    parts += _tree_row(rng, f, s, 0.04 * h + 4 * s, 0.04 * w, 0.96 * w)
    parts += _tree_row(rng, f, s, 0.93 * h, 0.04 * w, 0.96 * w)
    return "plaza", parts


def campus(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    vertical = h > w
    long, short = max(w, h), min(w, h)
    parts: list[Part] = []
    rest = (0.0, 0.0, w, h)
    r = min(0.42 * short, 0.13 * long)
    if r > 30 * s:
        end = 4.3 * r + 10 * s
        cx, cy = (w / 2, h - end / 2) if vertical else (w - end / 2, h / 2)
        parts += _track(f, s, cx, cy, r, vertical)
        rest = (0, 0, w, h - end) if vertical else (0, 0, w - end, h)
    x0, y0, x1, y1 = rest
    depth = rng.uniform(12, 16) * s
    color = _pick(rng, ROOF_COLORS)
    for y in np.arange(y0 + 10 * s, y1 - depth - 30 * s, rng.uniform(32, 42) * s):
        parts.append(_building(f, (x0 + 10 * s, y, x1 - 12 * s, y + depth), color, 9 * s))
    court_y = y1 - 28 * s
    for x in np.arange(x0 + 10 * s, x1 - 30 * s, 34 * s)[:3]:
        parts.append(Part("court", f.rect(x, court_y, x + 28 * s, court_y + 16 * s)))
    parts += _trees(rng, f, s, int((x1 - x0) * (y1 - y0) / (2500 * s * s)), rest, (3, 6))
    return "grass", parts


def park(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    parts: list[Part] = []
    if rng.random() < 0.6:
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        parts.append(Part("water", f.ellipse(cx, cy, rng.uniform(0.15, 0.3) * w, 0.2 * h)))
    for _ in range(2):
        pts = [f.pt(0, rng.uniform(0, h))]
        pts += [f.pt(x, rng.uniform(0.1, 0.9) * h) for x in np.linspace(0.2, 0.8, 3) * w]
        pts.append(f.pt(w, rng.uniform(0, h)))
        parts.append(Part("path", pts, None, 3 * s))
    for _ in range(int(rng.integers(5, 10))):
        cx, cy, rad = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 40) * s
        box = (max(0, cx - rad), max(0, cy - rad), min(w, cx + rad), min(h, cy + rad))
        parts += _trees(rng, f, s, int(rad * rad / (45 * s * s)), box, (4, 9))
    x, y = rng.uniform(0.1, 0.8) * w, rng.uniform(0.1, 0.8) * h
    parts.append(_building(f, (x, y, x + 10 * s, y + 10 * s), (150, 88, 72), 3 * s))
    return "park", parts


def plaza(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    parts = [
        Part("lawn", f.rect(0.08 * w, 0.08 * h, 0.42 * w, 0.42 * h)),
        Part("lawn", f.rect(0.58 * w, 0.08 * h, 0.92 * w, 0.42 * h)),
        Part("lawn", f.rect(0.08 * w, 0.58 * h, 0.42 * w, 0.92 * h)),
        Part("lawn", f.rect(0.58 * w, 0.58 * h, 0.92 * w, 0.92 * h)),
        Part("water", f.ellipse(w / 2, h / 2, 0.07 * min(w, h), 0.07 * min(w, h))),
    ]
    parts += _tree_row(rng, f, s, 0.04 * h, 0.04 * w, 0.96 * w)
    parts += _tree_row(rng, f, s, 0.96 * h, 0.04 * w, 0.96 * w)
    return "plaza", parts


def stadium(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    vertical = h > w
    r = min(0.42 * min(w, h), 0.85 * max(w, h) / 4.3)
    parts = [
        Part("building", f.stadium(w / 2, h / 2, 1.15 * r, r, vertical), (205, 205, 200), 9 * s)
    ]
    parts += _track(f, s, w / 2, h / 2, 0.78 * r, vertical)
    corner = (0.02 * w, 0.02 * h, 0.3 * w, 0.2 * h)
    return "paved", parts + _parking(rng, f, s, corner)


def pitch(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    vertical = h > w
    if rng.random() < 0.5 and min(w, h) > 60 * s:
        r = min(0.42 * min(w, h), 0.9 * max(w, h) / 4.3)
        return "grass", _track(f, s, w / 2, h / 2, r, vertical)
    a, b = 0.42 * max(w, h), 0.42 * max(w, h) * 68 / 105
    b = min(b, 0.4 * min(w, h))
    box = (
        (w / 2 - b, h / 2 - a, w / 2 + b, h / 2 + a)
        if vertical
        else (w / 2 - a, h / 2 - b, w / 2 + a, h / 2 + b)
    )
    parts = [Part("pitch", f.rect(*box))]
    stand = (
        (box[2] + 3 * s, box[1], box[2] + 9 * s, box[3])
        if vertical
        else (box[0], box[1] - 9 * s, box[2], box[1] - 3 * s)
    )
    parts.append(_building(f, stand, (200, 200, 196), 4 * s))
    return "grass", parts


def museum(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    color = _pick(rng, ((220, 218, 210), (176, 150, 120), (150, 160, 170)))
    if rng.random() < 0.5:
        main = Part("building", f.ellipse(w / 2, 0.4 * h, 0.3 * w, 0.25 * h), color, 12 * s)
    else:
        main = _building(f, (0.2 * w, 0.15 * h, 0.8 * w, 0.6 * h), color, 12 * s)
    parts = [Part("lawn", f.rect(0.1 * w, 0.72 * h, 0.9 * w, 0.92 * h)), main]
    return "plaza", parts + _tree_row(rng, f, s, 0.68 * h, 0.08 * w, 0.92 * w)


def mall(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    depth = rng.uniform(0.55, 0.72) * h
    parts = [_building(f, (0.06 * w, 0.06 * h, 0.94 * w, depth), (196, 196, 192), 12 * s)]
    for _ in range(int(rng.integers(4, 10))):
        x, y = rng.uniform(0.12, 0.82) * w, rng.uniform(0.1, depth / h - 0.08) * h
        parts.append(_building(f, (x, y, x + 7 * s, y + 5 * s), (150, 150, 150), 2 * s))
    return "paved", parts + _parking(rng, f, s, (0.06 * w, depth + 8 * s, 0.94 * w, 0.95 * h))


def station(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    vertical = h > w

    def box(a0, b0, a1, b1):  # along the long axis (a) and across it (b), as fractions
        return (b0 * w, a0 * h, b1 * w, a1 * h) if vertical else (a0 * w, b0 * h, a1 * w, b1 * h)

    parts = [_building(f, box(0.2, 0.05, 0.8, 0.3), (190, 192, 196), 12 * s)]
    tracks = np.linspace(0.4, 0.95, int(rng.integers(4, 8)))
    for k, b in enumerate(tracks):
        line = [f.pt(*box(0, b, 1, b)[:2]), f.pt(*box(0, b, 1, b)[2:])]
        parts.append(Part("rail", line, None, 5 * s))
        if k % 2 == 0 and k + 1 < len(tracks):
            mid = (b + tracks[k + 1]) / 2
            parts.append(
                _building(f, box(0.15, mid - 0.02, 0.85, mid + 0.02), (205, 205, 200), 3 * s)
            )
    parts.insert(0, Part("plaza", f.rect(*box(0.25, 0.0, 0.75, 0.05))))
    return "paved", parts


def depot(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    parts = [_building(f, (0.06 * w, 0.06 * h, 0.4 * w, 0.3 * h), _pick(rng, ROOF_COLORS), 7 * s)]
    bus_w, bus_l = 8 * s, 30 * s
    for y in np.arange(0.4 * h, 0.95 * h - bus_l, bus_l + 12 * s):
        for x in np.arange(0.06 * w, 0.94 * w - bus_w, bus_w + 5 * s):
            if rng.random() < 0.7:
                color = _pick(rng, ((230, 230, 226), (60, 140, 90), (60, 100, 170)))
                parts.append(Part("vehicle", f.rect(x, y, x + bus_w, y + bus_l), color))
    return "paved", parts


def factory(rng: Rng, f: Frame, s: float):
    w, h = f.w, f.h
    n = int(rng.integers(2, 5))
    parts: list[Part] = []
    edges = np.linspace(0.05, 0.95, n + 1)
    color = _pick(rng, ((84, 124, 170), (222, 224, 226), (176, 180, 184), (150, 98, 80)))
    for k in range(n):
        y0, y1 = edges[k] * h + 4 * s, edges[k + 1] * h - 4 * s
        x1 = rng.uniform(0.55, 0.9) * w
        parts.append(_building(f, (0.05 * w, y0, x1, y1), color, rng.uniform(6, 9) * s, ridges=8))
        if x1 < 0.75 * w:
            r = min(0.08 * w, (y1 - y0) / 2.5)
            c = Part(
                "building",
                f.ellipse((x1 + 0.95 * w) / 2, (y0 + y1) / 2, r, r, 16),
                (226, 226, 222),
                5 * s,
            )
            parts.append(c)
    return _pick(rng, ("soil", "paved")), parts


STYLES: dict[str, Style] = {
    "generic": generic_houses,
    "green": generic_green,
    "bare": bare,
    "water": water,
    "residential": residential,
    "office": office,
    "hotel": hotel,
    "hospital": hospital,
    "government": government,
    "campus": campus,
    "park": park,
    "plaza": plaza,
    "stadium": stadium,
    "pitch": pitch,
    "museum": museum,
    "mall": mall,
    "station": station,
    "depot": depot,
    "factory": factory,
}
BIG_STYLES = frozenset({"campus", "park", "stadium", "station", "factory", "residential"})
