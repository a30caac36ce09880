"""Your own region: a web-map image for any georeferenced raster, and datasets from your labels.

- :mod:`socioseg.region.mapping`: ``make_map(grid, source, out)``, the one entry point;
- :mod:`socioseg.region.osm` renders an OpenStreetMap extract onto a raster's grid in the
  synthetic generator's web-map style;
- :mod:`socioseg.region.xyz` mosaics XYZ web-map tiles onto a raster's grid;
- :mod:`socioseg.region.gcj02` converts between WGS-84 and China's GCJ-02;
- :mod:`socioseg.region.grid` describes a raster grid and its ground resolution;
- :mod:`socioseg.region.labels` reads labelled polygons into a raster's pixels;
- :mod:`socioseg.region.dataset` cuts a raster pair and labelled polygons into a SocioSeg
  folder dataset.

Everything needs the ``gis`` extra (``pip install 'socioseg[gis]'``).
"""
