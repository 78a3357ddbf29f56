"""``voxquant report``: what adaptive precision and gating buy, measured.

Everything in the report is computed when it is built: accuracy against SNR
for each policy, CPU per audio second on a long noisy stream and where the
adaptive policy's saving comes from, a timeline of that stream, and the
accuracy/speed table of the shipped models. ``report.json`` holds every
figure; ``report.html`` embeds the plots as PNG.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import time
from pathlib import Path

import numpy as np

from voxquant.errors import ConfigError
from voxquant.evalsets import EvalSet, load_eval_set, long_stream, mix
from voxquant.models.cards import resolve_model, shipped_models
from voxquant.runners import make_runner
from voxquant.scoring import FileScorer
from voxquant.spotter import POLICIES, KeywordSpotter

__all__ = ["build_report"]

ALL_POLICIES = ("fp32", "int8-static", "int8-dynamic", "int16", "adaptive")


def _available(policy: str, levels: tuple[str, ...]) -> bool:
    fixed = POLICIES[policy]
    return (len(levels) > 1) if fixed is None else fixed in levels


def accuracy_vs_snr(model: str, evalset: EvalSet, snrs, policies, runtime: str, seed: int = 0):
    """{policy: {"clean"|snr: accuracy}} and per-policy chosen-level counts."""
    rng = np.random.default_rng(seed)
    conditions = [None, *snrs]
    noisy = {c: [mix(a, evalset, c, rng) for a in evalset.audio] for c in conditions}
    result, levels_used = {}, {}
    for policy in policies:
        scorer = FileScorer(model, policy=policy, runtime=runtime)
        per, used = {}, {}
        for c in conditions:
            correct = 0
            for audio, label in zip(noisy[c], evalset.labels):
                probs, level = scorer.classify(audio)
                correct += scorer.card.labels[int(np.argmax(probs))] == label
                used[level] = used.get(level, 0) + 1
            per["clean" if c is None else f"{c:g}"] = correct / max(1, len(evalset.labels))
        result[policy], levels_used[policy] = per, used
    return result, levels_used


def run_stream(model: str, audio: np.ndarray, events: list[dict], *, chunk_samples: int = 1600,
               **spotter_options) -> dict:
    """One spotter configuration over a long stream: CPU, windows, recall, latency, trace."""
    spotter = KeywordSpotter(model, **spotter_options)
    dets = []
    for i in range(0, audio.size, chunk_samples):  # 100 ms chunks, as a microphone delivers
        dets += spotter.process(audio[i : i + chunk_samples])
    st = spotter.stats
    hit_flags, false_alarms, latencies = match_detections(dets, events)
    hits = sum(hit_flags)
    keywords = [e for e in events if e["is_keyword"]]
    return {
        "audio_seconds": st.audio_seconds,
        "cpu_seconds": st.cpu_seconds,
        "cpu_per_audio_s": st.cpu_seconds / max(st.audio_seconds, 1e-9),
        "model_cpu_seconds": float(sum(st.precision_cpu_seconds.values())),
        "windows_run": st.windows_run,
        "windows_gated": st.windows_gated,
        "precision_windows": st.precision_windows,
        "precision_cpu_seconds": st.precision_cpu_seconds,
        "precision_time": st.precision_time,
        "recall": hits / max(1, len(keywords)),
        "false_alarms": false_alarms,
        "latency_s_median": float(np.median(latencies)) if latencies else None,
        "detections": [d.to_dict() for d in dets],
        "trace": [r.to_dict() for r in spotter.trace],
    }


ADAPTIVE_INCREMENTAL = "adaptive, incremental"


def stream_costs(model: str, audio: np.ndarray, events: list[dict], policies, runtime: str):
    """Run each policy over the long stream (adaptive with a trace), plus adaptive in
    incremental mode where the runtime and model allow it."""
    costs = {p: run_stream(model, audio, events, policy=p, runtime=runtime,
                           trace=p == "adaptive") for p in policies}
    if "adaptive" in policies and runtime == "voxquant":
        try:
            costs[ADAPTIVE_INCREMENTAL] = run_stream(model, audio, events, policy="adaptive",
                                                     runtime=runtime, incremental=True)
        except ConfigError:  # not a causal model, or no calibration for integer levels
            pass
    return costs


def match_detections(detections, events) -> tuple[list[bool], int, list[float]]:
    """Which keyword events were hit, how many detections were false alarms, latencies.

    A detection hits a keyword event when it names the same word and the window
    that fired overlaps the spoken word (``speech_start_s`` .. ``speech_end_s``
    of :func:`voxquant.evalsets.long_stream`'s events); each detection hits at
    most one event and each event at most one detection.
    Latency: from the word's last spoken sample to the end of the window that fired.
    """
    used = set()
    hit_flags, latencies = [], []
    for e in events:
        if not e["is_keyword"]:
            continue
        first, last = e["speech_start_s"], e["speech_end_s"]
        hit = False
        for j, d in enumerate(detections):
            if j not in used and d.keyword == e["label"] and d.start_s < last and d.end_s > first:
                used.add(j)
                hit = True
                latencies.append(d.end_s - last)
                break
        hit_flags.append(hit)
    return hit_flags, len(detections) - len(used), latencies


def savings(costs: dict, baseline: str) -> dict | None:
    """Split adaptive's model-CPU saving against an always-on fixed policy.

    baseline cost = all windows at the baseline's per-window cost; gating saves
    the skipped windows, precision saves the cheaper levels' difference.
    """
    if "adaptive" not in costs or baseline not in costs:
        return None
    base = costs[baseline]
    level = POLICIES[baseline]
    per_window = {}
    for name, c in costs.items():
        for lv, n in c["precision_windows"].items():
            if n and POLICIES.get(name) == lv:
                per_window[lv] = c["precision_cpu_seconds"][lv] / n
    c_base = base["precision_cpu_seconds"].get(level, 0.0) / max(1, base["windows_run"])
    a = costs["adaptive"]
    total = a["windows_run"] + a["windows_gated"]
    gating = a["windows_gated"] * c_base
    precision = sum(n * (c_base - per_window.get(lv, c_base))
                    for lv, n in a["precision_windows"].items())
    baseline_s = total * c_base
    return {
        "baseline": baseline,
        "baseline_model_cpu_s": baseline_s,
        "adaptive_model_cpu_s": a["model_cpu_seconds"],
        "saved_fraction": 1.0 - a["model_cpu_seconds"] / baseline_s if baseline_s else None,
        "from_gating_s": gating,
        "from_precision_s": precision,
        **_incremental_share(costs, a, baseline_s),
    }


def _incremental_share(costs: dict, adaptive: dict, baseline_s: float) -> dict:
    """What incremental execution adds on top of adaptive (same stream, same policy)."""
    inc = costs.get(ADAPTIVE_INCREMENTAL)
    if inc is None:
        return {"from_incremental_s": 0.0, "saved_fraction_incremental": None,
                "note": "no incremental run (runtime or model does not support it)"}
    return {
        "from_incremental_s": adaptive["model_cpu_seconds"] - inc["model_cpu_seconds"],
        "saved_fraction_incremental": (1.0 - inc["model_cpu_seconds"] / baseline_s
                                       if baseline_s else None),
        "note": "incremental: each hop updates only the newest rows of each causal layer",
    }


def model_table(runtime: str, evalsets: dict, repeats: int = 200) -> list[dict]:
    """Accuracy (clean) and latency per window of each shipped model and variant."""
    rows = []
    for name in shipped_models():
        card = resolve_model(name)
        evalset = evalsets.get(name)
        runner = make_runner(card, runtime)
        window = np.zeros((card.window_frames, card.frontend.n_features), np.float32)
        variants = [("fp32", "fp32"), ("int8 PTQ static", "int8-static"),
                    ("int8 PTQ dynamic", "int8"), ("int16", "int16")]
        for title, level in variants:
            if level not in runner.levels:
                continue
            policy = next(p for p, lv in POLICIES.items() if lv == level)
            acc = None
            if evalset is not None:
                scorer = FileScorer(name, policy=policy, runtime=runtime)
                acc = float(np.mean([
                    scorer.card.labels[int(np.argmax(scorer.classify(a)[0]))] == lab
                    for a, lab in zip(evalset.audio, evalset.labels)]))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                runner.run(window, level)
                times.append(time.perf_counter() - t0)
            rows.append({"model": name, "variant": title, "accuracy": acc,
                         "median_us": float(np.median(times) * 1e6),
                         "size_kb": card.model_path.stat().st_size / 1024})
    return rows


# --- plots --------------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plot_accuracy(acc: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for policy, per in acc.items():
        xs = list(per)
        ax.plot(range(len(xs)), [100 * per[x] for x in xs], marker="o", label=policy)
    ax.set_xticks(range(len(xs)), [x if x == "clean" else f"{x} dB" for x in xs])
    ax.set_xlabel("SNR of added real noise")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy against noise, per precision policy")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _plot_cpu(costs: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(costs)
    values = [1000 * costs[p]["cpu_per_audio_s"] for p in names]
    ax.bar(names, values, color=["#888" if p != "adaptive" else "#2a7" for p in names])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.set_ylabel("CPU ms per audio second")
    ax.set_title("Whole-pipeline CPU on the long noisy stream (one thread)")
    return _png(fig)


def _plot_timeline(trace: list[dict], segments, events, detections) -> str:
    import matplotlib.pyplot as plt

    if not trace:
        return ""
    t = np.array([r["time_s"] for r in trace])
    fig, axes = plt.subplots(4, 1, figsize=(10, 7), sharex=True)
    axes[0].plot(t, [r["energy_dbfs"] for r in trace], lw=0.6, label="frame energy")
    axes[0].plot(t, [r["noise_floor_dbfs"] for r in trace], lw=1.5, label="noise floor")
    axes[0].set_ylabel("dBFS")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(t, [r["snr_db"] for r in trace], color="C2", label="estimated SNR")
    for start, end, snr in segments:
        axes[1].hlines(60 if snr is None else snr, start, end, colors="k", linestyles=":")
    axes[1].set_ylabel("SNR dB\n(dots: true)")
    level_names = ["int8", "int16", "fp32"]
    axes[2].step(t, [level_names.index(r["precision"]) if r["precision"] in level_names else 0
                     for r in trace], where="post", color="C3")
    axes[2].set_yticks(range(3), level_names)
    axes[2].set_ylabel("precision")
    axes[3].fill_between(t, 0, [0 if r["gated"] else 1 for r in trace], step="post",
                         alpha=0.3, label="model running")
    for e in events:
        if e["is_keyword"]:
            axes[3].axvspan(e["start_s"], e["end_s"], color="C1", alpha=0.3)
    for d in detections:
        axes[3].plot(d["end_s"], 0.5, "kv")
        axes[3].text(d["end_s"], 0.75, d["keyword"], fontsize=7, ha="center")
    axes[3].set_ylabel("gate / keywords\n(orange: truth, v: detected)")
    axes[3].set_xlabel("stream time (s)")
    fig.suptitle("Adaptive policy on the long noisy stream")
    return _png(fig)


# --- the report ---------------------------------------------------------------------------------


def build_report(
    out_dir: str | Path,
    *,
    model: str = "kws12",
    data_dir: str | Path | None = None,
    snrs: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0),
    runtime: str = "voxquant",
    max_clips: int = 300,
    seed: int = 0,
    progress=None,
) -> dict:
    """Compute every figure, write ``report.json`` and ``report.html`` in ``out_dir``.

    ``progress(step: str)`` is called before each long step (the CLI shows it).
    """
    say = progress or (lambda step: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    card = resolve_model(model)
    data = Path(data_dir) if data_dir else None
    say("loading evaluation clips and noise")
    evalset = load_eval_set(card.labels, data_dir=data, max_clips=max_clips, seed=seed)
    levels = make_runner(card, runtime).levels
    policies = [p for p in ALL_POLICIES if _available(p, tuple(levels))]
    say(f"accuracy against SNR: {len(policies)} policies x {len(snrs) + 1} conditions x "
        f"{len(evalset.audio)} clips")
    acc, levels_used = accuracy_vs_snr(model, evalset, snrs, policies, runtime, seed)
    keywords = tuple(lab for lab in card.labels if not lab.startswith("_"))
    stream, events, segments = long_stream(evalset, keywords, seed=seed)
    say(f"CPU per policy on a {stream.size / 16000:.0f} s stream")
    costs = stream_costs(model, stream, events, policies, runtime)
    saved = {b: savings(costs, b) for b in ("fp32", "int16")}
    evalsets = {card.name: evalset}
    say("accuracy/speed table of the shipped models")
    table = model_table(runtime, evalsets)
    report = {
        "model": card.name,
        "runtime": runtime,
        "data_source": evalset.source,
        "data_description": evalset.description,
        "machine": {"processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "policies": policies,
        "accuracy_vs_snr": acc,
        "levels_used": levels_used,
        "stream": {"seconds": stream.size / 16000, "segments": segments, "events": events,
                   "policies": {p: {k: v for k, v in c.items() if k != "trace"}
                                for p, c in costs.items()}},
        "savings": saved,
        "model_table": table,
        "build_seconds": None,
    }
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    plots = {
        "accuracy": _plot_accuracy(acc),
        "cpu": _plot_cpu(costs),
        "timeline": _plot_timeline(costs.get("adaptive", {}).get("trace", []), segments, events,
                                   costs.get("adaptive", {}).get("detections", [])),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "report.html").write_text(_html(report, plots))
    return report


def _fmt(v, pct=False, digits=2):
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def _html(r: dict, plots: dict) -> str:
    e = html.escape
    banner = ""
    if r["data_source"] != "shared":
        banner = f'<p class="warn"><b>No shared audio:</b> {e(r["data_description"])}.</p>'
    conds = list(next(iter(r["accuracy_vs_snr"].values())).keys())
    acc_rows = "".join(
        f"<tr><td>{e(p)}</td>" + "".join(f"<td>{_fmt(per[c], pct=True)}</td>" for c in conds)
        + "</tr>" for p, per in r["accuracy_vs_snr"].items())
    sp = r["stream"]["policies"]
    cpu_rows = "".join(
        f"<tr><td>{e(p)}</td><td>{1000 * c['cpu_per_audio_s']:.3f}</td>"
        f"<td>{1000 * c['model_cpu_seconds'] / c['audio_seconds']:.3f}</td>"
        f"<td>{c['windows_run']}</td><td>{c['windows_gated']}</td>"
        f"<td>{_fmt(c['recall'], pct=True)}</td><td>{c['false_alarms']}</td></tr>"
        for p, c in sp.items())
    save_rows = "".join(
        f"<tr><td>always {e(b)}</td><td>{_fmt(s['saved_fraction'], pct=True)}</td>"
        f"<td>{1000 * s['from_gating_s']:.1f}</td><td>{1000 * s['from_precision_s']:.1f}</td>"
        f"<td>{1000 * s['from_incremental_s']:.1f}</td>"
        f"<td>{_fmt(s['saved_fraction_incremental'], pct=True)}</td></tr>"
        for b, s in r["savings"].items() if s)
    table_rows = "".join(
        f"<tr><td>{e(t['model'])}</td><td>{e(t['variant'])}</td>"
        f"<td>{_fmt(t['accuracy'], pct=True)}</td><td>{t['median_us']:.1f}</td>"
        f"<td>{t['size_kb']:.0f}</td></tr>" for t in r["model_table"])
    img = '<img alt="{alt}" src="data:image/png;base64,{data}">'
    missing = "<p><i>Not available: the runtime offers no adaptive policy.</i></p>"
    timeline = img.format(alt="timeline", data=plots["timeline"]) if plots["timeline"] else missing
    if not save_rows:
        save_rows = '<tr><td colspan="6">not available: no adaptive policy here</td></tr>'
    if not table_rows:
        table_rows = '<tr><td colspan="5">no shipped models installed</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxquant report: {e(r['model'])}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.warn {{ background: #fff3cd; padding: 0.6em 1em; border: 1px solid #e0c060; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head><body>
<h1>voxquant report: {e(r['model'])}</h1>
{banner}
<p>Runtime <b>{e(r['runtime'])}</b>; data: {e(r['data_description'])};
machine {e(r['machine']['processor'])}; built in {r['build_seconds']} s.
Every figure here was measured while building this report;
<code>report.json</code> has them all.</p>
<h2>Accuracy against noise</h2>
<table><tr><th>policy</th>{''.join(f'<th>{e(c)}</th>' for c in conds)}</tr>{acc_rows}</table>
{img.format(alt="accuracy vs SNR", data=plots['accuracy'])}
<h2>CPU per audio second on a {r['stream']['seconds']:.0f} s noisy stream</h2>
<table><tr><th>policy</th><th>pipeline CPU ms / audio s</th><th>model CPU ms / audio s</th>
<th>windows run</th><th>windows gated</th><th>keyword recall</th><th>false alarms</th></tr>
{cpu_rows}</table>
{img.format(alt="CPU per policy", data=plots['cpu'])}
<h3>Where the adaptive policy's model-CPU saving comes from</h3>
<table><tr><th>against</th><th>saved</th><th>gating (ms)</th><th>precision (ms)</th>
<th>incremental (ms)</th><th>saved with incremental</th></tr>{save_rows}</table>
<h2>Timeline of the stream (adaptive)</h2>
{timeline}
<h2>Shipped models: accuracy and speed</h2>
<table><tr><th>model</th><th>variant</th><th>accuracy (clean)</th><th>median µs / window</th>
<th>file KB</th></tr>{table_rows}</table>
</body></html>
"""
