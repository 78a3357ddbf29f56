"""The live microphone path on a real (virtual) audio device.

PulseAudio runs with a null sink whose monitor is the default input; PortAudio
sees it through ALSA's pulse plugin. A project-made recording is played into
the sink with ``paplay`` while ``voxquant listen`` records from the default
input in a subprocess; the expected keywords must come out as JSON lines.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from voxquant.models.cards import shipped_models
from voxquant.paths import EXAMPLES_DIR

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    """Child processes get SIGINT's default disposition: a shell that started the tests in
    the background ignores SIGINT, and an ignored SIGINT is inherited (then Python installs no
    KeyboardInterrupt handler at all)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pactl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=check,
                          timeout=20)


@pytest.fixture(scope="module")
def virtual_microphone():
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian: pulseaudio pulseaudio-utils; "
                        ".ci/run installs them)")
    if _pactl("info", check=False).returncode != 0:
        subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True,
                       timeout=30)
        for _ in range(50):
            if _pactl("info", check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("PulseAudio did not start")
    sink = f"voxquant_test_{uuid.uuid4().hex[:8]}"
    module = _pactl("load-module", "module-null-sink", f"sink_name={sink}").stdout.strip()
    _pactl("set-default-sink", sink)
    _pactl("set-default-source", f"{sink}.monitor")
    yield sink
    _pactl("unload-module", module, check=False)


def test_listen_detects_keywords_played_into_the_default_input(virtual_microphone):
    if "kws12" not in shipped_models():
        pytest.fail("the shipped kws12 model is missing")
    recording = EXAMPLES_DIR / "keywords.wav"
    words = json.loads((EXAMPLES_DIR / "keywords.json").read_text())["words"]
    expected = [w["word"] for w in words]
    cmd = [sys.executable, "-m", "voxquant.cli", "listen", "--json", "--seconds", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_default_sigint)
    try:
        # The first callback may take ~2 s; a cold numba cache adds a compile before it.
        err_lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [err_lines.put(x) for x in proc.stderr],
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        seen = []
        while not any("audio is flowing" in x for x in seen):
            try:
                seen.append(err_lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no audio callback within 240 s; stderr: {seen}")
            assert proc.poll() is None or not err_lines.empty(), f"listen exited: {seen}"
        subprocess.run(["paplay", str(recording)], check=True, timeout=60)
        time.sleep(2.0)  # let the last window be scored
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # Ctrl-C stops it and it prints its stats
        out = proc.stdout.read()
        reader.join(timeout=10)
        while not err_lines.empty():
            seen.append(err_lines.get())
        err = "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert lines and "stats" in lines[-1], f"no stats line; stderr: {err[-2000:]}"
    stats = lines[-1]["stats"]
    assert stats["audio_seconds"] > 10.0
    for d in lines[:-1]:
        assert set(d) == {"keyword", "score", "start_s", "end_s", "precision"}
    live = [d["keyword"] for d in lines[:-1]]
    offline = _offline_hits(recording, words)
    # The live path (PulseAudio -> PortAudio -> queue -> spotter) must find what the same
    # spotter finds in the file itself, and the model must find most of the words.
    assert len(offline) >= len(expected) / 2, f"offline hits {offline} of {expected}"
    found = [w for w in offline if w in live]
    assert len(found) >= len(offline) - 1, f"live {live} vs offline hits {offline}"
    false_alarms = [w for w in live if w not in expected]
    assert len(false_alarms) <= 1, f"false alarms {false_alarms}"


def _offline_hits(recording, words) -> list[str]:
    from voxquant.spotter import KeywordSpotter
    from voxquant.stream.audio_io import load_audio

    detections = KeywordSpotter("kws12").process(load_audio(recording))
    return [w["word"] for w in words
            if any(d.keyword == w["word"] and d.start_s - 0.3 <= w["start_s"]
                   and w["end_s"] <= d.end_s + 0.3 for d in detections)]
