"""Fonts for map labels: a chain of installed fonts, and the first one that draws a label.

Pillow has no font fallback: a character the font lacks is drawn as its ``.notdef`` glyph (a
box). So a label takes the first font of a chain that has every one of its glyphs, and a label
no font of the chain can draw is left out (the caller counts it), never drawn with boxes.

The default chain is the Noto fonts of two Debian packages (SIL Open Font License 1.1), looked
up at their installed paths; ``apt-get install fonts-noto-core fonts-noto-cjk``:

1. Noto Sans (``fonts-noto-core``): Latin with every diacritic, Greek, Cyrillic.
2. Noto Sans CJK SC (``fonts-noto-cjk``, face 2 of the collection: Simplified Chinese glyph
   forms): Chinese, Japanese kana, Korean hangul, and Latin-1.
3. DejaVu Sans (``fonts-dejavu-core``): Latin, Greek and Cyrillic where Noto is missing.

Files that are not installed are skipped; when none is, Pillow's bundled font (Latin without
most diacritics) is the only link. A user's ``--font`` goes first, before the defaults.

A glyph is missing when Pillow draws the character exactly as it draws a noncharacter
(U+FFFF, which no font maps): same mask, same advance. This is what Pillow really draws, so
characters that HarfBuzz composes from a base letter and a combining mark count as present.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

NOTO_SANS = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
NOTO_SANS_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
NOTO_SANS_CJK_SC = 2  # face of the collection: JP 0, KR 1, SC 2, TC 3, HK 4
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
DEFAULT_FACES: tuple[tuple[Path, int], ...] = (
    (NOTO_SANS, 0),
    (NOTO_SANS_CJK, NOTO_SANS_CJK_SC),
    (DEJAVU_SANS, 0),
)
FONT_PACKAGES = "fonts-noto-core fonts-noto-cjk"
NOTDEF_PROBE = "\uffff"  # a noncharacter: every font draws it as .notdef

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class FontChain:
    """Font faces ``(file, face index)`` tried in order; empty: Pillow's bundled font only."""

    faces: tuple[tuple[str, int], ...]

    @classmethod
    def default(cls, first: str | Path | None = None) -> FontChain:
        """``first`` (a user's font file, face 0), then the installed default faces."""
        faces = [(str(path), index) for path, index in DEFAULT_FACES if path.is_file()]
        if first is not None:
            faces.insert(0, (str(first), 0))
        return cls(tuple(faces))

    def fonts(self, size: int) -> list[Font]:
        """The chain's fonts at ``size`` pixels (Pillow's bundled font when the chain is empty)."""
        if not self.faces:
            return [_bundled(size)]
        return [_load(path, index, size) for path, index in self.faces]

    def font_for(self, text: str, size: int) -> tuple[tuple[str | None, int], Font] | None:
        """``((file, face), font)`` of the first font of the chain that draws every character
        of ``text`` (file ``None``: Pillow's bundled font), or ``None`` when none does."""
        faces = self.faces or ((None, 0),)
        for face, font in zip(faces, self.fonts(size), strict=True):
            if not missing_glyphs(font, text):
                return face, font
        return None

    def note(self) -> str | None:
        """A line for users when the default Noto fonts are not installed, else ``None``."""
        have = {path for path, _ in self.faces}
        if str(NOTO_SANS) in have and str(NOTO_SANS_CJK) in have:
            return None
        return (
            f"the Noto label fonts are not installed ({FONT_PACKAGES} on Debian/Ubuntu): names "
            "in scripts the available fonts lack are left off the map; or pass --font FILE"
        )


@lru_cache(maxsize=32)
def _load(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


@lru_cache(maxsize=8)
def _bundled(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _signature(font: Font, char: str) -> tuple:
    mask = font.getmask(char, mode="L")
    return mask.size, bytes(mask), font.getlength(char)


@lru_cache(maxsize=64)
def _notdef(font: Font) -> tuple:
    return _signature(font, NOTDEF_PROBE)


@lru_cache(maxsize=65536)
def _drawn_as_notdef(font: Font, char: str) -> bool:
    return _signature(font, char) == _notdef(font)


def missing_glyphs(font: Font, text: str) -> set[str]:
    """The characters of ``text`` that ``font`` would draw as its ``.notdef`` glyph.

    Whitespace and format characters (zero-width joiners, marks of direction) are not checked:
    they draw nothing in any font.
    """
    return {
        char
        for char in set(text)
        if not char.isspace()
        and unicodedata.category(char) != "Cf"
        and _drawn_as_notdef(font, char)
    }
