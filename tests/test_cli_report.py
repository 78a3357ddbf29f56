"""``voxquant report`` as a subprocess, looked at in a real browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tinymodel import write_tiny_model

LABELS = ("yes", "no", "stop", "go", "_silence_", "_unknown_")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path, png_path, tmp_path) -> np.ndarray:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian package chromium; .ci/run installs it)")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
         "--window-size=1200,2600", f"--screenshot={png_path}", f"file://{html_path}"],
        capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(png_path).convert("L"))


def test_report_without_shared_data_renders_in_a_browser(tmp_path):
    model = write_tiny_model(tmp_path, LABELS)
    out = tmp_path / "report"
    env = {**os.environ, "VOXQUANT_DATA": str(tmp_path / "no-such-folder")}
    proc = subprocess.run(
        [sys.executable, "-m", "voxquant.cli", "report", "--out", str(out), "--model",
         str(model), "--runtime", "onnxruntime", "--snr", "10,0"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data_source"] == "bundled"
    assert set(report["accuracy_vs_snr"]["fp32"]) == {"clean", "10", "0"}
    fp32 = report["stream"]["policies"]["fp32"]
    assert fp32["audio_seconds"] > 60 and fp32["cpu_seconds"] > 0
    assert fp32["windows_run"] > 1000
    page = (out / "report.html").read_text()
    assert "No shared audio" in page  # said on the first page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 2
    for data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.width >= 500 and img.height >= 250  # big enough to read
    pixels = screenshot(out / "report.html", tmp_path / "shot.png", tmp_path)
    ink = pixels < 200
    assert ink.mean() > 0.02, "the page looks blank"
    rows_with_ink = np.flatnonzero(ink.any(axis=1))
    assert rows_with_ink.max() > 1000, "plots did not render below the first tables"


def test_report_on_shared_audio_with_the_shipped_model(shared_data, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "voxquant.cli", "report", "--out", str(out), "--snr", "10",
         "--max-clips", "48"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data_source"] == "shared"
    assert set(report["policies"]) == {"fp32", "int8-static", "int8-dynamic", "int16",
                                       "adaptive"}
    for per in report["accuracy_vs_snr"].values():
        assert set(per) == {"clean", "10"} and all(0.3 < v <= 1.0 for v in per.values())
    adaptive = report["stream"]["policies"]["adaptive"]
    assert adaptive["windows_gated"] > 0  # quiet stretches are skipped
    saving = report["savings"]["fp32"]
    assert saving["baseline_model_cpu_s"] > 0
    assert saving["from_gating_s"] > 0
    # the same stream in incremental mode (kws12 is causal): same windows, share reported
    inc = report["stream"]["policies"]["adaptive, incremental"]
    assert inc["windows_run"] + inc["windows_gated"] == (adaptive["windows_run"]
                                                          + adaptive["windows_gated"])
    assert saving["saved_fraction_incremental"] is not None
    assert any(row["model"] == "kws12" for row in report["model_table"])
    assert "No shared audio" not in (out / "report.html").read_text()
