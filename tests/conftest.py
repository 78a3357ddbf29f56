"""Shared pytest fixtures (keep minimal and generic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxquant.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared audio folder; skips the test when it is absent."""
    path = shared_data_dir(required=False)
    if path is None:
        pytest.skip("shared audio not found: set VOXQUANT_DATA or place it at ../shared/data")
    return path
