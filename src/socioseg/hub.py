"""Local path or Hugging Face Hub id, decided once for models and datasets alike.

A string that looks like a local path is never sent to the Hub: it starts with ``.``, ``/`` or
``~``, has no ``owner/`` part, contains a separator but is no plausible ``owner/name`` id, or
its parent folder exists (``runs/x/checkpoint-5`` when ``runs/x`` exists). A missing local path
fails at once, in one line. A Hub id is checked against the local Hub cache first, then with
one quick request (no retries), so a typo or an offline machine fails in a second, not after
a minute of retries. What a model folder must hold is :mod:`socioseg.models.sources`' concern.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HUB_TIMEOUT_S = 10.0


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


def dataset_is_on_hub(text: str) -> bool:
    """For a dataset source that is no existing path: True when it is a Hub dataset id that
    exists (or is cached); :class:`SourceNotFoundError` in one line otherwise."""
    if looks_local(text):
        raise SourceNotFoundError(
            f"{text}: no such file or folder; pass a SocioSeg folder, parquet file(s) or a "
            "Hub dataset id like 'owner/name'"
        )
    if not hub_cache_dir(text, "dataset").is_dir():
        check_hub_repo(text, "dataset", "the SocioSeg dataset")
    return True


def cached_file(repo_id: str, filename: str, repo_type: str) -> str | None:
    """The local copy of ``filename`` of a Hub repository, if the Hub cache holds one."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    return found if isinstance(found, str) else None


def hub_cache_dir(repo_id: str, repo_type: str) -> Path:
    """Where the Hub cache keeps ``repo_id`` (it may not exist)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def check_hub_repo(repo_id: str, repo_type: str, what: str) -> None:
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
