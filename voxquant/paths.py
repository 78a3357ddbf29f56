"""Where things are: the shared audio folder and the project root.

The shared audio is never copied into the repository. It is found through the
environment variable ``VOXQUANT_DATA``, else ``../shared/data`` relative to the
project root (the folder holding ``pyproject.toml``).
"""

from __future__ import annotations

import os
from pathlib import Path

from voxquant.errors import DataNotFoundError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
EXAMPLES_DIR = PACKAGE_DIR / "examples"


def shared_data_dir(required: bool = True) -> Path | None:
    """Return the shared audio folder.

    Parameters
    ----------
    required : bool
        When true, raise :class:`DataNotFoundError` if the folder is absent;
        otherwise return ``None``.
    """
    env = os.environ.get("VOXQUANT_DATA")
    if env:  # an explicit setting is the only place looked at
        candidates = [Path(env)]
    else:
        shared = Path("shared") / "data"
        candidates = [PROJECT_ROOT.parent / shared, Path.cwd().parent / shared]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    if required:
        where = env if env else str(PROJECT_ROOT.parent / "shared" / "data")
        raise DataNotFoundError(
            f"shared audio not found at {where}; set VOXQUANT_DATA to the folder "
            "holding speech_commands/, fsdd/ and noise/"
        )
    return None


def shared_models_dir(required: bool = True) -> Path | None:
    """Return ``shared/models`` (beside the shared data folder), or ``None``."""
    data = shared_data_dir(required=required)
    if data is None:
        return None
    models = data.parent / "models"
    if models.is_dir():
        return models
    if required:
        raise DataNotFoundError(f"shared models folder not found at {models}")
    return None
