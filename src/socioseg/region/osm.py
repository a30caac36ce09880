"""Render an OpenStreetMap extract as a web map on a raster's exact grid.

OSM data is read with pyosmium (``.osm.pbf``, ``.osm`` XML and the other formats libosmium
reads): areas (closed ways and multipolygon relations) are filled by land use, buildings
drawn with outlines, highways as cased lines whose width follows their class, and named POIs
(and named areas) get a pin coloured by their urban function and a label. Drawing goes
through the synthetic generator's painter (:mod:`socioseg.data.synth.paint`), so maps made here
look like the training maps. Sizes are in metres on the ground and scaled so that, at
:data:`~socioseg.region.grid.SOCIOSEG_GSD`, lines and text have SocioSeg's pixel sizes.

Give an extract clipped to the raster (``osmium extract -b``): the whole file is read (with a
progress bar from :data:`LARGE_OSM_BYTES`), roads are clipped to the raster's surroundings,
and nodes with an invalid location are skipped and counted (a file with no valid node is
refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from socioseg.data.synth.paint import (
    BUILDING_OUTLINE,
    MAP_BACKGROUND,
    MAP_FILL,
    MAP_PART,
    RoadLine,
    paint_area,
    paint_roads,
)
from socioseg.region.fonts import FontChain
from socioseg.region.grid import METRES_PER_DEGREE, SOCIOSEG_GSD, Grid
from socioseg.region.map_labels import LabelReport, Poi, importance, place_map_labels
from socioseg.region.raster import AreaError

LARGE_OSM_BYTES = 8 * 1024 * 1024  # files from this size get a progress bar while read
PROGRESS_EVERY = 10_000  # objects between progress updates
MIN_PAD_DEGREES = 0.0005  # about 50 m: the least margin kept around the raster
# (tag, values, fill) in drawing order: the first match decides; later layers paint over earlier.
AREA_FILLS: tuple[tuple[str, frozenset[str], tuple[int, int, int]], ...] = tuple(
    (key, frozenset(values.split()), fill)
    for key, values, fill in (
        ("landuse", "residential", MAP_FILL["residential"]),
        ("landuse", "commercial retail", MAP_FILL["mall"]),
        ("landuse", "industrial railway", MAP_FILL["factory"]),
        ("landuse", "grass meadow village_green recreation_ground forest", MAP_FILL["green"]),
        ("natural", "wood scrub grassland heath", MAP_FILL["green"]),
        ("leisure", "park garden", MAP_FILL["park"]),
        ("amenity", "school university college kindergarten", MAP_FILL["campus"]),
        ("amenity", "hospital clinic", MAP_FILL["hospital"]),
        ("leisure", "stadium sports_centre", MAP_FILL["stadium"]),
        ("leisure", "pitch track", MAP_PART["pitch"]),
        ("amenity", "parking", MAP_PART["parking"]),
        ("natural", "water", MAP_FILL["water"]),
        ("landuse", "reservoir basin", MAP_FILL["water"]),
        ("waterway", "riverbank dock", MAP_FILL["water"]),
    )
)
# highway class -> (width in metres, major); link roads take their class's width.
ROAD_CLASSES: dict[str, tuple[float, bool]] = {
    "motorway": (16.0, True),
    "trunk": (14.0, True),
    "primary": (12.0, True),
    "secondary": (10.0, True),
    "tertiary": (8.0, False),
    "unclassified": (6.0, False),
    "residential": (6.0, False),
    "living_street": (5.0, False),
    "service": (4.0, False),
    "pedestrian": (4.0, False),
    "footway": (2.0, False),
    "path": (2.0, False),
    "cycleway": (2.0, False),
}
# (tag, values, urban function) deciding a POI's pin colour; the first match wins.
POI_FUNCTIONS: tuple[tuple[str, frozenset[str] | None, str], ...] = tuple(
    (key, None if values == "*" else frozenset(values.split()), function)
    for key, values, function in (
        ("amenity", "school university college kindergarten library", "Educational"),
        ("building", "school university college kindergarten", "Educational"),
        ("amenity", "hospital clinic doctors dentist pharmacy", "Medical"),
        ("building", "hospital", "Medical"),
        ("amenity", "townhall police courthouse fire_station post_office", "Administrative"),
        ("office", "government", "Administrative"),
        ("office", "*", "Business office"),
        ("leisure", "park garden playground nature_reserve", "Park and greenspace"),
        ("place", "square", "Park and greenspace"),
        ("leisure", "*", "Sport and cultural"),
        ("amenity", "theatre cinema arts_centre place_of_worship", "Sport and cultural"),
        ("tourism", "museum gallery", "Sport and cultural"),
        ("railway", "station halt", "Transportation stations"),
        ("amenity", "bus_station ferry_terminal", "Transportation stations"),
        ("public_transport", "station", "Transportation stations"),
        ("building", "train_station", "Transportation stations"),
        ("aeroway", "terminal aerodrome", "Transportation stations"),
        ("landuse", "industrial", "Industrial"),
        ("man_made", "works", "Industrial"),
        ("landuse", "residential", "Residential"),
        ("place", "neighbourhood quarter", "Residential"),
        ("amenity", "*", "Commercial service"),
        ("shop", "*", "Commercial service"),
        ("tourism", "*", "Commercial service"),
    )
)

# (tag, values, SocioSeg class) of the features a query may be about; the first match wins.
SOCIO_CLASSES: tuple[tuple[str, frozenset[str] | None, str], ...] = tuple(
    (key, None if values == "*" else frozenset(values.split()), socio_class)
    for key, values, socio_class in (
        ("amenity", "school kindergarten", "School"),
        ("amenity", "university college", "University"),
        ("building", "school kindergarten", "School"),
        ("building", "university college", "University"),
        ("amenity", "hospital", "Hospital"),
        ("building", "hospital", "Hospital"),
        ("amenity", "clinic doctors", "Health Center"),
        ("leisure", "park garden", "Park"),
        ("place", "square", "Square"),
        ("leisure", "stadium sports_centre", "Stadium"),
        ("leisure", "pitch", "Soccer Field"),
        ("tourism", "museum gallery", "Museum"),
        ("shop", "mall department_store", "Shopping Mall"),
        ("tourism", "hotel", "Hotel"),
        ("railway", "station", "Railway Station"),
        ("public_transport", "station", "Railway Station"),
        ("building", "train_station", "Railway Station"),
        ("amenity", "bus_station", "Bus Station"),
        ("amenity", "townhall", "Government"),
        ("office", "government", "Government"),
        ("amenity", "police", "Police Station"),
        ("office", "*", "Office Building"),
        ("man_made", "works", "Factory"),
        ("landuse", "industrial", "Industrial Park"),
        ("landuse", "residential", "Residential Community"),
    )
)


@dataclass
class OsmLayers:
    """What the map draws, in WGS-84 lon/lat: rings are N x 2 float arrays."""

    areas: list[tuple[tuple[int, int, int], np.ndarray, list[np.ndarray]]] = field(
        default_factory=list
    )
    buildings: list[tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=list)
    roads: list[tuple[np.ndarray, float, bool]] = field(default_factory=list)
    pois: list[Poi] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None  # keep only what meets it
    nodes: int = 0  # nodes read
    invalid: int = 0  # nodes skipped: a location outside lon/lat's range

    def wants(self, lonlat: np.ndarray) -> bool:
        """Whether a feature with these N x 2 coordinates meets ``bbox`` (bounded memory)."""
        if self.bbox is None:
            return True
        (x0, y0), (x1, y1) = lonlat.min(axis=0), lonlat.max(axis=0)
        return (
            x0 <= self.bbox[2] and self.bbox[0] <= x1 and y0 <= self.bbox[3] and self.bbox[1] <= y1
        )


def _first_match(tags, table):
    for key, values, value in table:
        tag = tags.get(key)
        if tag is not None and (values is None or tag in values):
            return value
    return None


def _name(tags, name_tag: str) -> str | None:
    return tags.get(name_tag) or tags.get("name")


def read_osm(path: str | Path, name_tag: str = "name", bbox=None) -> OsmLayers:
    """The areas, buildings, roads and named POIs of an OSM file (see the module docstring).

    ``name_tag``: the tag labels are read from (``name``, ``name:en``, ``name:zh``, ...);
    a feature without it falls back to ``name``. ``bbox``: ``(west, south, east, north)``
    in degrees; features entirely outside it are not kept.
    """
    import osmium

    path = Path(path)
    if path.is_dir():
        raise AreaError(f"--osm {path} is a folder; give an OSM file (.osm.pbf or .osm)")
    if not path.is_file():
        raise AreaError(f"{path}: no such file")
    from tqdm.auto import tqdm

    layers = OsmLayers(bbox=bbox)
    large = path.stat().st_size >= LARGE_OSM_BYTES
    try:
        with tqdm(desc=f"reading {path.name}", unit=" objects", disable=not large) as bar:
            for count, obj in enumerate(osmium.FileProcessor(str(path)).with_areas(), 1):
                if count % PROGRESS_EVERY == 0:
                    bar.update(PROGRESS_EVERY)
                if obj.is_node():
                    layers.nodes += 1
                    if not obj.location.valid():
                        layers.invalid += 1
                    elif obj.tags:  # an untagged node only places a way's point
                        tags = dict(obj.tags)
                        _add_poi(layers, tags, obj.location.lon, obj.location.lat, name_tag)
                elif obj.is_way():
                    _add_road(layers, dict(obj.tags), obj)
                elif obj.is_area():
                    _add_area(layers, dict(obj.tags), obj, name_tag)
    except (RuntimeError, ValueError, osmium.InvalidLocationError) as exc:  # parse errors
        message = " ".join(str(exc).split())[:200]
        raise AreaError(f"{path}: not an OSM file pyosmium can read ({message})") from exc
    if layers.nodes and layers.invalid == layers.nodes:
        raise AreaError(
            f"{path}: none of its {layers.nodes} nodes has a valid location (lat -90..90, "
            "lon -180..180); is it an OSM file?"
        )
    return layers


def _poi(tags, lon: float, lat: float, name_tag: str, area_m2: float = 0.0) -> Poi | None:
    """The POI of a named feature with an urban function, else ``None``."""
    name, function = _name(tags, name_tag), _first_match(tags, POI_FUNCTIONS)
    if not (name and function):
        return None
    socio_class = _first_match(tags, SOCIO_CLASSES)
    return Poi(lon, lat, name, function, area_m2, socio_class, importance(tags))


def _add_poi(layers: OsmLayers, tags, lon: float, lat: float, name_tag: str) -> None:
    poi = _poi(tags, lon, lat, name_tag)
    if poi is not None and layers.wants(np.array([[lon, lat]])):
        layers.pois.append(poi)


def _add_road(layers: OsmLayers, tags, way) -> None:
    highway = tags.get("highway", "").removesuffix("_link")
    if highway not in ROAD_CLASSES or tags.get("area") == "yes":
        return
    coords = np.array([(n.lon, n.lat) for n in way.nodes if n.location.valid()])
    if len(coords) >= 2 and layers.wants(coords):
        for part in clip_line(coords, layers.bbox):
            layers.roads.append((part, *ROAD_CLASSES[highway]))


def clip_line(coords: np.ndarray, bbox) -> list[np.ndarray]:
    """The parts of a line (N x 2 lon/lat) inside ``bbox``: a road across a region is drawn
    only where it can show, not joint by joint far outside the raster."""
    if bbox is None:
        return [coords]
    (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
    if bbox[0] <= x0 and x1 <= bbox[2] and bbox[1] <= y0 and y1 <= bbox[3]:
        return [coords]
    import shapely

    clipped = shapely.clip_by_rect(shapely.LineString(coords), *bbox)
    parts = getattr(clipped, "geoms", [clipped])
    return [
        np.asarray(p.coords) for p in parts if p.geom_type == "LineString" and len(p.coords) >= 2
    ]


def _add_area(layers: OsmLayers, tags, area, name_tag: str) -> None:
    fill = _first_match(tags, AREA_FILLS)
    building = "building" in tags and tags["building"] != "no"
    if fill is None and not building:
        return
    rings = []
    for outer in area.outer_rings():
        exterior = _ring(outer)
        if len(exterior) < 3 or not layers.wants(exterior):
            continue
        holes = [h for h in (_ring(inner) for inner in area.inner_rings(outer)) if len(h) >= 3]
        rings.append((exterior, holes))
        if building:
            layers.buildings.append((exterior, holes))
        else:
            layers.areas.append((fill, exterior, holes))
    if rings and _poi(tags, 0.0, 0.0, name_tag) is not None:
        from shapely.geometry import Polygon

        polygons = [Polygon(exterior, holes) for exterior, holes in rings]
        largest = max(polygons, key=lambda p: p.area)
        point = largest.representative_point()
        # Square degrees to square metres at the area's latitude (ranking only needs ~1%).
        m2 = sum(p.area for p in polygons) * METRES_PER_DEGREE**2 * np.cos(np.radians(point.y))
        layers.pois.append(_poi(tags, point.x, point.y, name_tag, max(float(m2), 1e-6)))


class OsmMap(NamedTuple):
    """A rendered OSM map: ``rgb`` H x W x 3 uint8 (rows from the top), its label report and
    notes for users (e.g. label fonts that are not installed)."""

    rgb: np.ndarray
    labels: LabelReport
    notes: tuple[str, ...] = ()


def _ring(nodes) -> np.ndarray:
    """A ring's nodes as N x 2 lon/lat, without nodes whose location is invalid."""
    return np.array([(n.lon, n.lat) for n in nodes if n.location.valid()]).reshape(-1, 2)


def render_osm(
    path: str | Path, grid: Grid, name_tag: str = "name", font: str | Path | None = None
) -> OsmMap:
    """The web map of an OSM file on ``grid``, labelled as :mod:`socioseg.region.map_labels`
    says; its notes say how many nodes were skipped for an invalid location, if any.

    ``font``: a TrueType/OpenType file tried first for every label, before the default fonts
    of :mod:`socioseg.region.fonts`.
    """
    if font is not None:
        _check_font(Path(font))
    x, y = grid.pixel_centres(step=max(1, min(grid.width, grid.height) // 16))
    lon, lat = grid.to_lonlat().transform(x.ravel(), y.ravel())
    # 10% around the raster, at least ~50 m: a clipped road's end never shows inside it.
    pad_lon = max(0.1 * (lon.max() - lon.min()), MIN_PAD_DEGREES)
    pad_lat = max(0.1 * (lat.max() - lat.min()), MIN_PAD_DEGREES)
    bbox = (lon.min() - pad_lon, lat.min() - pad_lat, lon.max() + pad_lon, lat.max() + pad_lat)
    layers = read_osm(path, name_tag, bbox)
    notes = []
    if layers.invalid:
        notes.append(
            f"{Path(path).name}: skipped {layers.invalid} of {layers.nodes} nodes with an "
            "invalid location"
        )
    to_grid = grid.from_lonlat()
    gsd = grid.gsd()
    s = SOCIOSEG_GSD / gsd

    def pixels(lonlat: np.ndarray) -> list[tuple[float, float]]:
        x, y = to_grid.transform(lonlat[:, 0], lonlat[:, 1])
        cols, rows = grid.pixels_of(x, y)
        # PIL puts integer coordinates at pixel centres; ours are pixel corners.
        return list(zip((cols - 0.5).tolist(), (rows - 0.5).tolist(), strict=True))

    image = Image.new("RGB", (grid.width, grid.height), MAP_BACKGROUND)
    for fill, exterior, holes in layers.areas:
        paint_area(image, pixels(exterior), [pixels(h) for h in holes], fill)
    for exterior, holes in layers.buildings:
        paint_area(
            image, pixels(exterior), [pixels(h) for h in holes], MAP_PART["building"],
            BUILDING_OUTLINE,
        )  # fmt: skip
    draw = ImageDraw.Draw(image)
    roads = [RoadLine(pixels(c), max(1.0, width / gsd), major) for c, width, major in layers.roads]
    paint_roads(draw, roads, s)
    fonts = FontChain.default(font)
    pins = [(pixels(np.array([[p.lon, p.lat]]))[0], p) for p in layers.pois]
    report = place_map_labels(draw, pins, (grid.width, grid.height), s, fonts)
    note = fonts.note()
    return OsmMap(np.asarray(image), report, (*notes, *([] if note is None else [note])))


def _check_font(path: Path) -> None:
    from PIL import ImageFont

    try:
        ImageFont.truetype(str(path), 12)
    except OSError as exc:
        raise AreaError(f"--font {path}: not a font file Pillow can open ({exc})") from exc
