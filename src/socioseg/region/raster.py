"""Raster input/output and mask polygons for ``segment-area`` and ``segment`` (and the demo's
GeoJSON).

Rasters are read in windows through rasterio (the optional extra ``socioseg[gis]``); plain
PNG/JPEG files are also accepted and read whole with Pillow when rasterio is not installed. A raster
is *georeferenced* when it has a CRS or a non-identity transform; masks are then written as
GeoTIFF on the same grid and polygons are given in the raster's CRS, otherwise in pixels.

Pixel coordinates here are pixel-corner coordinates: pixel ``(col, row)`` covers
``[col, col + 1) x [row, row + 1)``; a transform maps them to CRS coordinates.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from affine import Affine

PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GIS_INSTALL_HINT = "pip install 'socioseg[gis]'"
# Relative tolerance when comparing two rasters' transforms (fractions of a pixel).
GRID_TOLERANCE = 1e-6


class AreaError(Exception):
    """A problem with ``segment-area`` inputs or outputs; its message is one line for users."""


def _rasterio():
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


def has_rasterio() -> bool:
    """Whether rasterio (``socioseg[gis]``) is installed: it reads where a raster lies."""
    return _rasterio() is not None


@dataclass(frozen=True)
class Georef:
    """Where a raster lies: its CRS (a ``rasterio.crs.CRS`` or ``None``) and affine transform."""

    crs: Any
    transform: Affine

    def crs_name(self) -> str:
        if self.crs is None:
            return "no CRS"
        return self.crs.to_string() or "custom CRS"


class RasterSource:
    """A raster opened for windowed RGB reads. Use as a context manager.

    ``size`` is ``(width, height)``; ``georef`` is ``None`` for plain images.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise AreaError(f"{self.path}: no such file")
        self._dataset = None
        self._image: Image.Image | None = None
        self._palette: np.ndarray | None = None
        rasterio = _rasterio()
        if rasterio is not None:
            self._open_rasterio(rasterio)
        elif self.path.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
            self._open_pillow()
        else:
            raise AreaError(f"{self.path}: reading this raster needs rasterio: {GIS_INSTALL_HINT}")

    def _open_rasterio(self, rasterio) -> None:
        if self.path.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
            # GDAL returns garbage rows from a truncated PNG without an error; Pillow refuses it.
            self._check_complete()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            try:
                ds = rasterio.open(self.path)
            except rasterio.errors.RasterioIOError as exc:
                raise AreaError(f"{self.path}: not a raster GDAL can read") from exc
        self._dataset = ds
        if ds.count not in (1, 3, 4):
            ds.close()
            raise AreaError(
                f"{self.path}: has {ds.count} bands; expected 1 (grey), 3 or 4 (RGB[A])"
            )
        if ds.dtypes[0] != "uint8":
            ds.close()
            raise AreaError(
                f"{self.path}: pixels are {ds.dtypes[0]}, expected 8-bit RGB; convert it first, "
                "e.g. gdal_translate -ot Byte -scale IN OUT"
            )
        self.size = (ds.width, ds.height)
        self._palette = None
        if ds.count == 1 and ds.colorinterp[0] == rasterio.enums.ColorInterp.palette:
            # Web-map PNGs are often palette images: look the indices up, as Pillow would.
            self._palette = np.zeros((256, 3), dtype=np.uint8)
            for index, rgba in ds.colormap(1).items():
                self._palette[index] = rgba[:3]
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        self.georef = Georef(ds.crs, ds.transform) if georeferenced else None

    def _check_complete(self) -> None:
        """Decode the file once with the project's image reader (pixel cap, truncation)."""
        self._read_whole(mode=None)

    def _read_whole(self, mode: str | None) -> Image.Image:
        from socioseg.images import ImageError, read_image

        try:
            return read_image(self.path, str(self.path), mode=mode)
        except ImageError as exc:
            raise AreaError(str(exc)) from exc

    def _open_pillow(self) -> None:
        self._image = self._read_whole(mode="RGB")
        self.size = self._image.size
        self.georef = None

    def read(self, x: int, y: int, width: int, height: int) -> Image.Image:
        """The RGB pixels of the window at column ``x``, row ``y`` (image frame of the tile)."""
        if self._image is not None:
            return self._image.crop((x, y, x + width, y + height))
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        window = Window(x, y, width, height)
        try:
            if self._dataset.count == 1:
                grey = self._dataset.read(1, window=window)
                rgb = self._palette[grey] if self._palette is not None else np.stack([grey] * 3, -1)
            else:
                rgb = self._dataset.read([1, 2, 3], window=window).transpose(1, 2, 0)
        except RasterioIOError as exc:  # e.g. a file cut short
            raise AreaError(
                f"{self.path}: pixels of window {x},{y} {width}x{height} cannot be read ({exc}); "
                "is the file complete? (gdalinfo -checksum tells)"
            ) from exc
        return Image.fromarray(np.ascontiguousarray(rgb), "RGB")

    def is_nodata(self, x: int, y: int, width: int, height: int) -> bool:
        """True when the raster declares every pixel of the window invalid (nodata/alpha)."""
        if self._dataset is None:
            return False
        from rasterio.enums import MaskFlags
        from rasterio.windows import Window

        if all(MaskFlags.all_valid in flags for flags in self._dataset.mask_flag_enums):
            return False
        return not self._dataset.dataset_mask(window=Window(x, y, width, height)).any()

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_georef(path: str | Path) -> Georef | None:
    """Where the raster at ``path`` lies, or ``None``: a plain image (no CRS, identity
    transform), a file GDAL cannot read, or rasterio not installed (``socioseg[gis]``)."""
    rasterio = _rasterio()
    if rasterio is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as ds:
                crs, transform = ds.crs, ds.transform
        except rasterio.errors.RasterioIOError:
            return None
    return Georef(crs, transform) if crs is not None or not transform.is_identity else None


RasterFacts = tuple[str, Georef | None, tuple[int, int]]  # (name, georef, (width, height))


def check_same_extent(sat: RasterFacts, map_: RasterFacts) -> None:
    """Raise :class:`AreaError` when two georeferenced rasters (``(name, georef, (width,
    height))`` each) lie in different CRSs or cover different extents, by more than the larger
    pixel. Their pixel sizes may differ (``segment`` resizes the map to the satellite image);
    a raster without georeferencing is taken to cover the other's extent."""
    (sat_name, a, sat_size), (map_name, b, map_size) = sat, map_
    if a is None or b is None:
        return
    if a.crs != b.crs:
        raise AreaError(
            f"{map_name} is in {b.crs_name()} but {sat_name} is in {a.crs_name()}: reproject "
            "one onto the other (gdalwarp -t_srs ...)"
        )
    corners = [  # top-left and bottom-right pixel corners in CRS coordinates
        np.array([[t.c, t.f], [t.a * w + t.b * h + t.c, t.d * w + t.e * h + t.f]])
        for t, (w, h) in ((a.transform, sat_size), (b.transform, map_size))
    ]
    pixel = max(abs(v) for t in (a.transform, b.transform) for v in (t.a, t.b, t.d, t.e))
    if np.abs(corners[0] - corners[1]).max() > pixel:
        raise AreaError(
            f"{map_name} and {sat_name} cover different extents ({corners[1].ravel().tolist()} "
            f"vs {corners[0].ravel().tolist()}): give a map of the satellite image's area"
        )


def check_same_grid(sat: RasterSource, map_: RasterSource) -> Georef | None:
    """Raise :class:`AreaError` unless both rasters share size, CRS and transform.

    A plain image without georeferencing is taken to lie on the other raster's grid when the
    sizes agree. Returns the shared georeferencing (``None`` when neither has any).
    """
    if sat.size != map_.size:
        raise AreaError(
            f"{map_.path} is {map_.size[0]}x{map_.size[1]} px but {sat.path} is "
            f"{sat.size[0]}x{sat.size[1]} px: map and satellite must share one pixel grid "
            "(resample one onto the other, e.g. with gdalwarp)"
        )
    if sat.georef is None or map_.georef is None:
        return sat.georef or map_.georef
    if sat.georef.crs != map_.georef.crs:
        raise AreaError(
            f"{map_.path} is in {map_.georef.crs_name()} but {sat.path} is in "
            f"{sat.georef.crs_name()}: reproject one onto the other (gdalwarp -t_srs ...)"
        )
    a, b = sat.georef.transform, map_.georef.transform
    pixel = max(abs(a.a), abs(a.e), abs(a.b), abs(a.d))
    if not a.almost_equals(b, precision=GRID_TOLERANCE * pixel):
        raise AreaError(
            f"{map_.path} and {sat.path} cover different extents or pixel sizes "
            f"(transforms {tuple(b)[:6]} vs {tuple(a)[:6]}): they must share one pixel grid"
        )
    return sat.georef


def write_mask_raster(
    path: Path,
    size: tuple[int, int],
    georef: Georef | None,
    strips: Iterator[tuple[int, np.ndarray]],
    descriptions: Sequence[str] = (),
    color: tuple[int, int, int] | None = None,
) -> Path:
    """Write 0/255 uint8 masks from ``(row_offset, bands x rows x width bool)`` strips.

    With ``georef`` or several bands the file is a deflate-compressed GeoTIFF
    ``path.with_suffix('.tif')`` (on the input grid when georeferenced), written strip by strip,
    its bands described by ``descriptions``, 0 declared nodata (GIS viewers show only what was
    found) and, with ``color``, a colour table on band 1 (0 transparent, 255 ``color``; GeoTIFF
    keeps one for the first band only); one band without georeferencing is a PNG
    ``path.with_suffix('.png')``.
    """
    width, height = size
    bands = max(1, len(descriptions))
    if georef is None and bands == 1:
        full = np.zeros((height, width), dtype=np.uint8)
        for row, strip in strips:
            full[row : row + strip.shape[1]] = strip[0].astype(np.uint8) * 255
        out = path.with_suffix(".png")
        Image.fromarray(full, "L").save(out)
        return out
    rasterio = _rasterio()
    if rasterio is None:
        raise AreaError(f"masks of several queries are written as GeoTIFF: {GIS_INSTALL_HINT}")
    from rasterio.windows import Window

    out = path.with_suffix(".tif")
    tmp = out.with_name(out.name + ".tmp.tif")  # renamed into place once complete
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": "uint8",
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "nodata": 0,
    }
    if georef is not None:
        profile.update(crs=georef.crs, transform=georef.transform)
    with rasterio.open(tmp, "w", **profile) as dst:
        if color is not None:
            dst.write_colormap(1, {0: (0, 0, 0, 0), 255: (*color, 255)})
        for row, strip in strips:
            window = Window(0, row, width, strip.shape[1])
            dst.write(strip.astype(np.uint8) * 255, window=window)
        for band, text in enumerate(descriptions, start=1):
            dst.set_band_description(band, text)
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class Entity:
    """One 4-connected region of a mask.

    ``rings``: the outer ring then its holes, each an N x 2 float array of pixel-corner
    coordinates of the mask's frame, closed (first point repeated last). ``area_px``: pixels.
    """

    rings: tuple[np.ndarray, ...]
    area_px: int
    label: int


def label_entities(mask: np.ndarray, min_area_px: int = 1) -> tuple[np.ndarray, list[Entity]]:
    """Polygons of the 4-connected regions of an H x W bool mask, in pixel-corner coordinates.

    Returns ``(labels, entities)``: ``labels`` is H x W int32 from
    ``cv2.connectedComponentsWithStats(mask, connectivity=4)`` (0 = background) and each
    ``Entity.label`` indexes it; regions under ``min_area_px`` pixels are left out. 4-connected
    regions never pinch at a pixel corner. Outlines are OpenCV contours traced on the mask
    upsampled twice (one-pixel-wide parts keep an area): a quarter pixel inside the pixel edges.
    """
    import cv2

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    entities = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area_px:
            continue
        crop = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
        big = np.pad(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1), 1)
        contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        outer = [i for i, h in enumerate(hierarchy[0]) if h[3] < 0]
        # A 4-connected region has one outer border; keep the largest should tracing split it.
        top = max(outer, key=lambda i: cv2.contourArea(contours[i]))
        holes = [i for i, h in enumerate(hierarchy[0]) if h[3] == top]
        rings = tuple(_ring(contours[i], x, y) for i in [top, *holes])
        entities.append(Entity(rings, area, label))
    return labels, entities


def entity_confidence(
    objects: Iterable[Sequence[float]], logprobs: Sequence[float], box: Sequence[float]
) -> dict[str, float | None]:
    """An entity's ``sam_iou`` and ``answer_logprob``.

    ``objects``: the final-stage objects of the answers that found it, ``[x1, y1, x2, y2,
    SAM predicted IoU]`` in the entity's pixel frame; ``logprobs``: those answers' mean token
    log-probabilities; ``box``: the entity's ``(x0, y0, x1, y1)``. ``sam_iou`` is the highest
    score of an object whose box meets ``box``, ``answer_logprob`` the mean of ``logprobs``;
    ``None`` when there are none.
    """
    x0, y0, x1, y1 = box
    scores = [o[4] for o in objects if o[0] <= x1 and x0 <= o[2] and o[1] <= y1 and y0 <= o[3]]
    return {
        "sam_iou": round(max(scores), 4) if scores else None,
        "answer_logprob": round(float(np.mean(logprobs)), 4) if logprobs else None,
    }


def mask_entities(mask: np.ndarray, min_area_px: int = 1) -> list[Entity]:
    """The entities of :func:`label_entities` without the label image."""
    return label_entities(mask, min_area_px)[1]


def _ring(contour: np.ndarray, x0: int, y0: int) -> np.ndarray:
    # Undo the 1-px pad and the 2x upsampling; +0.5 moves from sub-pixel index to its centre.
    pts = (contour.reshape(-1, 2).astype(np.float64) - 1 + 0.5) / 2 + (x0, y0)
    return np.vstack([pts, pts[:1]])


def entity_geometry(
    entity: Entity, transform: Affine | None = None, offset: tuple[int, int] = (0, 0)
) -> dict:
    """GeoJSON Polygon of an entity.

    ``offset``: ``(col, row)`` of the entity's mask frame in the raster (added first);
    ``transform``: maps the raster's pixel-corner coordinates to CRS coordinates (``None``:
    stay in pixels).
    """
    rings = []
    for ring in entity.rings:
        ring = ring + np.asarray(offset, dtype=np.float64)
        if transform is not None:
            a, b, c, d, e, f = tuple(transform)[:6]
            ring = ring @ np.array([[a, d], [b, e]]) + (c, f)
        rings.append(np.round(ring, 6).tolist())
    return {"type": "Polygon", "coordinates": rings}


def feature_collection(features: Sequence[dict], georef: Georef | None) -> dict:
    """A GeoJSON FeatureCollection; with a CRS it names it in the (pre-RFC 7946) ``crs`` member,
    which GDAL/QGIS read, because the coordinates are in the raster's CRS, not WGS84."""
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if georef is not None and georef.crs is not None:
        epsg = georef.crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else georef.crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    collection["features"] = list(features)
    return collection


def mask_geojson(mask: np.ndarray, query: str = "", min_area_px: int = 1) -> dict:
    """A FeatureCollection of the mask's entities in pixel coordinates of the mask's frame."""
    features = [
        {
            "type": "Feature",
            "properties": {"id": i, "query": query, "area_px": e.area_px},
            "geometry": entity_geometry(e),
        }
        for i, e in enumerate(mask_entities(mask, min_area_px))
    ]
    return feature_collection(features, None)
