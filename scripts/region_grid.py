"""A blank GeoTIFF on a chosen grid, for ``socioseg map --like`` where no imagery is at hand.

The grid is ``--size`` pixels square at ``--gsd`` metres per pixel in ``--crs``, centred on
``--lonlat``; the pixels are black (3 bands, uint8). With your own imagery, pass it to
``--like`` instead.

    python scripts/region_grid.py --lonlat 24.9440,60.1696 --crs EPSG:32635 --size 1024 \\
        --gsd 0.5 --out examples/helsinki/grid.tif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lonlat", required=True, help="centre as LON,LAT (WGS-84 degrees)")
    parser.add_argument("--crs", required=True, help="a projected CRS in metres, e.g. EPSG:32635")
    parser.add_argument("--size", type=int, default=1024, help="side in pixels")
    parser.add_argument("--gsd", type=float, default=0.5, help="metres per pixel")
    parser.add_argument("--out", required=True, type=Path, help="GeoTIFF to write")
    args = parser.parse_args()

    import rasterio
    from pyproj import CRS, Transformer
    from rasterio.transform import Affine

    lon, lat = (float(v) for v in args.lonlat.split(","))
    crs = CRS.from_user_input(args.crs)
    if not crs.is_projected:
        parser.error(f"--crs {args.crs} is not a projected CRS in metres")
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    half = args.size * args.gsd / 2
    transform = Affine(args.gsd, 0, x - half, 0, -args.gsd, y + half)
    profile = {"driver": "GTiff", "width": args.size, "height": args.size, "count": 3}
    profile |= {"dtype": "uint8", "crs": crs.to_wkt(), "transform": transform}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(args.out, "w", **profile, compress="deflate") as dst:
        dst.write(np.zeros((3, args.size, args.size), dtype=np.uint8))
    print(f"wrote {args.out}: {args.size} x {args.size} px at {args.gsd} m, {crs.to_string()}")


if __name__ == "__main__":
    main()
