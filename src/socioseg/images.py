"""Reading images from files, bytes or PIL: the one place an input image is opened and decoded.

Every entry point (the pipeline's ``load_image``, the dataset loaders, scored prediction
masks, the demo's uploads, the CLI) reads through :func:`read_image`, so they all apply the
same rules:

- A pixel cap, checked from the header before decoding: ``width x height`` above
  :func:`pixel_limit` (default 25 megapixels; ``SOCIOSEG_MAX_IMAGE_PIXELS`` or the CLI's
  ``--max-image-pixels`` change it) is refused, as is anything Pillow takes for a
  decompression bomb.
- EXIF orientation is applied (``ImageOps.exif_transpose``): the image is what a viewer shows.
- Truncated files are refused (decoded fully, with Pillow's ``LOAD_TRUNCATED_IMAGES`` off).
- Bit depth, for ``mode="RGB"``: 8-bit modes convert as Pillow does; 16-bit grayscale
  (``I;16*``) is scaled to 8 bits by 1/257 (65535 -> 255, rounded), a fixed scale that does not
  depend on the image's content (16-bit RGB PNGs are already read at 8 bits by Pillow, from
  their high byte); 32-bit integer (``I``) and float (``F``) images have no standard range
  and are refused with a message saying so.

Errors are :class:`ImageError`, one line naming the file (or the caller's name for it).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
PIXEL_LIMIT_ENV = "SOCIOSEG_MAX_IMAGE_PIXELS"
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_REFUSED_MODES = {
    "I": "32-bit integer pixels",
    "F": "32-bit float pixels",
}
_limit: int | None = None

ImageSource = Image.Image | str | os.PathLike | bytes | bytearray | memoryview


class ImageError(ValueError):
    """An image that cannot be used; the message names it and says what to do.

    ``kind`` says why, for callers that word it their own way: ``"missing"``, ``"folder"``,
    ``"too-large"``, ``"unreadable"`` or ``"depth"``.
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


def pixel_limit() -> int:
    """The largest ``width x height`` accepted: set by :func:`set_pixel_limit`, else the
    ``SOCIOSEG_MAX_IMAGE_PIXELS`` environment variable, else 25,000,000."""
    if _limit is not None:
        return _limit
    text = os.environ.get(PIXEL_LIMIT_ENV)
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ImageError(f"{PIXEL_LIMIT_ENV}={text!r}: must be a positive number of pixels")
    return value


def set_pixel_limit(max_pixels: int | None) -> None:
    """Set the process-wide pixel cap (``None``: back to the environment / default)."""
    global _limit
    if max_pixels is not None and max_pixels < 1:
        raise ImageError(f"the pixel limit must be >= 1, got {max_pixels}")
    _limit = max_pixels


def read_image(
    source: ImageSource, name: str | None = None, *, mode: str | None = "RGB", max_pixels=None
) -> Image.Image:
    """Open, check and fully decode one image.

    Args:
        source: a path, encoded bytes, or a PIL image (checked and converted the same way).
        name: how messages call it (default: the path, or "image").
        mode: ``"RGB"`` (H x W x 3 uint8, bit depth handled as the module docstring says) or
            ``None`` to keep the decoded mode (masks: their values are compared with 0).
        max_pixels: the cap for this call (default :func:`pixel_limit`).

    Returns:
        A decoded PIL image, EXIF orientation applied.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    limit = pixel_limit() if max_pixels is None else max_pixels
    image = source if isinstance(source, Image.Image) else _open(source, label, limit)
    _check_pixels(image.size, label, limit)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as error:  # a corrupt EXIF block
        raise ImageError(f"{label}: unreadable EXIF data ({error})") from error
    return image if mode is None else _convert(image, label, mode)


def _open(source, label: str, limit: int) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        handle = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if path.is_dir():
            raise ImageError(
                f"{label}: is a folder, not an image file; pass the image's path", "folder"
            )
        if not path.is_file():
            where = "" if label == str(source) else f" at {path}"
            raise ImageError(f"{label}: file not found{where}", "missing")
        handle = path
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off file must fail, not load half black
    try:
        image = Image.open(handle)
        _check_pixels(image.size, label, limit)
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        message = f"{label}: refused as a decompression bomb ({error})"
        raise ImageError(message, "too-large") from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(
            f"{label} is not a readable image ({error}); pass a PNG, JPEG or TIFF file"
        ) from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    return image


def _check_pixels(size: tuple[int, int], label: str, limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageError(
            f"{label}: {width} x {height} pixels is over the limit of {limit:,} pixels; "
            f"pass a smaller image, or raise the limit with --max-image-pixels or "
            f"{PIXEL_LIMIT_ENV}",
            "too-large",
        )


def _convert(image: Image.Image, label: str, mode: str) -> Image.Image:
    if image.mode in _REFUSED_MODES:
        raise ImageError(
            f"{label}: {_REFUSED_MODES[image.mode]} have no standard range; convert the image "
            "to 8 or 16 bits per channel",
            "depth",
        )
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(values / 257.0).astype(np.uint8))
    return image.convert(mode)
