"""Georeferenced areas: segment a whole region, make its map, make datasets from your labels.

- :mod:`socioseg.region.area`: ``segment_area(...)`` (``socioseg segment-area``) tiles a large
  raster, runs the method per tile and stitches masks, GeoTIFF and GeoJSON; with
  :mod:`socioseg.region.stitch` (tiles into one mask and polygons) and
  :mod:`socioseg.region.run_files` (its resumable run folder and ranks) and
  :mod:`socioseg.region.gis_outputs` (GeoPackage, overview picture, simplified polygons);
- :mod:`socioseg.region.raster`: raster I/O (GeoTIFF or plain images, windows, CRS, polygons);

- :mod:`socioseg.region.mapping`: ``make_map(grid, source, out)``, the one entry point;
- :mod:`socioseg.region.osm` renders an OpenStreetMap extract onto a raster's grid in the
  synthetic generator's web-map style, its labels chosen and placed by
  :mod:`socioseg.region.map_labels` in fonts from :mod:`socioseg.region.fonts`;
- :mod:`socioseg.region.xyz` mosaics XYZ web-map tiles onto a raster's grid;
- :mod:`socioseg.region.gcj02` converts between WGS-84 and China's GCJ-02;
- :mod:`socioseg.region.grid` describes a raster grid and its ground resolution;
- :mod:`socioseg.region.labels` reads labelled polygons into a raster's pixels;
- :mod:`socioseg.region.dataset` cuts a raster pair and labelled polygons into a SocioSeg
  folder dataset.

Everything needs the ``gis`` extra (``pip install 'socioseg[gis]'``). It may import the core,
:mod:`socioseg.data` (its writers and the synthetic map painter), :mod:`socioseg.eval` (file
helpers) and :mod:`socioseg.torchrun`; only the CLI imports it.
"""
