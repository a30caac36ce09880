"""SocioSeg data: loaders for both on-disk layouts and the Hub, query levels, synthetic cities.

Loaders at the top: :mod:`~socioseg.data.dataset` (``load_socioseg``, the :class:`Sample`),
:mod:`~socioseg.data.sources` (folder, parquet and Hub layouts; sample ids checked),
:mod:`~socioseg.data.levels` (query levels), :mod:`~socioseg.data.examples` (the bundled
samples) and :mod:`~socioseg.data.writers` (samples back to bytes and files). The
synthetic-city generator is :mod:`socioseg.data.synth`, above the loaders and writers it uses.
It may import :mod:`socioseg.types`, :mod:`socioseg.images` and :mod:`socioseg.geometry`.
"""

from socioseg.data.dataset import DataError, Sample, SocioSegDataset, load_socioseg
from socioseg.data.examples import examples, load_example
from socioseg.data.levels import FUNCTION_NAMES, LevelMap, resolve_level

__all__ = [
    "FUNCTION_NAMES",
    "DataError",
    "LevelMap",
    "Sample",
    "SocioSegDataset",
    "examples",
    "load_example",
    "load_socioseg",
    "resolve_level",
]
