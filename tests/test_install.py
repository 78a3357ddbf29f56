"""A regular (non-editable) install: only ``voxquant`` lands in site-packages, and the shipped
models and the example load from there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxquant.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_regular_install_is_self_contained(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PROJECT_ROOT)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    top.discard("bin")
    assert top == {"voxquant"}, f"names leaked into site-packages: {sorted(top)}"
    check = (
        "import voxquant, numpy as np\n"
        f"assert voxquant.__file__.startswith({str(target)!r}), voxquant.__file__\n"
        "for name in ('kws12', 'digits'):\n"
        "    model = voxquant.load(name)\n"
        "    out = model(np.zeros((model.input_frames, model.n_features), np.float32))\n"
        "    assert abs(float(out.sum()) - 1.0) < 1e-3\n"
        "from voxquant.paths import EXAMPLES_DIR\n"
        "assert (EXAMPLES_DIR / 'keywords.wav').is_file()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=600, env=env, cwd=str(Path(target)))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
