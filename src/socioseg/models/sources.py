"""Where a model or a dataset comes from: a local path or a Hugging Face Hub id, decided once.

A string that looks like a local path is never sent to the Hub: it starts with ``.``, ``/`` or
``~``, has no ``owner/`` part, contains a separator but is no plausible ``owner/name`` id, or
its parent folder exists (``runs/x/checkpoint-5`` when ``runs/x`` exists). A missing local path
fails at once, in one line. A Hub id is checked against the local Hub cache first, then with
one quick request (no retries), so a typo or an offline machine fails in a second, not after
a minute of retries.

The name ``mini`` means socioseg-mini, the small models shipped inside the package
(``socioseg/assets/mini/vlm`` and ``.../sam``, made by ``make mini``), unless a local folder
called ``mini`` exists in the working directory: a local folder always wins. An install
without the shipped weights says so in one line.

Models are checked before anything is built: ``config.json``'s ``model_type`` must be one the
caller can load (a SAM2 folder given as the VLM would otherwise build a full-size default
Qwen2.5-VL).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

QWEN_VL_TYPES = ("qwen2_5_vl",)
SAM_TYPES = ("sam2", "sam2_video")
VLM_WHAT = "Qwen2.5-VL (--vlm)"
SAM_WHAT = "SAM2 (--sam)"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HUB_TIMEOUT_S = 10.0
MINI_NAME = "mini"
# socioseg-mini's shipped folders: MINI_DIR / "vlm" and MINI_DIR / "sam".
MINI_DIR = Path(__file__).resolve().parent / "assets" / "mini"


class SourceError(Exception):
    """A model or dataset source that cannot be used; the message says what to pass."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """No such local path, or no such Hub repository."""


class WrongSourceError(SourceError, ValueError):
    """The source exists but holds something else (a file, another kind of model)."""


def looks_local(text: str) -> bool:
    """True when ``text`` must be a local path, never a Hub id (see the module docstring)."""
    path = Path(text).expanduser()
    if text.startswith((".", "/", "~")) or path.exists() or "/" not in text:
        return True
    if os.sep in text.replace("/", "") or "\\" in text or not is_hub_id(text):
        return True
    return path.parent.is_dir()


def is_hub_id(text: str) -> bool:
    """``owner/name`` as the Hub spells repository ids."""
    return _HUB_ID.fullmatch(text) is not None and "--" not in text and ".." not in text


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
    cached = _cached_file(text, "config.json", "model")
    if cached is not None:
        _check_model_type(Path(cached), text, model_types, what)
        return text
    _check_hub_repo(text, "model", what)
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


def dataset_is_on_hub(text: str) -> bool:
    """For a dataset source that is no existing path: True when it is a Hub dataset id that
    exists (or is cached); :class:`SourceNotFoundError` in one line otherwise."""
    if looks_local(text):
        raise SourceNotFoundError(
            f"{text}: no such file or folder; pass a SocioSeg folder, parquet file(s) or a "
            "Hub dataset id like 'owner/name'"
        )
    if not _hub_cache_dir(text, "dataset").is_dir():
        _check_hub_repo(text, "dataset", "the SocioSeg dataset")
    return True


def _check_model_type(config: Path, name: str, model_types: tuple[str, ...], what: str) -> None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WrongSourceError(f"{config}: unreadable config.json ({error})") from error
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in model_types:
        raise WrongSourceError(
            f"{name} holds a {model_type!r} model, not {what.split(' (')[0]} "
            f"({' or '.join(model_types)}): pass a {what} checkpoint"
        )


def _cached_file(repo_id: str, filename: str, repo_type: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    return found if isinstance(found, str) else None


def _hub_cache_dir(repo_id: str, repo_type: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _check_hub_repo(repo_id: str, repo_type: str, what: str) -> None:
    """One request, no retries: the repository exists (or is gated, for the loader to say)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HTTPError, RepositoryNotFoundError

    local = f"{repo_id} is no local path and not in the Hub cache"
    if constants.HF_HUB_OFFLINE:
        offline = f"{local}, and HF_HUB_OFFLINE is set; pass a local copy as {what}"
        raise SourceNotFoundError(offline)
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=_HUB_TIMEOUT_S)
    except GatedRepoError:
        return
    except RepositoryNotFoundError as error:
        raise SourceNotFoundError(f"{local}, and no such {repo_type} on the Hub") from error
    except (HTTPError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceNotFoundError(
            f"{local}, and the Hub cannot be reached ({first}); pass a local copy as {what}"
        ) from error
