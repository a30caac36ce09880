"""Time the "your own region" steps on the synthetic district of scripts/region_example.py.

Builds the district (1536 x 1536 px at 0.5 m, 4 synthetic tiles as GeoTIFF + OSM XML +
labels) in a temporary folder, then times: rendering the OSM map on its grid, warping a
tile mosaic onto the grid (with and without the GCJ-02 shift; no network: the mosaic is
random), and make-dataset (768-px tiles, three levels). Prints seconds per step, the best
of ``--repeat`` runs.

    python benchmarks/bench_region.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from socioseg.region.dataset import DatasetSpec, make_dataset
from socioseg.region.grid import Grid
from socioseg.region.osm import render_osm
from socioseg.region.xyz import TILE_PX, _warp, _warp_gcj02, world_pixels


def _best(repeat: int, step) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = root / "scripts" / "region_example.py"
        subprocess.run([sys.executable, str(script), str(tmp)], check=True, capture_output=True)
        grid = Grid.of_raster(tmp / "sat.tif")
        lon, lat = grid.to_lonlat().transform(*grid.transform @ (0, 0))
        gx, gy = world_pixels(lon, lat, 18)
        origin = (int(gx // TILE_PX) * TILE_PX - TILE_PX, int(gy // TILE_PX) * TILE_PX - TILE_PX)
        mosaic = np.random.default_rng(0).integers(0, 256, (12 * 256, 12 * 256, 3), np.uint8)
        rows = {
            "render OSM map": lambda: render_osm(tmp / "city.osm", grid),
            "warp tiles": lambda: _warp(mosaic, grid, 18, origin),
            "warp tiles, GCJ-02": lambda: _warp_gcj02(mosaic, grid, 18, origin),
        }

        def dataset():
            shutil.rmtree(tmp / "ds", ignore_errors=True)
            spec = DatasetSpec("name", "class", "function", block=1)
            make_dataset(tmp / "sat.tif", tmp / "sat.tif", tmp / "labels.geojson", tmp / "ds", spec)

        rows["make-dataset (52 samples)"] = dataset
        print(f"district: {grid.width} x {grid.height} px at {grid.gsd():.2f} m/px")
        for name, step in rows.items():
            print(f"{name:28s} {_best(args.repeat, step):6.2f} s")


if __name__ == "__main__":
    main()
