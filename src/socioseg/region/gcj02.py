"""WGS-84 <-> GCJ-02, the obfuscated datum of web maps published in China (Amap, Tencent, ...).

The forward shift is the widely published formula (Krasovsky 1940 ellipsoid, a polynomial plus
sines of longitude and latitude); it moves points by up to ~700 m. There is no closed-form
inverse: :func:`gcj02_to_wgs84` iterates ``w <- w - (forward(w) - g)``, which converges because
the shift changes by under 1e-4 of the distance between two points; ten rounds leave
sub-millimetre error. Points outside China's bounding box are not shifted (as the vendors do).

All functions take and return longitude and latitude in degrees, as floats or numpy arrays.
"""

from __future__ import annotations

import numpy as np

_A = 6378245.0  # Krasovsky 1940 semi-major axis, metres
_EE = 0.00669342162296594323  # its first eccentricity squared
INVERSE_ROUNDS = 10


def _in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return (lon > 72.004) & (lon < 137.8347) & (lat > 0.8293) & (lat < 55.8271)


def _shift_lat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    out += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    out += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    out += (160.0 * np.sin(y / 12.0 * np.pi) + 320 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return out


def _shift_lon(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    out += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    out += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    out += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return out


def wgs84_to_gcj02(lon, lat):
    """GCJ-02 ``(lon, lat)`` of WGS-84 ``(lon, lat)`` (degrees; scalars or arrays)."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    x, y = lon - 105.0, lat - 35.0
    dlat, dlon = _shift_lat(x, y), _shift_lon(x, y)
    rad = lat / 180.0 * np.pi
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    inside = _in_china(lon, lat)
    return _like(np.where(inside, lon + dlon, lon)), _like(np.where(inside, lat + dlat, lat))


def gcj02_to_wgs84(lon, lat):
    """WGS-84 ``(lon, lat)`` whose GCJ-02 position is ``(lon, lat)`` (fixed-point iteration)."""
    g_lon, g_lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    w_lon, w_lat = g_lon.copy(), g_lat.copy()
    for _ in range(INVERSE_ROUNDS):
        f_lon, f_lat = wgs84_to_gcj02(w_lon, w_lat)
        w_lon, w_lat = w_lon - (f_lon - g_lon), w_lat - (f_lat - g_lat)
    return _like(w_lon), _like(w_lat)


def _like(values: np.ndarray):
    return float(values) if values.ndim == 0 else values
