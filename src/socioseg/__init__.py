"""socioseg: urban socio-semantic segmentation with vision-language reasoning (SocioReasoner).

    import socioseg
    model = socioseg.SocioReasoner.from_pretrained()  # vvangfaye/SocioReasoner-3B + SAM2
    prediction = model.segment("sat.png", "map.png", "Jinan Zoo")
    prediction.mask  # H x W bool, satellite pixels

    # a whole georeferenced area (needs the gis extra): GeoTIFF mask, GeoJSON polygons
    socioseg.segment_area(model, "area.tif", "map.tif", ["School"], "out/")

Importing the package loads nothing heavy; names are resolved on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "SocioReasoner": "socioseg.socioreasoner",
    "InferenceConfig": "socioseg.socioreasoner",
    "SamplingSettings": "socioseg.models.vlm",
    "Prediction": "socioseg.types",
    "load_socioseg": "socioseg.data",
    "SegmentationScores": "socioseg.metrics",
    "segment_area": "socioseg.region.area",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'socioseg' has no attribute {name!r}")
