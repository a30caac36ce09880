"""Outputs for GIS users of ``segment-area`` and ``segment``: tidy polygons, a GeoPackage, a
colour-mapped mask and a quick-look picture.

- :func:`tidy_features`: polygons simplified to the pixel size (``simplify`` metres; 0 keeps the
  pixel stair-steps), entities under ``min_area_m2`` square metres dropped, an ``area_m2``
  attribute, and the vectors reprojected to ``dst_crs`` (default: the raster's CRS).
  Simplification runs in pixel coordinates (Douglas-Peucker, topology kept), so it means the same
  on the ground in any CRS, geographic ones included.
- :func:`write_geopackage`: ``entities.gpkg``, one layer per query (pyogrio, GDAL's GPKG driver).
- :func:`write_overview`: ``overview.png``, the satellite image downsampled, each query's mask
  tinted and outlined in its colour (:data:`QUERY_COLORS`, also the colours of ``mask.tif``'s
  colour table), and a legend naming the queries.
- :func:`write_prediction_gis`: what ``segment`` writes beside its PNGs when ``--sat`` is
  georeferenced: ``mask.tif`` on the input grid and the same vectors as ``segment-area``.

Everything is written under a temporary name inside the output folder and renamed into place.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from socioseg.publish import write_text_atomic
from socioseg.region.raster import (
    AreaError,
    Georef,
    entity_confidence,
    entity_geometry,
    feature_collection,
    mask_entities,
    write_mask_raster,
)
from socioseg.types import Prediction

QUERY_COLORS = (  # Tableau 10: distinct for the colour-blind, readable on imagery
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
DEFAULT_MIN_AREA_M2 = 100.0  # 10 m x 10 m: smaller than any entity SocioSeg asks for
OVERVIEW_SIDE = 1024  # longest side of overview.png in pixels
GPKG_FIELDS = (
    "id", "query", "level", "sam_score", "answer_logprob", "vlm", "sam", "tiles", "area_m2",
    "area_px",
)  # fmt: skip
SEGMENT_FIELDS = tuple(f for f in GPKG_FIELDS if f != "tiles")  # one image: no tiles
_NUMBER_FIELDS = {"id": np.int64, "area_px": np.int64, "sam_score": np.float64,
                  "answer_logprob": np.float64, "area_m2": np.float64}  # fmt: skip


def vector_settings(simplify, min_area_m2, dst_crs, models) -> dict:
    """The vector outputs' settings (see :func:`tidy_features`), checked before anything runs."""
    if simplify is not None and not simplify >= 0:
        raise AreaError(f"--simplify must be metres >= 0 (0: no simplification), got {simplify}")
    if not min_area_m2 >= 0:
        raise AreaError(f"--min-area-m2 must be >= 0, got {min_area_m2}")
    crs = None if dst_crs is None else check_crs(dst_crs)
    return {"simplify": simplify, "min_area_m2": min_area_m2, "dst_crs": crs, "models": models}


def write_vectors(
    root: Path, features, georef: Georef | None, gsd, queries, settings: dict, fields=GPKG_FIELDS
):
    """Tidy ``features`` (:func:`tidy_features` with ``settings`` of :func:`vector_settings`)
    and write ``entities.geojson`` and, with pyogrio, ``entities.gpkg`` (attributes ``fields``)
    into ``root``.

    Returns ``(features, geojson path, gpkg path or None, name of the vectors' CRS or None)``.
    """
    features = tidy_features(
        features, georef, gsd, settings["simplify"], settings["min_area_m2"], settings["dst_crs"]
    )
    crs = settings["dst_crs"] or (georef.crs if georef is not None else None)
    vector_georef = None if crs is None else Georef(crs, None)
    geojson = root / "entities.geojson"
    write_text_atomic(geojson, json.dumps(feature_collection(features, vector_georef)) + "\n")
    gpkg = None
    if has_pyogrio():
        gpkg = write_geopackage(
            root / "entities.gpkg", features, queries, crs, settings["models"], fields
        )
    return features, geojson, gpkg, None if vector_georef is None else vector_georef.crs_name()


def write_prediction_gis(
    root: Path,
    prediction: Prediction,
    georef: Georef,
    level: str,
    settings: dict,
    min_area_px: int,
) -> tuple[dict[str, Path], dict]:
    """``segment``'s GIS outputs for a prediction on a georeferenced satellite raster.

    ``prediction.mask`` (H x W bool) lies on the raster's grid (``georef``, the satellite
    file's). Writes ``mask.tif`` (one band, 0 nodata, colour table), and ``entities.geojson``
    and ``entities.gpkg`` as ``segment-area`` does (:func:`write_vectors` with ``settings`` of
    :func:`vector_settings`; attributes :data:`SEGMENT_FIELDS`); ``level``: the query's level.
    Returns ``(name -> path written, the record for result.json)``.
    """
    from socioseg.region.grid import Grid

    mask = np.asarray(prediction.mask, dtype=bool)
    height, width = mask.shape
    query = {"index": 0, "text": prediction.query, "level": level}
    strips = iter([(0, mask[None])])
    mask_path = write_mask_raster(
        root / "mask", (width, height), georef, strips, [query["text"]], query_color(0)
    )
    gsd = None
    if georef.crs is not None:
        gsd = Grid(georef.crs, georef.transform, width, height).gsd()
    features = prediction_features(prediction, georef, query, min_area_px)
    features, geojson, gpkg, vector_crs = write_vectors(
        root, features, georef, gsd, [query], settings, SEGMENT_FIELDS
    )
    files = {"mask_tif": mask_path, "entities_geojson": geojson}
    if gpkg is not None:
        files["entities_gpkg"] = gpkg
    record = {
        "crs": georef.crs_name(),
        "transform": [float(v) for v in tuple(georef.transform)[:6]],
        "gsd_m": None if gsd is None else round(gsd, 4),
        "level": level,
        "entities": len(features),
        "vector_crs": vector_crs,
        "simplify_m": settings["simplify"],
        "min_area_m2": settings["min_area_m2"],
        "files": {name: path.name for name, path in files.items()},
    }
    return files, record


def prediction_features(
    prediction: Prediction, georef: Georef, query: dict, min_area_px: int
) -> list[dict]:
    """GeoJSON features of a one-image prediction's entities, with the properties
    :func:`socioseg.region.stitch.cluster_features` gives a tile run's (no ``tiles``):
    the final stage's objects and answer log-prob give the confidences
    (:func:`socioseg.region.raster.entity_confidence`). Coordinates: the raster's CRS."""
    final = prediction.stage2 if prediction.final_source == "stage2" else prediction.stage1
    objects = [  # image pixels are raster pixels: the prediction was made on the whole raster
        [*t.box.as_list(), float(score)]
        for t, score in zip(final.targets_image, final.sam_scores, strict=False)
    ]
    logprobs = [] if final.mean_logprob is None else [final.mean_logprob]
    pixel_area = abs(georef.transform.determinant)
    features = []
    for entity in mask_entities(np.asarray(prediction.mask, dtype=bool), min_area_px):
        outer = entity.rings[0]
        properties = {
            "id": len(features),
            "query": query["text"],
            "level": query["level"],
            "area": entity.area_px * pixel_area,
            "area_px": entity.area_px,
            **entity_confidence(objects, logprobs, (*outer.min(axis=0), *outer.max(axis=0))),
        }
        geometry = entity_geometry(entity, georef.transform)
        features.append({"type": "Feature", "properties": properties, "geometry": geometry})
    return features


def has_pyogrio() -> bool:
    """Whether pyogrio (``socioseg[gis]``) is installed: it writes the GeoPackage."""
    from importlib.util import find_spec

    return find_spec("pyogrio") is not None


def query_color(index: int) -> tuple[int, int, int]:
    return QUERY_COLORS[index % len(QUERY_COLORS)]


def check_crs(dst_crs: str | None):
    """The pyproj CRS ``dst_crs`` names (``None`` stays ``None``); a one-line error otherwise."""
    if dst_crs is None:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(dst_crs)
    except CRSError as exc:
        raise AreaError(f"--dst-crs {dst_crs!r}: not a CRS pyproj knows (e.g. EPSG:4326)") from exc


def tidy_features(
    features: list[dict],
    georef: Georef | None,
    gsd: float | None,
    simplify: float | None,
    min_area_m2: float,
    dst_crs=None,
) -> list[dict]:
    """Simplify, filter and reproject GeoJSON features of :func:`socioseg.region.stitch.stitch`.

    ``features``: polygons in the raster's CRS (pixel-corner coordinates without ``georef``);
    ``gsd``: metres per raster pixel (``None`` without a CRS); ``simplify``: tolerance in
    metres (``None``: one pixel; 0: none); ``min_area_m2``: smallest entity kept (with a CRS);
    ``dst_crs``: a pyproj CRS for the output coordinates (``None``: the raster's).
    Returns new features numbered from 0, with ``area_m2`` (``None`` without a CRS).
    """
    import shapely
    from shapely.geometry import mapping, shape

    if simplify is None:
        tolerance_px = 1.0
    elif gsd is None and simplify > 0:
        raise AreaError("--simplify is in metres, but the raster has no CRS; leave it out")
    else:
        tolerance_px = simplify / gsd if simplify else 0.0
    to_pixels = from_pixels = None
    if georef is not None:
        t = georef.transform
        inverse = ~t
        from_pixels = [t.a, t.b, t.d, t.e, t.c, t.f]
        to_pixels = [inverse.a, inverse.b, inverse.d, inverse.e, inverse.c, inverse.f]
    reproject = None
    if dst_crs is not None and georef is not None and georef.crs is not None:
        from pyproj import Transformer

        reproject = Transformer.from_crs(georef.crs, dst_crs, always_xy=True)
    out = []
    for feature in features:
        area_m2 = None if gsd is None else feature["properties"]["area_px"] * gsd * gsd
        if area_m2 is not None and area_m2 < min_area_m2:
            continue
        geometry = shape(feature["geometry"])
        if tolerance_px > 0:
            if to_pixels is not None:
                geometry = shapely.affinity.affine_transform(geometry, to_pixels)
            geometry = geometry.simplify(tolerance_px, preserve_topology=True)
            if from_pixels is not None:
                geometry = shapely.affinity.affine_transform(geometry, from_pixels)
        if reproject is not None:
            geometry = shapely.transform(geometry, lambda xy: np.column_stack(reproject.transform(
                xy[:, 0], xy[:, 1])))  # fmt: skip
        properties = {**feature["properties"], "id": len(out)}
        if area_m2 is not None:
            properties["area_m2"] = round(area_m2, 2)
        out.append({"type": "Feature", "properties": properties, "geometry": mapping(geometry)})
    return out


def layer_name(index: int, query: str) -> str:
    """A GeoPackage layer name for query ``index``: ``q1_<query>``, letters and digits kept."""
    slug = re.sub(r"\W+", "_", query.strip()).strip("_")[:48]
    return f"q{index + 1}_{slug}" if slug else f"q{index + 1}"


def write_geopackage(
    path: Path,
    features: list[dict],
    queries: list[dict],
    crs,
    models: dict[str, str] | None,
    fields: Sequence[str] = GPKG_FIELDS,
) -> Path:
    """``entities.gpkg``: one Polygon layer per query (:func:`layer_name`), even when empty,
    with the attributes ``fields`` (of :data:`GPKG_FIELDS`); ``crs``: the coordinates' CRS
    (``None``: none)."""
    from pyogrio.raw import write
    from shapely.geometry import shape

    models = models or {}
    tmp = path.with_name(path.name + ".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    for query in queries:
        own = [f for f in features if f["properties"]["query"] == query["text"]]
        rows, geoms = [f["properties"] for f in own], [shape(f["geometry"]) for f in own]
        columns = [
            np.array(
                [_field(name, row, query, models) for row in rows],
                dtype=_NUMBER_FIELDS.get(name, object),
            )
            for name in fields
        ]
        with warnings.catch_warnings():  # no CRS is what a raster without one gives
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            _write_layer(write, tmp, geoms, columns, fields, query, crs)
    tmp.replace(path)
    return path


def _field(name: str, row: dict, query: dict, models: dict[str, str]):
    """Attribute ``name`` of one entity (``row``: its GeoJSON properties)."""
    if name in ("query", "level"):
        return query["text" if name == "query" else "level"]
    if name in ("vlm", "sam"):
        return models.get(name)
    if name == "tiles":
        return ",".join(row.get("tiles", ()))
    if name in ("sam_score", "answer_logprob", "area_m2"):
        return _float(row.get("sam_iou" if name == "sam_score" else name))
    return row[name]


def _write_layer(write, tmp: Path, geoms, columns, fields, query: dict, crs) -> None:
    import shapely

    write(
        str(tmp),
        shapely.to_wkb(np.array(geoms, dtype=object)) if geoms else np.array([], dtype=object),
        columns,
        fields=list(fields),
        layer=layer_name(query["index"], query["text"]),
        driver="GPKG",
        geometry_type="Polygon",
        crs=None if crs is None else crs.to_wkt(),
    )


def _float(value) -> float:
    return np.nan if value is None else float(value)


def write_overview(
    path: Path, sat_path: Path, mask_path: Path, queries: Sequence[str], counts: Sequence[int]
) -> Path:
    """``overview.png`` (256 colours): the satellite image at most :data:`OVERVIEW_SIDE` px a
    side, each query's mask tinted (alpha 0.4) and outlined in :func:`query_color`, and a legend
    strip (query, entities found). Reads both rasters decimated, so memory stays small."""
    sat = _read_small(sat_path, rgb=True)
    height, width = sat.shape[:2]
    image = Image.fromarray(sat).convert("RGBA")
    masks = _read_small(mask_path, rgb=False, size=(width, height))
    for k, mask in enumerate(masks):
        color = query_color(k)
        layer = np.zeros((height, width, 4), dtype=np.uint8)
        layer[mask] = (*color, 102)
        edge = mask & ~_eroded(mask)
        layer[edge] = (*color, 255)
        image = Image.alpha_composite(image, Image.fromarray(layer, "RGBA"))
    out = _with_legend(image.convert("RGB"), queries, counts)
    tmp = path.with_name(path.name + ".tmp.png")
    # 256 colours (octree, no dithering) suffice for a quick look: a third of the size of
    # full RGB, and 5x faster to write (0.13 s against 0.69 s at 1024 x 1070 px).
    out.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(tmp, "PNG")
    tmp.replace(path)
    return path


def _eroded(mask: np.ndarray) -> np.ndarray:
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0


def _read_small(path: Path, rgb: bool, size: tuple[int, int] | None = None) -> np.ndarray:
    """H x W x 3 uint8 (``rgb``) or bands x H x W bool (mask > 0), longest side at most
    :data:`OVERVIEW_SIDE` (or exactly ``size``, ``(width, height)``)."""
    try:
        import rasterio
    except ImportError:
        rasterio = None
    if rasterio is None or path.suffix.lower() == ".png":
        with Image.open(path) as image:
            image = image.convert("RGB" if rgb else "L")
            target = size or _small_size(image.size)
            resample = Image.Resampling.BILINEAR if rgb else Image.Resampling.NEAREST
            pixels = np.asarray(image.resize(target, resample))
        return pixels if rgb else pixels[None] > 0
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        width, height = size or _small_size((ds.width, ds.height))
        if rgb:
            bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
            data = ds.read(bands, out_shape=(3, height, width), resampling=Resampling.average)
            return np.ascontiguousarray(data.transpose(1, 2, 0))
        # Averaging keeps a block where any pixel was found (0 is nodata, left out of means).
        data = ds.read(out_shape=(ds.count, height, width), resampling=Resampling.average)
        return data > 0


def _small_size(size: tuple[int, int]) -> tuple[int, int]:
    scale = min(1.0, OVERVIEW_SIDE / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _with_legend(image: Image.Image, queries: Sequence[str], counts: Sequence[int]) -> Image.Image:
    """``image`` above a white strip: one swatch and ``query (N entities)`` per query."""
    from socioseg.region.fonts import FontChain

    fonts, size = FontChain.default(), 14
    line = size + 8
    canvas = Image.new("RGB", (image.width, image.height + 6 + line * len(queries)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, (query, count) in enumerate(zip(queries, counts, strict=True)):
        top = image.height + 4 + k * line
        draw.rectangle([6, top + 3, 6 + size, top + 3 + size], fill=query_color(k))
        text = f"{query} ({count} {'entity' if count == 1 else 'entities'})"
        chosen = fonts.font_for(text, size)
        if chosen is None:  # a script no installed font draws: the query's number instead
            text, chosen = f"query {k + 1} ({count})", fonts.font_for(f"query {k + 1}", size)
        draw.text((12 + size, top + 3 + size / 2), text, fill=(20, 20, 20), font=chosen[1],
                  anchor="lm")  # fmt: skip
    return canvas
