"""Steady-state streaming allocates nothing per hop: 10 minutes of audio, flat memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from tinymodel import write_tiny_model

from voxquant.spotter import KeywordSpotter

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("runtime,policy", [("voxquant", "adaptive"), ("voxquant", "int8-dynamic")])
def test_ten_minutes_of_audio_keep_memory_flat(tmp_path, runtime, policy):
    model = write_tiny_model(tmp_path, ("yes", "no", "_silence_", "_unknown_"))
    spotter = KeywordSpotter(model, policy=policy, runtime=runtime, threshold=0.99)
    rng = np.random.default_rng(0)
    chunk_s, minutes = 0.1, 10
    noise = (0.002 * rng.standard_normal(int(16000 * 30))).astype(np.float32)
    burst = (0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype(np.float32)
    segment = noise.copy()
    segment[16000:24000] += burst  # something to wake the gate every 30 s
    step = int(16000 * chunk_s)

    def feed(seconds: float) -> None:
        fed = 0
        while fed < seconds * 16000:
            pos = fed % segment.size
            spotter.process(segment[pos : pos + step])
            fed += step

    feed(60)  # warm up: compile, caches, first windows
    tracemalloc.start()
    first = tracemalloc.take_snapshot()
    feed((minutes - 1) * 60)
    last = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in last.compare_to(first, "lineno") if d.size_diff > 0)
    stats = spotter.stats
    assert stats.audio_seconds == pytest.approx(minutes * 60, abs=chunk_s)
    assert stats.windows_run > 0
    if policy == "adaptive":
        assert stats.windows_gated > stats.windows_run  # mostly background
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over {minutes - 1} minutes"
