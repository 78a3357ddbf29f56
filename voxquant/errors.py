"""The one errors module of voxquant.

Every error the library raises on purpose derives from :class:`VoxquantError`,
so batch code can catch it per file, record it, and go on. Anything else that
escapes is a bug.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path


class VoxquantError(Exception):
    """Base class of every error voxquant raises on purpose."""


class ConfigError(VoxquantError, ValueError):
    """An option or configuration value is invalid."""


class AudioInputError(ConfigError):
    """Audio handed to the library in memory is unusable: not mono, a sample type that is
    not audio, or non-finite samples (NaN or inf). Nothing of the rejected chunk was
    consumed, so the stream can go on with the next one."""


class DataNotFoundError(VoxquantError, FileNotFoundError):
    """The shared audio folder (``VOXQUANT_DATA`` or ``../shared/data``) is absent."""


class AudioDecodeError(VoxquantError):
    """An audio file could not be decoded or holds unusable samples."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelImportError(VoxquantError):
    """A model file is malformed or cannot be planned."""

    def __init__(self, path: str | Path, node: str | None, reason: str):
        self.path = str(path)
        self.node = node
        self.reason = reason
        where = f" (node {node!r})" if node else ""
        super().__init__(f"{self.path}{where}: {reason}")


class UnsupportedOpError(ModelImportError):
    """A model uses an operator the engine does not implement."""

    def __init__(self, path: str | Path, node: str | None, op: str):
        self.op = op
        super().__init__(path, node, f"unsupported operator {op!r}")


def checked_number(name: str, value, low: float, high: float = math.inf, *,
                   integer: bool = False) -> float:
    """``value`` as a float (an int when ``integer``: a whole float such as a sound card's
    44100.0 counts), finite and in ``[low, high]``, else :class:`ConfigError` naming the
    option (NaN, inf, strings and bools included)."""
    ok = (isinstance(value, Real) and not isinstance(value, bool) and low <= value <= high
          and math.isfinite(value) and (not integer or float(value).is_integer()))
    if not ok:
        what = "an integer" if integer else "a number"
        bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ConfigError(f"{name} must be {what} {bounds}, got {value!r}")
    return int(value) if integer else float(value)
