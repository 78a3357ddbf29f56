"""The accuracy / speed table: each model and quantization variant, clean and in noise.

For every shipped model and the MLPerf Tiny reference: top-1 accuracy on the
validation speakers (each shipped model's card validation set; a speaker-disjoint
split of the slice for MLPerf), clean and
with held-out real noise at 20/10/5/0 dB SNR, for fp32, int8 static with each
calibration (min/max, percentile, entropy, percentile on a hard-sample set:
training clips plus the same clips mixed with training noise at -5..5 dB,
weighted x2), int8 dynamic (per-window scales), int16, and fp32 / int8 of a
second model of the same task given with ``--compare`` (repeatable: for the
QAT-vs-PTQ comparison, the same training run with or without
quantization-aware fine-tuning; for the front-end comparison, the same run on
another front end, fed the same noisy audio through its own front end; rows are
named from its card). Latency comes from the engine
benchmark's JSON, size from
the file. Single process; every figure measured when the script runs.

    python benchmarks/accuracy.py [--engine-json engine.json] [--compare kws12=PATH] \\
        --json accuracy.json --markdown docs/accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, publish, single_thread  # noqa: E402

single_thread()

import numpy as np  # noqa: E402

CONDITIONS = (None, 20.0, 10.0, 5.0, 0.0)
CALIBRATIONS = {  # variant: (method, hard_weight)
    "int8 static min/max": ("minmax", 0),
    "int8 static percentile": ("percentile", 0),
    "int8 static entropy": ("entropy", 0),
    "int8 static hard-sample": ("percentile", 2),
}


def _key(c) -> str:
    return "clean" if c is None else f"{c:g} dB"


def windows_for(evalset, frontend, window_frames: int, seed: int = 0) -> dict:
    """Feature windows of every clip in every condition (same noise for every variant)."""
    from voxquant.evalsets import mix
    from voxquant.stream.frontend import compute_features

    rng = np.random.default_rng(seed)
    out = {}
    for c in CONDITIONS:
        ws = []
        for a in evalset.audio:
            f = compute_features(mix(a, evalset, c, rng), frontend)
            if f.shape[0] < window_frames:
                f = np.concatenate([f, np.full((window_frames - f.shape[0], f.shape[1]),
                                               f.min(), np.float32)])
            ws.append(np.ascontiguousarray(f[:window_frames]))
        out[_key(c)] = ws
    return out


def accuracy(model, windows: dict, labels, class_names) -> dict:
    idx = np.array([class_names.index(lab) for lab in labels])
    return {k: float(np.mean(np.array([np.argmax(model(w)) for w in ws]) == idx))
            for k, ws in windows.items()}


def variants_for(path, card_windows_fn):
    """(variant name, configured engine Model) pairs."""
    from voxquant.engine import load

    yield from plain_variants(path)
    m = load(path)
    m.set_precision("int16")
    m.set_quantization("exact")
    yield "int16 dynamic", m
    for name, (method, hard) in CALIBRATIONS.items():
        m = load(path)
        m.calibrate(card_windows_fn(hard), method=method)
        m.set_precision("int8")
        yield name, m


def plain_variants(path):
    """fp32 and int8 dynamic of a model: every model's first rows, a compared model's only."""
    from voxquant.engine import load

    m = load(path)
    m.set_precision("fp32")
    yield "fp32", m
    m = load(path)
    m.set_precision("int8")
    m.set_quantization("exact")
    yield "int8 dynamic", m


def card_eval_set(card):
    """The model card's own validation set (``models.train.validation_set``: the
    held-out speakers' words and ``_silence_`` windows), so the clean fp32 figure
    here is the card's accuracy, plus the held-out noise to mix in."""
    from voxquant.evalsets import EvalSet, held_out_noises
    from voxquant.models.train import validation_set
    from voxquant.paths import shared_data_dir

    items = validation_set(card.raw["task"])
    noises = held_out_noises(shared_data_dir())
    return EvalSet(
        source="shared",
        description=f"{len(items)} windows of the model card's validation set "
        f"(models.train.validation_set('{card.raw['task']}'): speaker-disjoint, plus "
        f"_silence_ windows) and the held-out test part of {len(noises)} noise recordings",
        audio=tuple(item.audio() for item in items),
        labels=tuple(item.label for item in items),
        noises=noises)


def evaluate_shipped(name: str, other_paths: list[str]) -> dict:
    from voxquant.models.calibrate import calibration_windows
    from voxquant.models.cards import resolve_model

    card = resolve_model(name)
    evalset = card_eval_set(card)
    windows = windows_for(evalset, card.frontend, card.window_frames)
    calib_cache: dict[int, list] = {}

    def calib(hard: int):
        if hard not in calib_cache:
            calib_cache[hard] = calibration_windows(card, hard_weight=hard)
        return calib_cache[hard]

    rows = {}
    for variant, model in variants_for(card.model_path, calib):
        rows[variant] = accuracy(model, windows, evalset.labels, list(card.labels))
    sensitivity, mixed = sensitivity_analysis(card, windows, evalset.labels)
    rows["mixed (2 most sensitive layers int16, rest int8 dynamic)"] = mixed
    tags = {}
    for other in other_paths:
        other_card = resolve_model(other)
        other_windows = windows if other_card.frontend == card.frontend else windows_for(
            evalset, other_card.frontend, other_card.window_frames)  # the same noisy audio
        tag = tags[other] = _compare_tag(other_card, card)
        for variant, model in plain_variants(other):
            rows[f"{variant} {tag}"] = accuracy(model, other_windows, evalset.labels,
                                                list(card.labels))
    return {"model": name, "data": evalset.description, "clips": len(evalset.labels),
            "size_kb": card.model_path.stat().st_size / 1024, "variants": rows,
            "sensitivity": sensitivity,
            "note": f"the model card records {100 * card.raw['validation']['accuracy']:.2f}% "
                    "(onnxruntime fp32) on the same clean windows"
                    + f"; this model: {_qat_summary(card.model_path)}"
                    + "".join(f"; compared model ({tags[other]}): {_qat_summary(other)}"
                              for other in other_paths)}


def _compare_tag(other, shipped) -> str:
    """How a compared model (its card) differs: QAT or not, and its front end if not the
    shipped one's."""
    tag = "after QAT" if other.raw["training"].get("qat") else "without QAT (PTQ only)"
    if other.frontend.name != shipped.frontend.name:
        tag += f", front end `{other.frontend.name}`"
    return tag


def _qat_summary(path) -> str:
    """How a model was made (from its own card), and torch's simulated QAT figures."""
    card = json.loads(Path(path).with_suffix(".json").read_text())
    q = card["training"].get("qat") or {}
    sim = ""
    if q.get("simulated_int8_accuracy_ptq") is not None:
        sim = (f" (torch simulation on the card's validation windows: int8 PTQ "
               f"{100 * q['simulated_int8_accuracy_ptq']:.2f}% -> QAT "
               f"{100 * q['simulated_int8_accuracy_qat']:.2f}%)")
    return f"`{card['training']['command']}`{sim}"


def sensitivity_analysis(card, windows: dict, labels) -> tuple[list[dict], dict]:
    """Rank layers by how far the posteriors move when only that layer is int8 (mean
    absolute difference from fp32 on the 0 dB windows, where quantization hurts most; finer
    than top-1 on a few hundred clips), then score the plan keeping the two worst at int16."""
    from voxquant.engine import load

    model = load(card.model_path)
    model.set_quantization("exact")
    ranking = model.sensitivity(windows["0 dB"])
    model.set_precision(model.mixed_plan(order=[i for i, _ in ranking], n_wide=2))
    mixed = accuracy(model, windows, labels, list(card.labels))
    names = [layer.name for layer in model.graph.layers]
    return [{"layer": names[i], "index": i, "mean_abs_posterior_change": loss}
            for i, loss in ranking], mixed


def evaluate_mlperf(max_clips: int) -> dict | None:
    """The MLPerf Tiny reference: its own front end (clip-scaled MFCC), float and int8 files."""
    from voxquant.engine import load
    from voxquant.evalsets import load_eval_set
    from voxquant.models.datasets import KWS12_LABELS
    from voxquant.paths import shared_models_dir
    from voxquant.stream.frontend import get_frontend_config

    models = shared_models_dir(required=False)
    if models is None:
        return None
    evalset = load_eval_set(KWS12_LABELS, max_clips=max_clips)
    windows = windows_for(evalset, get_frontend_config("mlperf"), 49)
    rows = {}
    for variant, name, precision in (("fp32", "mlperf-kws", "fp32"),
                                     ("int8 dynamic", "mlperf-kws", "int8"),
                                     ("int16 dynamic", "mlperf-kws", "int16"),
                                     ("int8 static (TFLite int8 file)", "mlperf-kws-int8", None)):
        m = load(name)
        if precision:
            m.set_precision(precision)
            if precision != "fp32":
                m.set_quantization("exact")
        rows[variant] = accuracy(m, windows, evalset.labels, list(KWS12_LABELS))
    path = models / "mlperf_tiny_kws" / "kws_ref_model.tflite"
    return {"model": "mlperf-kws", "data": evalset.description, "clips": len(evalset.labels),
            "size_kb": path.stat().st_size / 1024, "variants": rows,
            "note": "trained on Speech Commands v0.02 train; ~5% of the slice's clips were in "
                    "its training partition"}


def latency_lookup(engine_json: str | None) -> dict:
    if not engine_json or not Path(engine_json).is_file():
        return {}
    rows = json.loads(Path(engine_json).read_text()).get("rows", [])
    return {(r["model"], r["variant"]): r["median_us"] for r in rows
            if r.get("runtime") == "voxquant"}


def main(argv=None) -> int:
    from voxquant.models.cards import shipped_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-clips", type=int, default=600,
                   help="clips for the MLPerf rows (shipped models use their card's set)")
    p.add_argument("--engine-json", default=None)
    p.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                   help="another model of the same task, e.g. the same run without QAT")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--markdown", dest="md_out")
    args = p.parse_args(argv)
    other: dict[str, list[str]] = {}
    for item in args.compare:
        name, path = item.split("=", 1)
        other.setdefault(name, []).append(path)
    t0 = time.perf_counter()
    results = [evaluate_shipped(n, other.get(n, [])) for n in shipped_models()]
    mlperf = evaluate_mlperf(args.max_clips)
    if mlperf:
        results.append(mlperf)
    doc = {"machine": machine(), "results": results, "latency_us": {
        f"{m}/{v}": t for (m, v), t in latency_lookup(args.engine_json).items()},
        "seconds": round(time.perf_counter() - t0, 1)}
    publish(doc, markdown(doc), args.json_out, args.md_out)
    return 0


LATENCY_VARIANT = {"fp32": "fp32", "int8 dynamic": "int8-dynamic", "int16 dynamic": "int16",
                   "int8 static percentile": "int8-static"}


def markdown(doc: dict) -> str:
    m = doc["machine"]
    parts = [f"""# Accuracy and speed before and after quantization

Written by `benchmarks/accuracy.py` (do not edit by hand); {doc['seconds']} s to run. Machine:
{m['cpu']}; commit {m['commit']}.

Reproduce: `python benchmarks/engine.py --json engine.json && python benchmarks/accuracy.py
--engine-json engine.json [--compare kws12=OTHER.onnx ...] --json accuracy.json --markdown
docs/accuracy.md` (each compared model is made by the training command given below).

Top-1 accuracy on validation speakers never seen in training (for the shipped models, the
model card's own validation set; for MLPerf, a speaker-disjoint split of the slice), clean
and with held-out real noise (the test part of each shared noise recording) at the given
SNR. The same noisy inputs are used for every variant, so differences between rows are the
quantization's alone. Latency: median per window from the engine
benchmark (one thread), where it was given.
"""]
    for r in doc["results"]:
        conds = list(next(iter(r["variants"].values())))
        head = ["variant"] + conds + ["latency µs / window", "file KB"]
        rows = []
        for variant, acc in r["variants"].items():
            lat = doc["latency_us"].get(f"{r['model']}/{LATENCY_VARIANT.get(variant, '')}")
            rows.append([variant] + [f"{100 * acc[c]:.2f}%" for c in conds]
                        + ["–" if lat is None else f"{lat:.1f}", f"{r['size_kb']:.0f}"])
        note = f" {r['note']}." if r.get("note") else ""
        parts.append(f"## `{r['model']}`\n\n{r['data']}.{note}\n\n"
                     + markdown_table(head, rows) + "\n")
        if r.get("sensitivity"):
            sens = [[s["index"], s["layer"], f"{1000 * s['mean_abs_posterior_change']:.2f}"]
                    for s in r["sensitivity"]]
            parts.append("Layer sensitivity (mean absolute change of the posteriors, x1000, at "
                         "0 dB when only that layer runs int8 dynamic and the rest fp32; worst "
                         "first):\n\n"
                         + markdown_table(["layer", "name", "posterior change x1000"], sens)
                         + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
