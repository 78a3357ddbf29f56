"""``voxquant listen`` on the bundled example: JSON lines contract and real detections."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from voxquant.models.cards import shipped_models
from voxquant.paths import EXAMPLES_DIR

WORDS = json.loads((EXAMPLES_DIR / "keywords.json").read_text())["words"]


def listen(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "voxquant.cli", "listen", "--json", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("policy", ["adaptive", "fp32", "int8-dynamic"])
def test_listen_example_json_lines(policy):
    if "kws12" not in shipped_models():
        pytest.fail("the shipped kws12 model is missing")
    lines = listen("--example", "--policy", policy)
    *detections, last = lines
    stats = last["stats"]
    assert {"audio_seconds", "cpu_seconds", "precision_time", "gated_fraction",
            "overruns"} <= set(stats)
    assert stats["audio_seconds"] == pytest.approx(WORDS[-1]["end_s"] + 1.0, abs=1.0)
    assert stats["overruns"] == 0
    assert sum(stats["precision_time"].values()) == pytest.approx(stats["audio_seconds"],
                                                                  abs=0.05)
    if policy != "adaptive":
        level = {"fp32": "fp32", "int8-dynamic": "int8"}[policy]
        assert set(stats["precision_time"]) == {level}
    for d in detections:
        assert set(d) == {"keyword", "score", "start_s", "end_s", "precision"}
        assert 0.0 <= d["start_s"] < d["end_s"] <= stats["audio_seconds"] + 0.05
    hits = [w for w in WORDS
            if any(d["keyword"] == w["word"] and d["start_s"] - 0.3 <= w["start_s"]
                   and w["end_s"] <= d["end_s"] + 0.3 for d in detections)]
    assert len(hits) >= len(WORDS) / 2, f"hits {[w['word'] for w in hits]} of {WORDS}"


def test_listen_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnope")
    proc = subprocess.run([sys.executable, "-m", "voxquant.cli", "listen", "--file", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "bad.wav" in proc.stderr and "Traceback" not in proc.stderr
