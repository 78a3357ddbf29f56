"""``voxquant bench`` as a subprocess: one table, JSON rows in the engine benchmark's format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_writes_engine_and_streaming_rows(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "voxquant.cli", "bench", "--rounds", "1", "--calls", "2",
         "--stream-repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime" in proc.stdout and "voxquant" in proc.stdout
    doc = json.loads(out.read_text())
    assert "machine" in doc
    engine = [r for r in doc["rows"] if "median_us" in r]
    stream = [r for r in doc["rows"] if r.get("kind") == "streaming"]
    for r in engine:
        assert {"model", "runtime", "variant", "median_us"} <= set(r)
        assert r["median_us"] > 0
    kws12 = {(r["runtime"], r["variant"]) for r in engine if r["model"] == "kws12"}
    assert {("voxquant", "fp32"), ("voxquant", "int8-dynamic"), ("voxquant", "int16"),
            ("onnxruntime", "fp32"), ("onnxruntime", "qdq-int8"),
            ("onnxruntime", "dynamic-int8")} <= kws12
    variants = {(r["runtime"], r["variant"]) for r in stream}
    assert {("onnxruntime", "fp32"), ("voxquant", "adaptive")} <= variants
    assert all(r["cpu_per_audio_s"] > 0 for r in stream)
