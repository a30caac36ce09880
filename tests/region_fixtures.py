"""Shared helpers for the region tests: a projected raster grid and a tiny OSM file on it."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

CRS = "EPSG:32650"  # UTM 50N: Beijing
X0, Y0, GSD = 440_000.0, 4_420_000.0, 0.5  # top-left corner (metres) and pixel size
WIDTH, HEIGHT = 400, 300


def transform():
    from rasterio.transform import Affine

    return Affine(GSD, 0.0, X0, 0.0, -GSD, Y0)


def write_raster(path: Path, rgb: np.ndarray, crs: str = CRS, affine=None) -> Path:
    import rasterio

    height, width, _ = rgb.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=affine or transform()) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


def lonlat_of_pixel(col: float, row: float) -> tuple[float, float]:
    """WGS-84 of a pixel-corner coordinate on the test grid (independent of socioseg)."""
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    return to_wgs.transform(X0 + col * GSD, Y0 - row * GSD)


# Features in pixel coordinates of the grid.
ROAD = [(20.0, 250.0), (380.0, 200.0)]  # primary: 12 m = 24 px wide
PARK = [(40.0, 40.0), (160.0, 40.0), (160.0, 140.0), (40.0, 140.0)]
SCHOOL = [(220.0, 40.0), (340.0, 40.0), (340.0, 140.0), (220.0, 140.0)]
CAFE = (300.0, 175.0)


def write_osm(path: Path) -> Path:
    """An OSM XML file: a primary road, a named park, a named school and a named cafe node."""
    nodes: list[str] = []
    ways: list[str] = []

    def node(col, row, tags=()):
        nid = len(nodes) + 1
        lon, lat = lonlat_of_pixel(col, row)
        body = "".join(f"<tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags)
        nodes.append(f'<node id="{nid}" version="1" lat="{lat:.9f}" lon="{lon:.9f}">{body}</node>')
        return nid

    def way(points, tags, closed=False):
        ids = [node(*p) for p in points]
        if closed:
            ids.append(ids[0])
        refs = "".join(f'<nd ref="{i}"/>' for i in ids)
        body = "".join(f"<tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags)
        ways.append(f'<way id="{len(ways) + 1}" version="1">{refs}{body}</way>')

    way(ROAD, [("highway", "primary"), ("name", "Main Road")])
    way(PARK, [("leisure", "park"), ("name", "Riverside Park")], closed=True)
    way(SCHOOL, [("amenity", "school"), ("name", "Hillside School")], closed=True)
    node(*CAFE, [("amenity", "cafe"), ("name", "Corner Cafe"), ("name:en", "Corner Coffee")])
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">\n'
    xml += "\n".join(nodes + ways) + "\n</osm>\n"
    path.write_text(xml, encoding="utf-8")
    return path
