"""``voxquant score`` as a subprocess: rows, failed files, JSON/CSV contract, Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodel import write_tiny_model

from voxquant.paths import EXAMPLES_DIR

LABELS = ("yes", "no", "stop", "go", "_silence_", "_unknown_")
CMD = [sys.executable, "-m", "voxquant.cli", "score"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model"), LABELS)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Good clips in label folders, a long recording, and every kind of bad file."""
    root = tmp_path_factory.mktemp("batch")
    for word in ("yes", "no", "stop", "go"):
        (root / word).mkdir()
        shutil.copy(EXAMPLES_DIR / f"clip_{word}.wav", root / word / f"{word}.wav")
    (root / "seven").mkdir()  # not a class: counts as _unknown_
    shutil.copy(EXAMPLES_DIR / "clip_seven.wav", root / "seven" / "seven.wav")
    (root / "long").mkdir()
    shutil.copy(EXAMPLES_DIR / "keywords.wav", root / "long" / "keywords.wav")
    audio, rate = sf.read(EXAMPLES_DIR / "clip_yes.wav", dtype="float32")
    sf.write(root / "yes" / "yes_8k_stereo.wav", np.stack([audio[::2]] * 2, axis=1), 8000)
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    data = (EXAMPLES_DIR / "clip_no.wav").read_bytes()
    (bad / "truncated.wav").write_bytes(data[:30])
    nan = np.full(16000, np.nan, np.float32)
    sf.write(bad / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(bad / "zero_length.wav", np.zeros(0, np.int16), 16000)
    return root


def _default_sigint() -> None:
    """Child processes get SIGINT's default disposition: a shell that started the tests in
    the background ignores SIGINT, and an ignored SIGINT is inherited (then Python installs no
    KeyboardInterrupt handler at all)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _score(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=300, **kw)


def test_score_batch_rows_failures_and_json_contract(tiny, batch, tmp_path):
    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    proc = _score([str(batch), "--model", str(tiny), "--runtime", "onnxruntime", "--policy",
                   "fp32", "--labels-from-dirs", "--workers", "2", "--json", str(out_json),
                   "--csv", str(out_csv)])
    assert proc.returncode == 1, proc.stderr  # some files failed
    doc = json.loads(out_json.read_text())
    for key in ("model", "policy", "files", "failed", "audio_seconds", "cpu_seconds",
                "wall_seconds", "realtime_factor", "accuracy", "per_class", "confusion",
                "precision_time", "results"):
        assert key in doc, key
    failed = {Path(f["path"]).name: f["error"] for f in doc["failed"]}
    assert set(failed) == {"empty.wav", "garbage.wav", "truncated.wav", "nan.wav",
                           "zero_length.wav"}
    for name, error in failed.items():
        assert name in error  # the message names the file
    assert doc["files"] == len(doc["results"]) + len(doc["failed"]) == 12
    by_name = {Path(r["path"]).name: r for r in doc["results"]}
    long_row = by_name["keywords.wav"]
    assert long_row["mode"] == "stream" and isinstance(long_row["detections"], list)
    clip = by_name["yes_8k_stereo.wav"]  # resampled and mixed down, not failed
    assert clip["mode"] == "clip" and clip["label"] == "yes"
    for r in doc["results"]:
        assert {"path", "pred", "score", "top3", "precision", "cpu_ms"} <= set(r)
        assert r["pred"] in LABELS or r["mode"] == "stream"
        assert len(r["top3"]) <= 3
    assert by_name["seven.wav"]["label"] == "_unknown_"
    labelled = [r for r in doc["results"] if r["mode"] == "clip"]
    assert doc["accuracy"] == pytest.approx(
        np.mean([r["pred"] == r["label"] for r in labelled]), abs=1e-4)
    assert sum(sum(row) for row in doc["confusion"]["matrix"]) == len(labelled)
    assert doc["precision_time"]["fp32"] == pytest.approx(doc["audio_seconds"], rel=1e-3)
    with open(out_csv) as fh:
        assert len(list(csv.DictReader(fh))) == len(doc["results"])


def test_score_results_do_not_depend_on_worker_count(tiny, batch, tmp_path):
    docs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.json"
        _score([str(batch), "--model", str(tiny), "--runtime", "onnxruntime", "--policy",
                "fp32", "--workers", workers, "--json", str(out)])
        docs.append(json.loads(out.read_text()))
    strip = [[{k: v for k, v in r.items() if k != "cpu_ms"} for r in d["results"]] for d in docs]
    assert strip[0] == strip[1]


def test_score_all_good_exits_zero_and_accepts_path_lists(tiny, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{EXAMPLES_DIR / 'clip_go.wav'}\n{EXAMPLES_DIR / 'clip_no.wav'}\n")
    out = tmp_path / "o.json"
    proc = _score([str(listing), "--model", str(tiny), "--runtime", "onnxruntime", "--policy",
                   "fp32", "--json", str(out), "--workers", "1"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["files"] == 2


def test_ctrl_c_writes_what_was_scored(tiny, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4000):
        os.link(EXAMPLES_DIR / "clip_go.wav", folder / f"go_{i:05d}.wav")
    out = tmp_path / "partial.json"
    proc = subprocess.Popen([*CMD, str(folder), "--model", str(tiny), "--runtime",
                             "onnxruntime", "--policy", "fp32", "--workers", "1", "--quiet",
                             "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while "scoring 4000 files" not in proc.stderr.readline():  # the first batch is done
        assert proc.poll() is None and time.monotonic() < deadline, "scoring never started"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True
    assert 0 < len(doc["results"]) < 4000
    assert all(r["pred"] in LABELS for r in doc["results"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=2000), keep_header=st.booleans())
def test_decoder_fuzz_never_crashes_and_never_loses_a_row(tiny, tmp_path, blob, keep_header):
    from voxquant.scoring import FailedFile, score_or_fail

    scorer = _fuzz_scorer(tiny)
    header = (EXAMPLES_DIR / "clip_no.wav").read_bytes()[:44] if keep_header else b""
    path = tmp_path / "fuzz.wav"
    path.write_bytes(header + blob)
    row = score_or_fail(scorer, str(path), None)
    assert isinstance(row, FailedFile) or row.pred in LABELS


_SCORERS: dict = {}


def _fuzz_scorer(tiny):
    from voxquant.scoring import FileScorer

    if tiny not in _SCORERS:
        _SCORERS[tiny] = FileScorer(tiny, policy="fp32", runtime="onnxruntime")
    return _SCORERS[tiny]


def test_ray_engine_gives_the_same_rows_as_local(tiny, batch, tmp_path):
    pytest.importorskip("ray", reason="Ray not installed (extra 'cluster'; .ci/run installs it)")
    docs = []
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.json"
        proc = _score([str(batch), "--model", str(tiny), "--runtime", "onnxruntime", "--policy",
                       "fp32", "--workers", "2", "--engine", engine, "--json", str(out)])
        assert proc.returncode == 1, proc.stderr  # the bad files fail in both
        docs.append(json.loads(out.read_text()))
    strip = [[{k: v for k, v in r.items() if k != "cpu_ms"} for r in d["results"]] for d in docs]
    assert strip[0] == strip[1]
    assert docs[0]["failed"] == docs[1]["failed"]
    assert docs[1]["engine"] == "ray"


def test_score_real_clips_with_the_shipped_model(shared_data, tmp_path):
    words = ["yes", "no", "stop", "go", "left", "cat", "bed"]
    paths = []
    for w in words:
        paths += sorted((shared_data / "speech_commands" / w).glob("*.flac"))[:12]
    listing = tmp_path / "clips.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    out = tmp_path / "real.json"
    proc = _score([str(listing), "--labels-from-dirs", "--workers", "2", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["model"] == "kws12" and doc["files"] == len(paths)
    assert {r["label"] for r in doc["results"]} == {"yes", "no", "stop", "go", "left",
                                                    "_unknown_"}
    assert doc["accuracy"] > 0.6  # the shipped model, far above chance (1/12)
    assert sum(doc["precision_time"].values()) == pytest.approx(doc["audio_seconds"], rel=1e-3)
