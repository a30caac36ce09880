"""Time the synthetic generator: write N tiles (default 200 of 768 x 768) in both layouts."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from socioseg.data.synth import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--fmt", choices=["folder", "parquet", "both"], default="both")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    formats = ["folder", "parquet"] if args.fmt == "both" else [args.fmt]
    for fmt in formats:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = write_dataset(
                out, n=args.n, seed=0, fmt=fmt, size=args.size, workers=args.workers
            )
            seconds = time.perf_counter() - start
        print(
            f"{fmt:8s} {args.n} tiles of {args.size}x{args.size}, {args.workers} worker(s): "
            f"{seconds:.1f} s "
            f"({seconds / max(args.n, 1) * 1000:.0f} ms/tile); levels {summary['levels']}, "
            f"multi-instance {summary['multi_instance']}"
        )


if __name__ == "__main__":
    main()
