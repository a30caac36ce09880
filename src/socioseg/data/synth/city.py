"""Geometry of a synthetic city tile: a jittered road grid, blocks, and land-use parts.

Everything is in tile pixels (x right, y down). A region is a convex quadrilateral (a block or
part of one); its contents are generated in a local metric frame (x along the region's first
edge, y along its second, both in pixels) and mapped back with bilinear interpolation, so
buildings line up with the streets even where the grid is slanted. The map and the satellite
renderers draw the same parts, so both images share one geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]
Poly = list[Point]
Color = tuple[int, int, int]

ROOF_COLORS: tuple[Color, ...] = (
    (196, 194, 188),
    (214, 212, 206),
    (146, 96, 82),
    (124, 125, 128),
    (100, 120, 140),
    (172, 156, 138),
    (112, 128, 120),
)
HOUSE_COLORS: tuple[Color, ...] = (
    (150, 100, 86),
    (160, 112, 92),
    (128, 128, 130),
    (108, 120, 134),
    (176, 168, 156),
    (140, 136, 128),
    (100, 108, 104),
)
VEHICLE_COLORS: tuple[Color, ...] = (
    (230, 230, 228),
    (30, 30, 34),
    (140, 140, 145),
    (170, 40, 40),
    (40, 70, 140),
    (200, 200, 205),
)


@dataclass
class Part:
    """One drawable thing inside a region.

    ``kind``: building, tree, vehicle, water, lawn, paved, parking, path, track, field, pitch,
    lane, court, rail. ``poly`` is its outline in tile pixels (a tree: ``[centre]``; a path or
    rail: a polyline). ``size``: building height / tree radius / line width, in pixels.
    """

    kind: str
    poly: Poly
    color: Color | None = None
    size: float = 0.0
    ridges: int = 0


@dataclass
class Region:
    """A land-use area: its outline (the entity's mask when it is one) and its parts."""

    poly: Poly
    style: str
    ground: str
    parts: list[Part] = field(default_factory=list)
    entity: int | None = None  # index into the tile's entity list


@dataclass(frozen=True)
class Road:
    p0: Point
    p1: Point
    width: float
    major: bool


@dataclass(frozen=True)
class Block:
    corners: Poly  # convex quad, inset from the surrounding roads
    visible: float  # share of the block's area inside the tile (0..1)


class Frame:
    """Local metric coordinates of a convex quad ``(p00, p10, p11, p01)``."""

    def __init__(self, corners: Poly) -> None:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ((float(x), float(y)) for x, y in corners)
        self.c = ((x0, y0), (x1, y1), (x2, y2), (x3, y3))
        self.w = (math.hypot(x1 - x0, y1 - y0) + math.hypot(x2 - x3, y2 - y3)) / 2
        self.h = (math.hypot(x3 - x0, y3 - y0) + math.hypot(x2 - x1, y2 - y1)) / 2

    def pt(self, x: float, y: float) -> Point:
        u = x / self.w
        v = y / self.h
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self.c
        a, b, c, d = (1 - u) * (1 - v), u * (1 - v), u * v, (1 - u) * v
        return (a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3)

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Poly:
        return [self.pt(x0, y0), self.pt(x1, y0), self.pt(x1, y1), self.pt(x0, y1)]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, n: int = 28) -> Poly:
        angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return [self.pt(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]

    def stadium(self, cx: float, cy: float, half: float, r: float, vertical: bool) -> Poly:
        """A running-track outline: straights of length ``2 * half`` joined by radius ``r``."""
        pts = []
        for side, (a0, a1) in ((1, (-90, 90)), (-1, (90, 270))):
            for deg in np.linspace(a0, a1, 13):
                a = math.radians(deg)
                along = side * half + r * math.cos(a)
                across = r * math.sin(a)
                pts.append((along, across))
        if vertical:
            return [self.pt(cx + b, cy + a) for a, b in pts]
        return [self.pt(cx + a, cy + b) for a, b in pts]

    def split(self, axis: int, t: float, gap: float) -> tuple[Poly, Poly]:
        """Cut the quad across ``axis`` (0: x, 1: y) at fraction ``t``, leaving a ``gap`` (px)."""
        length = self.w if axis == 0 else self.h
        t0 = max(0.05, t - gap / (2 * length))
        t1 = min(0.95, t + gap / (2 * length))
        if axis == 0:
            return self.rect(0, 0, t0 * self.w, self.h), self.rect(t1 * self.w, 0, self.w, self.h)
        return self.rect(0, 0, self.w, t0 * self.h), self.rect(0, t1 * self.h, self.w, self.h)


def road_grid(rng: np.random.Generator, size: int) -> tuple[list[Road], list[Block]]:
    """A jittered, slightly slanted street grid and the blocks between its streets."""
    s = size / 768
    n = int(rng.integers(3, 5))  # blocks per axis
    spacing = size / n

    def lines() -> list[tuple[float, float, float, bool]]:
        pad = rng.uniform(0.1, 0.4) * spacing
        out = [(-pad, -pad, 0.0, False)]
        for k in range(1, n):
            base = k * spacing + rng.uniform(-0.12, 0.12) * spacing
            slant = rng.uniform(-0.05, 0.05) * size
            major = bool(rng.random() < 0.35)
            width = (rng.uniform(20, 26) if major else rng.uniform(10, 14)) * s
            out.append((base - slant / 2, base + slant / 2, width, major))
        out.append((size + pad, size + pad, 0.0, False))
        return out

    verticals, horizontals = lines(), lines()
    roads = []
    for a, b, width, major in verticals[1:-1]:
        roads.append(Road(_on_v(a, b, -20.0, size), _on_v(a, b, size + 20.0, size), width, major))
    for c, d, width, major in horizontals[1:-1]:
        roads.append(Road(_on_h(c, d, -20.0, size), _on_h(c, d, size + 20.0, size), width, major))
    sidewalk = 3 * s
    blocks = []
    for i in range(len(verticals) - 1):
        for j in range(len(horizontals) - 1):
            vl, vr = verticals[i], verticals[i + 1]
            ht, hb = horizontals[j], horizontals[j + 1]
            quad = [
                _cross(vl, ht, size),
                _cross(vr, ht, size),
                _cross(vr, hb, size),
                _cross(vl, hb, size),
            ]
            insets = [
                ht[2] / 2 + sidewalk * (ht[2] > 0),
                vr[2] / 2 + sidewalk * (vr[2] > 0),
                hb[2] / 2 + sidewalk * (hb[2] > 0),
                vl[2] / 2 + sidewalk * (vl[2] > 0),
            ]
            corners = inset_quad(quad, insets)
            blocks.append(Block(corners, _visible_share(corners, size)))
    return roads, blocks


def _on_v(a: float, b: float, y: float, size: int) -> Point:
    return (a + (b - a) * y / size, y)


def _on_h(c: float, d: float, x: float, size: int) -> Point:
    return (x, c + (d - c) * x / size)


def _cross(v: tuple, h: tuple, size: int) -> Point:
    """Intersection of vertical line ``x = a + (b-a) y/S`` and horizontal ``y = c + (d-c) x/S``."""
    a, b = v[0], v[1]
    c, d = h[0], h[1]
    x = (a + (b - a) * c / size) / (1 - (b - a) * (d - c) / size**2)
    return (x, c + (d - c) * x / size)


def inset_quad(quad: Poly, distances: list[float]) -> Poly:
    """Move each edge of a convex polygon inwards by its own distance (edge k: p_k -> p_k+1)."""
    pts = np.asarray(quad, dtype=np.float64)
    n = len(pts)
    area = sum(pts[k, 0] * pts[(k + 1) % n, 1] - pts[(k + 1) % n, 0] * pts[k, 1] for k in range(n))
    sign = 1.0 if area > 0 else -1.0
    lines = []
    for k in range(n):
        p, q = pts[k], pts[(k + 1) % n]
        e = (q - p) / np.linalg.norm(q - p)
        normal = sign * np.array([-e[1], e[0]])  # points inside for either orientation
        lines.append((p + distances[k] * normal, e))
    out = []
    for k in range(n):
        (p1, e1), (p2, e2) = lines[k - 1], lines[k]
        denom = e1[0] * e2[1] - e1[1] * e2[0]
        t = ((p2[0] - p1[0]) * e2[1] - (p2[1] - p1[1]) * e2[0]) / denom
        point = p1 + t * e1
        out.append((float(point[0]), float(point[1])))
    return out


def clip_to_tile(poly: Poly, size: int) -> Poly:
    """Sutherland-Hodgman clip of a polygon to the tile ``[0, size]^2``."""
    out = list(poly)
    for axis, bound, keep_less in (
        (0, 0.0, False),
        (0, size, True),
        (1, 0.0, False),
        (1, size, True),
    ):
        src, out = out, []
        for k, cur in enumerate(src):
            prev = src[k - 1]
            cur_in = cur[axis] <= bound if keep_less else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_less else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        if not out:
            return []
    return out


def polygon_area(poly: Poly) -> float:
    n = len(poly)
    return (
        abs(
            sum(
                poly[k][0] * poly[(k + 1) % n][1] - poly[(k + 1) % n][0] * poly[k][1]
                for k in range(n)
            )
        )
        / 2
    )


def centroid(poly: Poly) -> Point:
    xs, ys = zip(*poly, strict=True)
    return (sum(xs) / len(xs), sum(ys) / len(ys))


def visible_area(poly: Poly, size: int) -> float:
    """The area of ``poly`` inside the tile ``[0, size]^2``, in square pixels."""
    return polygon_area(clip_to_tile(poly, size))


def _visible_share(poly: Poly, size: int) -> float:
    area = polygon_area(poly)
    return visible_area(poly, size) / area if area > 0 else 0.0
