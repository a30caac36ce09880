"""The synthetic-city generator: SocioSeg-like tiles (map, satellite, query, mask) from a seed.

- :mod:`~socioseg.data.synth.generate`: tiles, samples and whole datasets (``socioseg synth``);
- :mod:`~socioseg.data.synth.catalog`: the entity kinds, names and colours;
- :mod:`~socioseg.data.synth.city`: street grids, blocks and polygons in tile pixels;
- :mod:`~socioseg.data.synth.landuse`: land-use styles of blocks;
- :mod:`~socioseg.data.synth.paint`: the web-map and satellite painters (also used by
  :mod:`socioseg.region.osm`, so OSM maps look like the synthetic ones);
- :mod:`~socioseg.data.synth.shipped`: the three examples shipped with the package.

It may import :mod:`socioseg.data`'s loaders and writers and :mod:`socioseg.types`, nothing
else of the package.
"""

from socioseg.data.synth.generate import (
    MAX_QUERIES,
    MAX_SIZE,
    MIN_SIZE,
    PLACEMENTS,
    generate_sample,
    generate_tile,
    sample_with_targets,
    tile_labels,
    write_dataset,
)

__all__ = [
    "MAX_QUERIES",
    "MAX_SIZE",
    "MIN_SIZE",
    "PLACEMENTS",
    "generate_sample",
    "generate_tile",
    "sample_with_targets",
    "tile_labels",
    "write_dataset",
]
