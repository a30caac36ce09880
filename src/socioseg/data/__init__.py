"""SocioSeg data: loaders for both on-disk layouts and the Hub, query levels, synthetic cities."""

from socioseg.data.dataset import DataError, Sample, SocioSegDataset, load_socioseg
from socioseg.data.examples import examples, load_example
from socioseg.data.levels import FUNCTION_NAMES, LevelMap, resolve_level
from socioseg.data.synth import generate_sample, generate_tile, write_dataset

__all__ = [
    "FUNCTION_NAMES",
    "DataError",
    "LevelMap",
    "Sample",
    "SocioSegDataset",
    "examples",
    "generate_sample",
    "generate_tile",
    "load_example",
    "load_socioseg",
    "resolve_level",
    "write_dataset",
]
