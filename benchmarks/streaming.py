"""Streaming cost and quality: CPU per audio second for each policy on a long noisy stream.

Single thread, every configuration run ``--repeats`` times interleaved in one
process (medians reported). The stream mixes validation speakers' keywords and
other words, quiet room tone and the held-out part of the shared noises at
changing SNR (bundled examples and synthetic noise without the shared audio).

    python benchmarks/streaming.py --json out.json --markdown docs/streaming.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, publish, single_thread  # noqa: E402

single_thread()

import numpy as np  # noqa: E402

from voxquant.bench import CHUNK_MS  # noqa: E402

CONFIGS = {
    # name: KeywordSpotter options
    "onnxruntime fp32, window every hop": {"runtime": "onnxruntime", "policy": "fp32"},
    "voxquant fp32, window": {"policy": "fp32"},
    "voxquant int16, window": {"policy": "int16"},
    "voxquant int8-dynamic, window": {"policy": "int8-dynamic"},
    "voxquant int8-static, window": {"policy": "int8-static"},
    "voxquant fp32, incremental": {"policy": "fp32", "incremental": True},
    "voxquant int8, incremental": {"policy": "int8-dynamic", "incremental": True},
    "voxquant adaptive, window": {"policy": "adaptive"},
    "voxquant adaptive, incremental": {"policy": "adaptive", "incremental": True},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="kws12")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--max-clips", type=int, default=1000,
                   help="validation clips for the accuracy tables (default: all of them)")
    p.add_argument("--write-thresholds", action="store_true",
                   help="save the measured controller thresholds beside the model")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--markdown", dest="md_out")
    args = p.parse_args(argv)

    from voxquant.evalsets import load_eval_set, long_stream
    from voxquant.models.cards import resolve_model
    from voxquant.report import accuracy_vs_snr, run_stream

    card = resolve_model(args.model)
    evalset = load_eval_set(card.labels, max_clips=args.max_clips)
    thresholds = choose_thresholds(args.model, evalset)
    if args.write_thresholds:
        from voxquant.models.cards import update_streaming_settings

        update_streaming_settings(card, "controller", {
            k: thresholds[k]
            for k in ("levels", "widen_below_snr_db", "hysteresis_db", "min_dwell_s")})
    keywords = tuple(lab for lab in card.labels if not lab.startswith("_"))
    audio, events, segments = long_stream(evalset, keywords, words_per_segment=8)
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    skipped = {}
    for _ in range(args.repeats):
        for name, options in CONFIGS.items():
            if name in skipped:
                continue
            try:
                runs[name].append(run_stream(args.model, audio, events,
                                             chunk_samples=CHUNK_SAMPLES, **options))
            except Exception as exc:  # a level this model lacks (e.g. no calibration)
                skipped[name] = str(exc)
    rows = []
    for name, results in runs.items():
        if not results:
            continue
        med = {k: float(np.median([r[k] for r in results]))
               for k in ("cpu_per_audio_s", "model_cpu_seconds", "audio_seconds")}
        last = results[-1]
        total = last["windows_run"] + last["windows_gated"]
        rows.append({
            "config": name, **CONFIGS[name],
            "cpu_ms_per_audio_s": 1000 * med["cpu_per_audio_s"],
            "model_cpu_ms_per_audio_s": 1000 * med["model_cpu_seconds"] / med["audio_seconds"],
            # each repetition's figures, in order, for ratios paired within a repetition
            "per_repetition": {"cpu_ms_per_audio_s": [1000 * r["cpu_per_audio_s"] for r in results],
                        "model_cpu_ms_per_audio_s": [
                            1000 * r["model_cpu_seconds"] / r["audio_seconds"]
                            for r in results]},
            "gated_fraction": last["windows_gated"] / total if total else 0.0,
            "precision_fraction": {k: v / last["audio_seconds"]
                                   for k, v in last["precision_time"].items()},
            "recall": last["recall"], "false_alarms": last["false_alarms"],
            "false_alarms_per_hour": last["false_alarms"] * 3600 / last["audio_seconds"],
            "latency_s_median": last["latency_s_median"],
        })
    policies = ["fp32", "int8-static", "int8-dynamic", "int16", "adaptive"]
    t0 = time.perf_counter()
    acc, _ = accuracy_vs_snr(args.model, evalset, (20.0, 10.0, 5.0, 0.0), policies, "voxquant")
    acc_seconds = time.perf_counter() - t0
    by = {r["config"]: r for r in rows}
    targets = _targets(by, acc)
    doc = {"machine": machine(), "model": args.model, "data": evalset.description,
           "stream_seconds": audio.size / STREAM_RATE_HZ, "segments": segments,
           "keywords_in_stream": sum(e["is_keyword"] for e in events),
           "repeats": args.repeats, "rows": rows, "skipped": skipped,
           "chunk_ms": 1000 * CHUNK_SAMPLES / STREAM_RATE_HZ,
           "hops_per_chunk": CHUNK_SAMPLES // card.frontend.hop_samples,
           "accuracy_vs_snr": acc, "accuracy_seconds": acc_seconds, "targets": targets,
           "thresholds": thresholds}
    publish(doc, _markdown(doc), args.json_out, args.md_out)
    return 0


STREAM_RATE_HZ = 16000  # long_stream's default rate
CHUNK_SAMPLES = int(CHUNK_MS * STREAM_RATE_HZ / 1000)
CALIBRATION_SNRS = (30.0, 20.0, 15.0, 10.0, 5.0, 0.0)


def level_costs_us(model: str, evalset, repeats: int = 7, calls: int = 50) -> dict[str, float]:
    """Median CPU microseconds per window of each engine level (interleaved repetitions)."""
    from voxquant.models.cards import resolve_model
    from voxquant.runners import make_runner
    from voxquant.stream.frontend import compute_features

    card = resolve_model(model)
    runner = make_runner(card, "voxquant")
    window = compute_features(evalset.audio[0], card.frontend)[: card.window_frames]
    times: dict[str, list[float]] = {lv: [] for lv in ("int8", "int16", "fp32")}
    for _ in range(repeats):
        for lv in times:
            runner.run(window, lv)
            t0 = time.thread_time()
            for _ in range(calls):
                runner.run(window, lv)
            times[lv].append((time.thread_time() - t0) / calls * 1e6)
    return {lv: float(np.median(v)) for lv, v in times.items()}


def choose_thresholds(model: str, evalset, tolerance_points: float = 0.5) -> dict:
    """Measure per-level cost, accuracy and the tracker's SNR estimate at each true SNR.

    The ladder leaves out a level that costs more per window than a wider one
    (widening to it would spend more CPU for less accuracy). A level is allowed
    down to the lowest true SNR above which it stays within ``tolerance_points``
    of fp32 everywhere; the controller widens below the tracker's median
    estimate halfway between that SNR and the next lower one.
    """
    from voxquant.evalsets import mix
    from voxquant.scoring import FileScorer

    costs = level_costs_us(model, evalset)
    order = ("int8", "int16", "fp32")
    ladder = [lv for i, lv in enumerate(order)
              if all(costs[lv] < costs[wider] for wider in order[i + 1:])]
    levels = {"int8": "int8-dynamic", "int16": "int16", "fp32": "fp32"}
    scorers = {lv: FileScorer(model, policy=pol) for lv, pol in levels.items()}
    snr_scorer = scorers["fp32"]
    conditions = [None, *CALIBRATION_SNRS]
    rng = np.random.default_rng(1)
    acc: dict[str, dict[str, float]] = {lv: {} for lv in levels}
    estimate: dict[str, float] = {}
    for c in conditions:
        key = "clean" if c is None else f"{c:g}"
        noisy = [mix(a, evalset, c, rng) for a in evalset.audio]
        estimate[key] = float(np.median([snr_scorer.snr_db(a) for a in noisy]))
        for lv, scorer in scorers.items():
            labels = scorer.card.labels
            acc[lv][key] = float(np.mean([labels[int(np.argmax(scorer.classify(a)[0]))] == y
                                          for a, y in zip(noisy, evalset.labels)]))
    keys = ["clean" if c is None else f"{c:g}" for c in conditions]

    def widen_below(level: str) -> float:
        ok_down_to = None
        for i, k in enumerate(keys):
            if 100 * (acc["fp32"][k] - acc[level][k]) > tolerance_points:
                break
            ok_down_to = i
        if ok_down_to is None:
            return estimate[keys[0]] + 10.0  # never good enough: always wider
        if ok_down_to == len(keys) - 1:
            return estimate[keys[-1]] - 10.0  # good everywhere measured
        return 0.5 * (estimate[keys[ok_down_to]] + estimate[keys[ok_down_to + 1]])

    widen = []
    for lv in ladder[:-1]:  # the ladder must be strictly decreasing
        t = widen_below(lv)
        widen.append(round(t if not widen else min(t, widen[-1] - 1.0), 1))
    return {"levels": ladder, "widen_below_snr_db": widen, "hysteresis_db": 3.0,
            "min_dwell_s": 1.0, "tolerance_points": tolerance_points,
            "level_cost_us": costs, "accuracy": acc, "estimated_snr_db": estimate}


def _paired_ratios(a: dict, b: dict, what: str) -> np.ndarray:
    """``a``'s figure over ``b``'s within each repetition (the two ran a minute apart at
    most): this shared machine's speed drifts between repetitions, so a target is decided
    by the median of these, not by the ratio of two medians."""
    return np.array(a["per_repetition"][what]) / np.array(b["per_repetition"][what])


def _targets(by: dict, acc: dict) -> list[dict]:
    out = []
    ort = by.get("onnxruntime fp32, window every hop")
    inc = by.get("voxquant int8, incremental")
    if ort and inc:
        for what in ("model_cpu_ms_per_audio_s", "cpu_ms_per_audio_s"):
            ratios = _paired_ratios(ort, inc, what)
            ratio = float(np.median(ratios))
            out.append({"target": f"incremental int8 >= 20x less CPU than onnxruntime fp32 "
                        f"({'model only' if what.startswith('model') else 'whole pipeline'})",
                        "measured": f"{ratio:.1f}x (repetitions {ratios.min():.1f}-"
                                    f"{ratios.max():.1f}x)", "met": ratio >= 20})
    for mode in ("window", "incremental"):
        adaptive = by.get(f"voxquant adaptive, {mode}")
        # the same decoding mode held wide too: incremental against window flatters it
        wides = ["voxquant int16, window", "voxquant fp32, window", f"voxquant fp32, {mode}"]
        for wide in dict.fromkeys(wides):
            if adaptive and wide in by:
                fracs = _paired_ratios(adaptive, by[wide], "model_cpu_ms_per_audio_s")
                frac = float(np.median(fracs))
                out.append({"target": f"adaptive ({mode}) <= 50% of the model CPU of "
                                      f"always-wide ({wide})",
                            "measured": f"{100 * frac:.0f}% (repetitions "
                                        f"{100 * fracs.min():.0f}-{100 * fracs.max():.0f}%)",
                            "met": frac <= 0.5})
    if "adaptive" in acc and "fp32" in acc:
        gaps = {c: 100 * (acc["fp32"][c] - acc["adaptive"][c]) for c in acc["fp32"]}
        worst = max(gaps.values())
        out.append({"target": "adaptive within 0.5 points of fp32 accuracy at every SNR",
                    "measured": f"worst gap {worst:.2f} points", "met": worst <= 0.5})
    return out


def _markdown(doc: dict) -> str:
    from voxquant.evalsets import WORD_LEVEL_DBFS

    m = doc["machine"]
    head = ["configuration", "CPU ms / audio s (pipeline)", "model CPU ms / audio s",
            "gated", "precision time", "recall", "false alarms / h", "latency (median s)"]
    rows = [[r["config"], f"{r['cpu_ms_per_audio_s']:.2f}", f"{r['model_cpu_ms_per_audio_s']:.2f}",
             f"{100 * r['gated_fraction']:.0f}%",
             ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["precision_fraction"].items()),
             f"{100 * r['recall']:.0f}%", f"{r['false_alarms_per_hour']:.0f}",
             "–" if r["latency_s_median"] is None else f"{r['latency_s_median']:.2f}"]
            for r in doc["rows"]]
    conds = list(next(iter(doc["accuracy_vs_snr"].values())))
    acc_rows = [[p] + [f"{100 * v:.1f}%" for v in per.values()]
                for p, per in doc["accuracy_vs_snr"].items()]
    tgt = [[t["target"], t["measured"], "yes" if t["met"] else "**no**"]
           for t in doc["targets"]]
    th = doc["thresholds"]
    costs = ", ".join(f"{lv} {us:.0f}" for lv, us in th["level_cost_us"].items())
    widen = ", ".join(f"widen to {lv} below {t} dB"
                      for lv, t in zip(th["levels"][1:], th["widen_below_snr_db"])) or "none"
    th_rows = [[k, f"{th['estimated_snr_db'][k]:.1f}"]
               + [f"{100 * th['accuracy'][lv][k]:.1f}%" for lv in ("int8", "int16", "fp32")]
               for k in th["estimated_snr_db"]]
    skipped = "".join(f"- {k}: {v}\n" for k, v in doc["skipped"].items())
    if skipped:
        skipped = "Configurations not run:\n\n" + skipped
    return f"""# Streaming: CPU per audio second, precision, gating

Written by `benchmarks/streaming.py` (do not edit by hand). Machine: {m['cpu']}, {m['cores']}
cores, SIMD {', '.join(m['simd'])}; one thread; Python {m['python']}; commit {m['commit']}.
Model `{doc['model']}`. Data: {doc['data']}.

Reproduce: `python benchmarks/streaming.py --json streaming.json --markdown docs/streaming.md`
(add `--write-thresholds` to save the measured controller thresholds beside the model).
Detection quality on long streams (recall per condition, false alarms per hour on more than an
hour of keyword-free speech) is in `docs/detection.md`, written by `benchmarks/detection.py`.

## How the streaming path works

- **Sources** (`stream/sources.py`): `Microphone` (sounddevice; the PortAudio callback only
  copies the block into a preallocated pool and hands it to the event loop with
  `call_soon_threadsafe`; exceptions in the callback are caught and re-raised in the consumer),
  `WavFile` (as fast as possible or `realtime=True`), or any async iterator of chunks.
- **Queue** (`stream/pipeline.py`): bounded; when the consumer falls behind, the oldest block is
  dropped and counted (`stats.overruns`), never unbounded growth.
- **Front end** (`stream/frontend.py`): one feature frame per 20 ms hop, bit-identical whatever
  the chunk size; the raw frame energy comes with it.
- **Noise tracker and gate** (`stream/noise.py`): minimum-statistics noise floor (falls fast,
  rises 3 dB/s), a peak tracker of the speech level, their difference as the SNR estimate; the
  gate skips the model while the energy stays within 6 dB of the floor, with a hang-over longer
  than one model window so a keyword's whole window is scored.
- **Controller** (`stream/controller.py`): estimated SNR to precision level (a ladder from
  int8 to fp32, measured below), widening at once and narrowing only after the SNR has stood
  3 dB above the threshold for the minimum dwell time. The thresholds are measured (below).
- **Model** (`voxquant/runners.py`): window mode runs the whole 49-frame window in one compiled
  call; incremental mode updates only the newest rows of each causal layer per hop: every
  layer's output is a ring of rows in the arena, so a hop slides the rings instead of copying
  cached rows, and only the new feature frame is quantized (integer levels then use the
  calibrated static scales, since cached rows must keep their scales). The hops of one audio
  chunk go through in one compiled call (here {doc['hops_per_chunk']} per \
{doc['chunk_ms']:g} ms chunk): each layer computes its new
  rows together and the head (pool, classifier) runs once per hop's window, bit-identical to
  one call per hop.
- **Detector** (`stream/detector.py`): posteriors averaged over the last 3 windows, per-keyword
  thresholds; a keyword that crosses its threshold waits 200 ms for a better-scoring one
  (peak picking), then fires; 1 s refractory period.
- **Per chunk, not per hop**: the noise tracker, the gate, the controller and the detector
  each take all the hops of a chunk in one compiled call (the detector stops at each
  detection so a confirming model can be asked), bit-identical to hop-by-hop updates; what
  is left in Python per hop is bookkeeping.

## The stream

{doc['stream_seconds']:.0f} s: {len(doc['segments'])} segments, each starting with quiet room tone
(-60 dBFS noise) followed by words, each scaled to {WORD_LEVEL_DBFS:g} dBFS mean power;
noise SNR (to each word) per segment
{', '.join('clean' if s[2] is None else f"{s[2]:g} dB" for s in doc['segments'])};
{doc['keywords_in_stream']} keywords among the words. Audio is fed in \
{doc['chunk_ms']:g} ms chunks. Each
configuration ran {doc['repeats']} times, interleaved; CPU figures are medians. "Model CPU" is the
thread CPU time spent inside model calls; "pipeline" adds the front end, noise tracking, gate,
controller and detector. The CPU targets below take the ratio within each repetition (the
two configurations ran under a minute apart) and their median, with the range over
repetitions: this shared machine's speed drifts from one minute to the next.

{markdown_table(head, rows)}

Recall and false alarms here come from a short stream and are indicative only. A detection hits
a keyword when its window overlaps the spoken word (found in the clean clip with
`librosa.effects.trim`, 30 dB); latency is stream time from the word's last spoken sample to
the end of the newest window when the detection was decided.

## Clip accuracy against noise, per policy

Validation clips mixed with held-out noise ({doc['accuracy_seconds']:.0f} s to measure).

{markdown_table(['policy'] + conds, acc_rows)}

## How the controller's thresholds were chosen

For each true SNR, the validation clips were mixed with held-out noise and scored at each
precision level; the noise tracker's SNR estimate (the same tracker the spotter runs) was
recorded per clip. A level is used down to the lowest true SNR above which it stays within
{th['tolerance_points']} points of fp32; the controller widens below the median estimate
halfway to the next lower SNR. A level that costs more per window than a wider one is
left out of the ladder (CPU µs per window here: {costs}; int16 on the sensitive layers only,
`mixed` in `docs/engine.md`, also costs more than fp32 with this engine), so the ladder is
{' -> '.join(th['levels'])}. Measured thresholds (tracker units): {widen}; hysteresis
{th['hysteresis_db']} dB, minimum dwell {th['min_dwell_s']} s. They are saved beside the model
(`<model>.streaming.json`) by `--write-thresholds`.

{markdown_table(['true SNR', 'median estimated SNR', 'int8', 'int16', 'fp32'], th_rows)}

## Targets

{markdown_table(['target', 'measured', 'met'], tgt)}

{skipped}"""


if __name__ == "__main__":
    raise SystemExit(main())
