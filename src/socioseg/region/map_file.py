"""A map GeoTIFF that socioseg wrote carries a tag saying so, and what it was made from.

Only such a file is ever replaced (``map --overwrite``) or reused (a ``segment-area`` rerun
with the same map source); any other file is the user's.
"""

from __future__ import annotations

import json
from pathlib import Path

MADE_TAG = "SOCIOSEG_MAP"  # the tag's name; its value: the map source's description as JSON


def made_tag(description: dict) -> str:
    """The tag's value for a map made from a source with this ``describe()``."""
    return json.dumps(description, sort_keys=True)


def _tag(path: Path) -> str | None:
    import rasterio

    if not path.is_file() or path.is_symlink():
        return None
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get(MADE_TAG)
    except rasterio.errors.RasterioIOError:
        return None


def is_our_map(path: Path) -> bool:
    """Whether ``path`` is a map GeoTIFF socioseg wrote."""
    return _tag(path) is not None


def map_made_from(path: Path, description: dict) -> bool:
    """Whether ``path`` is a map socioseg made from a source with this ``describe()``."""
    return _tag(path) == made_tag(description)
