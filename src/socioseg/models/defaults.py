"""What a VLM folder says about its own use: ``socioseg_inference.json``.

A model trained for one VLM frame and one answer length (socioseg-mini sees 252 x 252 and
answers in ~100 tokens) records them beside its weights, so that loading it applies them
without flags::

    {"min_pixels": 50176, "max_pixels": 63504,
     "max_new_tokens": {"stage1": 160, "stage2": 224}}

Every key is optional; explicit arguments (CLI flags, an ``InferenceConfig``) win over the
file, the file over socioseg's global defaults. The stage-1 limit also serves single-stage
answers. The processor carries the file through
``save_pretrained``, so every checkpoint trained from such a model keeps it. Only local
folders are read (a Hub model is used with the global defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULTS_FILE = "socioseg_inference.json"
_STAGES = ("stage1", "stage2")
_MAX_PIXELS = 16384 * 16384
_MAX_TOKENS = 32768
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ModelDefaults:
    """VLM frame bounds (pixels of area) and per-stage ``max_new_tokens``; None: not set."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    max_new_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return (
            self.min_pixels is not None or self.max_pixels is not None or bool(self.max_new_tokens)
        )

    @classmethod
    def read(cls, folder: str | Path) -> ModelDefaults:
        """The folder's ``socioseg_inference.json``; empty defaults when there is none.

        A present but broken file raises ``ValueError`` in one line naming the file and field.
        """
        path = Path(folder) / DEFAULTS_FILE
        if not Path(folder).is_dir() or not path.is_file():
            return cls()
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ValueError(f"{path} is over {_MAX_FILE_BYTES} bytes; it is not a settings file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path}: not valid JSON ({error}); fix or delete it") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be an object")
        unknown = sorted(set(data) - {"min_pixels", "max_pixels", "max_new_tokens"})
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}")
        low = _bounded(data.get("min_pixels"), _MAX_PIXELS, f"{path}: min_pixels")
        high = _bounded(data.get("max_pixels"), _MAX_PIXELS, f"{path}: max_pixels")
        if low is not None and high is not None and low > high:
            raise ValueError(f"{path}: min_pixels {low} is above max_pixels {high}")
        tokens = data.get("max_new_tokens") or {}
        if not isinstance(tokens, dict) or set(tokens) - set(_STAGES):
            raise ValueError(f"{path}: max_new_tokens must map stage1 / stage2 to token counts")
        limits = {
            k: _bounded(v, _MAX_TOKENS, f"{path}: max_new_tokens.{k}") for k, v in tokens.items()
        }
        return cls(low, high, limits)

    def write(self, folder: str | Path) -> None:
        """Write the set fields to ``folder/socioseg_inference.json`` (nothing when none is set)."""
        if not self.any:
            return
        data: dict = {}
        if self.min_pixels is not None:
            data["min_pixels"] = self.min_pixels
        if self.max_pixels is not None:
            data["max_pixels"] = self.max_pixels
        if self.max_new_tokens:
            data["max_new_tokens"] = dict(self.max_new_tokens)
        (Path(folder) / DEFAULTS_FILE).write_text(json.dumps(data, indent=2) + "\n")


def _bounded(value, high: int, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{name} must be an integer from 1 to {high}, got {value!r}")
    return value
