"""Outputs written whole or not at all, and never over what the command did not write.

Every command writes into a temporary place inside its own output and renames it into place
(a rename within one file system is atomic), so a killed run leaves no half-written file
under a final name and nothing beside the output. A file is written through a temporary
sibling (:func:`write_text_atomic`); a folder of results is built in a staging folder inside
the output (:func:`staging_dir`) and its entries are renamed into the output at the end
(:func:`publish_dir`). The staging folder carries a marker file, so a later run removes a
leftover staging folder only when it is one of ours.

What already exists is the user's unless the command can tell it wrote it (a record file in
a folder, a tag in a file): :func:`refuse_foreign` refuses it, even with ``--overwrite``, and
:func:`check_not_input` refuses an output that is one of the inputs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

STAGING = ".socioseg-partial"
STAGING_MARK = "STAGING"  # the marker file's name inside a staging folder


class OutputError(Exception):
    """An output that cannot be written without harming the user's files; one line."""


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) through a temporary sibling and a rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (hard links and symlinks included)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:  # one vanished or cannot be stat-ed between the checks: compare paths
            return a.resolve() == b.resolve()
    return a.resolve() == b.resolve()


def check_not_input(out: str | Path, inputs: dict[str, str | Path | None], flag: str) -> None:
    """Refuse an output path that is one of the inputs (``{flag name: path}``)."""
    for name, path in inputs.items():
        if path is not None and same_path(out, path):
            raise OutputError(f"{flag} {out} is the input {name}; write the output elsewhere")


def refuse_foreign(path: Path, flag: str, overwrite: bool, ours: bool, what: str) -> None:
    """Refuse an existing ``path``: always when it is not ``ours`` (the command cannot tell it
    wrote it), else unless ``overwrite``. ``what`` names what the command writes there."""
    if not path.exists():
        return
    if not ours:
        raise OutputError(
            f"{flag} {path} exists and is not {what} socioseg wrote; it is left alone: "
            f"pick another {flag}"
        )
    if not overwrite:
        raise OutputError(
            f"{flag} {path} exists ({what} from an earlier run): pass --overwrite to replace "
            f"it, or another {flag}"
        )


def is_staging(path: Path) -> bool:
    return path.name == STAGING and (path / STAGING_MARK).is_file()


def entries(out: Path) -> list[Path]:
    """What ``out`` holds, not counting a staging folder of ours (``[]`` when missing)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if not is_staging(p))


def others_listed(out: Path, ours: Iterable[str] = ()) -> str:
    """What ``out`` holds besides the names ``ours`` (and a staging folder of ours), as the
    first three names for a message (``"a, b, c, ..."``); ``""`` when it holds nothing else."""
    ours = set(ours)
    names = [p.name for p in entries(out) if p.name not in ours]
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def staging_dir(out: str | Path) -> Path:
    """A fresh, empty staging folder inside ``out`` (created with its parents). A leftover
    staging folder of an earlier failed run is removed; a folder of that name without our
    marker is the user's and is refused."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / STAGING
    if stage.exists() or stage.is_symlink():
        if not is_staging(stage) or stage.is_symlink():
            raise OutputError(f"{stage} is not a staging folder socioseg made; move it away")
        shutil.rmtree(stage)
    stage.mkdir()
    (stage / STAGING_MARK).write_text("socioseg writes here and moves the results up\n")
    return stage


def publish_dir(stage: Path, out: Path, replace: Iterable[str] = ()) -> list[str]:
    """Rename every entry of ``stage`` into ``out`` and remove ``stage``; returns their names.

    An entry of ``out`` under the same name is replaced only when its name is in ``replace``
    (what an earlier run of the command recorded writing); anything else is refused.
    """
    replace = set(replace)
    names = sorted(p.name for p in stage.iterdir() if p.name != STAGING_MARK)
    for name in names:
        target = out / name
        if (target.exists() or target.is_symlink()) and name not in replace:
            raise OutputError(f"{target} exists and socioseg did not write it; move it away")
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        (stage / name).replace(target)
    shutil.rmtree(stage)
    return names
