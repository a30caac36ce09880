"""Where a model comes from: a local folder, a Hugging Face Hub id (told apart by
:mod:`socioseg.hub`) or the name ``mini``.

The name ``mini`` means socioseg-mini, the small models shipped inside the package
(``socioseg/assets/mini/vlm`` and ``.../sam``, made by ``make mini``), unless a local folder
called ``mini`` exists in the working directory: a local folder always wins. An install
without the shipped weights says so in one line.

Models are checked before anything is built: ``config.json``'s ``model_type`` must be one the
caller can load, a family of :mod:`socioseg.models.families` (a SAM2 folder given as the VLM
would otherwise build a full-size default Qwen2.5-VL).
"""

from __future__ import annotations

import os
from pathlib import Path

from socioseg.hub import (
    SourceError,
    SourceNotFoundError,
    WrongSourceError,
    cached_file,
    check_hub_repo,
    looks_local,
)
from socioseg.models.families import POLICY_TYPES, SEGMENTER_TYPES, config_model_type

__all__ = ["SourceError", "SourceNotFoundError", "WrongSourceError", "check_models", "model_source"]

QWEN_VL_TYPES = POLICY_TYPES
SAM_TYPES = SEGMENTER_TYPES
VLM_WHAT = "Qwen2.5-VL / Qwen3-VL / Qwen3.5 (--vlm)"
SAM_WHAT = "SAM2 / SAM 3 tracker (--sam)"
MINI_NAME = "mini"
# socioseg-mini's shipped folders: MINI_DIR / "vlm" and MINI_DIR / "sam".
MINI_DIR = Path(__file__).resolve().parents[1] / "assets" / "mini"


def model_source(name_or_path: str | os.PathLike, model_types: tuple[str, ...], what: str) -> str:
    """Check a model source before loading; returns the folder path or the Hub id to load.

    Args:
        name_or_path: a local checkpoint folder or a Hub id ``owner/name``.
        model_types: ``config.json`` ``model_type`` values the caller can load.
        what: how to name the source and what to pass in messages, e.g.
            ``"SAM2 (--sam)"``.

    Raises:
        SourceNotFoundError: no such folder, or no such Hub model.
        WrongSourceError: a file, a folder without config.json, another model type.
    """
    text = str(name_or_path)
    if text == MINI_NAME and not Path(text).exists():
        text = _packaged_mini(model_types, what)
    if looks_local(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise SourceNotFoundError(
                f"{what}: folder not found: {text}; pass a checkpoint folder or a Hub id"
            )
        if not path.is_dir():
            raise WrongSourceError(f"{path} is a file, not a {what} checkpoint folder")
        config = path / "config.json"
        if not config.is_file():
            raise SourceNotFoundError(f"{path} has no config.json: not a {what} checkpoint folder")
        _check_model_type(config, str(path), model_types, what)
        return str(path)
    cached = cached_file(text, "config.json", "model")
    if cached is not None:
        _check_model_type(Path(cached), text, model_types, what)
        return text
    check_hub_repo(text, "model", what)
    return text


def check_models(vlm: str | os.PathLike, sam: str | os.PathLike) -> tuple[str, str]:
    """Check a VLM and a SAM2 source together, before either loads (seconds, not minutes).

    Returns the two sources to load (``mini`` resolved to its folder)."""
    return model_source(vlm, QWEN_VL_TYPES, VLM_WHAT), model_source(sam, SAM_TYPES, SAM_WHAT)


def is_packaged_mini(model) -> bool:
    """True when ``model`` (a transformers model) was loaded from the shipped socioseg-mini."""
    source = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return bool(source) and Path(source).resolve() == (MINI_DIR / "vlm").resolve()


def _packaged_mini(model_types: tuple[str, ...], what: str) -> str:
    """The shipped socioseg-mini folder for ``model_types``; one line when it is not there."""
    folder = MINI_DIR / ("vlm" if model_types == QWEN_VL_TYPES else "sam")
    if not (folder / "config.json").is_file():
        raise SourceNotFoundError(
            f"{what}: this socioseg install has no socioseg-mini weights ({folder} holds no "
            "config.json); train them with `make mini` (docs/mini.md), or pass a checkpoint "
            "folder or Hub id"
        )
    return str(folder)


def _check_model_type(config: Path, name: str, model_types: tuple[str, ...], what: str) -> None:
    try:
        model_type = config_model_type(config)
    except ValueError as error:
        raise WrongSourceError(str(error)) from error
    if model_type not in model_types:
        raise WrongSourceError(
            f"{name} holds a {model_type!r} model, not {what.split(' (')[0]} "
            f"({' or '.join(model_types)}): pass a {what} checkpoint"
        )
