"""The confirming second stage and the audio history it reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxquant.errors import ConfigError
from voxquant.paths import EXAMPLES_DIR
from voxquant.spotter import KeywordSpotter
from voxquant.stream.audio_io import load_audio
from voxquant.stream.confirm import Confirmer
from voxquant.stream.ring import AudioHistory


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 300), pieces=st.lists(st.integers(0, 400), min_size=1,
                                                      max_size=12), data=st.data())
def test_audio_history_returns_the_last_samples(capacity, pieces, data):
    rng = np.random.default_rng(len(pieces))
    stream = rng.standard_normal(sum(pieces)).astype(np.float32)
    h, pos = AudioHistory(capacity), 0
    for n in pieces:
        h.append(stream[pos:pos + n])
        pos += n
        if pos == 0:
            continue
        n_win = data.draw(st.integers(1, capacity))
        first_end = max(1, pos - capacity + n_win)  # the window must still be held
        if first_end > pos:
            continue
        end = data.draw(st.integers(first_end, pos))
        lo = max(0, end - n_win)
        want = np.concatenate([np.zeros(n_win - (end - lo), np.float32), stream[lo:end]])
        np.testing.assert_array_equal(h.window(end, n_win), want)
    with pytest.raises(ValueError):
        h.window(pos + 1, 1)  # not yet heard


def test_audio_history_takes_int16():
    h = AudioHistory(8)
    h.append(np.array([16384, -32768], np.int16))
    np.testing.assert_array_equal(h.window(2, 2), [0.5, -1.0])


def _example():
    return load_audio(EXAMPLES_DIR / "keywords.wav")


def _run(audio, chunk=1600, **options):
    sp = KeywordSpotter("kws12", policy="int8-dynamic", **options)
    dets = []
    for i in range(0, audio.size, chunk):
        dets += sp.process(audio[i:i + chunk])
    return dets, sp.stats


def test_confirmer_that_always_agrees_changes_nothing():
    audio = _example()
    plain, _ = _run(audio)
    agreed, stats = _run(audio, confirm=Confirmer("kws12", threshold=0.0))
    assert plain and [d.to_dict() for d in agreed] == [d.to_dict() for d in plain]
    assert stats.confirmations_run == len(plain) and stats.confirmations_rejected == 0


class _RejectsAll(Confirmer):
    """Runs the second model on every candidate and disagrees every time."""

    def confirms(self, keyword: str, audio: np.ndarray) -> tuple[bool, float]:
        return False, self.score(keyword, audio)


def test_rejected_candidates_are_dropped_and_do_not_block_later_windows():
    audio = _example()
    plain, _ = _run(audio)
    none, stats = _run(audio, confirm=_RejectsAll("kws12"))
    assert none == []
    # no refractory after a rejection: every window above threshold is asked again
    assert stats.confirmations_rejected == stats.confirmations_run > len(plain)


def test_confirmation_is_independent_of_chunk_size():
    audio = _example()
    conf = Confirmer("kws12", threshold=0.9)
    a, _ = _run(audio, chunk=1600, confirm=conf)
    b, _ = _run(audio, chunk=7919, confirm=conf)
    c, _ = _run(audio, chunk=160, confirm=conf)
    assert [d.to_dict() for d in a] == [d.to_dict() for d in b] == [d.to_dict() for d in c]


def test_confirmer_must_know_every_keyword():
    with pytest.raises(ConfigError, match="does not know"):
        KeywordSpotter("kws12", confirm="digits")
    with pytest.raises(ConfigError, match="no class"):
        Confirmer("digits").score("yes", np.zeros(16000, np.float32))


def test_mlperf_confirmation_on_the_example():
    """With the MLPerf Tiny reference as second stage (shared models), ``listen --confirm``
    reports a subset of the plain detections' words, only words that are in the recording, and
    counts the confirmations in its stats."""
    from voxquant.paths import shared_models_dir

    models = shared_models_dir(required=False)
    if models is None or not (models / "mlperf_tiny_kws").is_dir():
        pytest.skip("shared/models/mlperf_tiny_kws not found (set VOXQUANT_DATA or put "
                    "shared/ beside the project)")

    def listen(*extra):
        proc = subprocess.run([sys.executable, "-m", "voxquant.cli", "listen", "--example",
                               "--json", *extra], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        return lines[:-1], lines[-1]["stats"]

    plain, _ = listen()
    confirmed, stats = listen("--confirm", "mlperf-kws")
    spoken = {w["word"] for w in json.loads((EXAMPLES_DIR / "keywords.json").read_text())[
        "words"]}
    assert confirmed, "the second stage rejected every keyword of the example"
    # a rejected candidate may be confirmed a few windows later, so compare words, not times
    assert {d["keyword"] for d in confirmed} <= {d["keyword"] for d in plain}
    assert {d["keyword"] for d in confirmed} <= spoken
    assert stats["confirmations_run"] >= len(confirmed)


def test_shipped_confirmer_runs_without_shared_models():
    """``kws12w`` ships in the package: it loads by name without shared data and only ever
    removes first-stage detections."""
    c = Confirmer("kws12w")
    assert c.labels[:10] == KeywordSpotter("kws12").labels[:10]
    audio = _example()
    plain, _ = _run(audio)
    confirmed, stats = _run(audio, confirm="kws12w")
    assert stats.confirmations_run >= len(plain) and confirmed
    keep = {(d.keyword, d.end_s) for d in plain}
    assert {(d.keyword, d.end_s) for d in confirmed} <= keep
    assert stats.confirmations_run - stats.confirmations_rejected == len(confirmed)
