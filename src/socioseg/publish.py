"""Outputs written whole or not at all: a reader sees the old file or the new one, never half.

Every command writes into a temporary name inside its own output and renames it into place
(a rename within one file system is atomic), so a killed run leaves no half-written file
under a final name.
"""

from __future__ import annotations

from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) through a temporary sibling and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
