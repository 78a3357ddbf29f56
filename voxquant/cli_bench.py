"""``voxquant bench``: the engine and streaming benchmarks in one run, one table.

Engine rows: per-window latency of every shipped model (and the MLPerf Tiny
model when the shared folder is present) in voxquant's variants, onnxruntime
fp32 / static QDQ int8 / quantize_dynamic, and LiteRT where installed.
Streaming rows: CPU per audio second of each policy on a long noisy stream.
Everything single thread, interleaved repetitions, medians, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

STREAM_CONFIGS = {
    ("onnxruntime", "fp32"): {"runtime": "onnxruntime", "policy": "fp32"},
    ("voxquant", "fp32"): {"policy": "fp32"},
    ("voxquant", "int8-dynamic"): {"policy": "int8-dynamic"},
    ("voxquant", "int16"): {"policy": "int16"},
    ("voxquant", "adaptive"): {"policy": "adaptive"},
    ("voxquant", "fp32-incremental"): {"policy": "fp32", "incremental": True},
    ("voxquant", "adaptive-incremental"): {"policy": "adaptive", "incremental": True},
}


def register(sub, add_model_options) -> None:
    p = sub.add_parser(
        "bench",
        help="engine and streaming benchmarks, ours vs onnxruntime and LiteRT, one table",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--rounds", type=int, default=9,
                   help="interleaved rounds per runner (median reported) (default: %(default)s)")
    p.add_argument("--calls", type=int, default=30,
                   help="inferences per round and runner (default: %(default)s)")
    p.add_argument("--stream-model", default="kws12",
                   help="model for the streaming rows (default: %(default)s)")
    p.add_argument("--stream-repeats", type=int, default=3,
                   help="interleaved runs of each streaming configuration (default: %(default)s)")
    p.add_argument("--json", dest="json_out", metavar="OUT",
                   help="rows as in benchmarks/engine.py plus streaming rows")
    p.set_defaults(func=run)


def streaming_rows(model: str, repeats: int) -> list[dict]:
    import numpy as np

    from voxquant.evalsets import load_eval_set, long_stream
    from voxquant.models.cards import resolve_model
    from voxquant.report import run_stream

    card = resolve_model(model)
    evalset = load_eval_set(card.labels, max_clips=120)
    keywords = tuple(lab for lab in card.labels if not lab.startswith("_"))
    audio, events, _ = long_stream(evalset, keywords, words_per_segment=5)
    samples: dict[tuple, list[float]] = {k: [] for k in STREAM_CONFIGS}
    for _ in range(repeats):
        for key, options in STREAM_CONFIGS.items():
            try:
                r = run_stream(model, audio, events, **options)
            except Exception as exc:  # noqa: BLE001 - a level this model lacks
                samples.pop(key, None)
                print(f"skipped {key}: {exc}")
                continue
            if key in samples:
                samples[key].append(r["cpu_per_audio_s"])
    return [{"model": card.name, "runtime": rt, "variant": variant, "kind": "streaming",
             "cpu_per_audio_s": float(np.median(v)), "audio_seconds": audio.size / 16000}
            for (rt, variant), v in samples.items() if v]


def run(args: argparse.Namespace) -> int:
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    from rich.console import Console
    from rich.table import Table

    from voxquant import bench

    console = Console(width=None if sys.stdout.isatty() else 140)
    with console.status("engine benchmark (per-window latency)"):
        result = bench.run(args.rounds, args.calls)
    with console.status("streaming benchmark (CPU per audio second)"):
        stream = streaming_rows(args.stream_model, args.stream_repeats)
    table = Table(title="voxquant bench: one thread, medians of interleaved runs")
    for col in ("model", "runtime", "variant", "µs / window (CPU)", "vs onnxruntime fp32",
                "CPU ms / audio s"):
        table.add_column(col, justify="left" if col in ("model", "runtime", "variant")
                         else "right")
    base = {r["model"]: r["median_cpu_us"] for r in result["rows"]
            if r["runtime"] == "onnxruntime" and r["variant"] == "fp32"}
    for r in result["rows"]:
        b = base.get(r["model"])
        table.add_row(r["model"], r["runtime"], r["variant"], f"{r['median_cpu_us']:.1f}",
                      f"{b / r['median_cpu_us']:.2f}x" if b else "", "")
    sbase = {r["model"]: r["cpu_per_audio_s"] for r in stream
             if r["runtime"] == "onnxruntime" and r["variant"] == "fp32"}
    for r in stream:
        b = sbase.get(r["model"])
        table.add_row(r["model"], r["runtime"], f"stream {r['variant']}", "",
                      f"{b / r['cpu_per_audio_s']:.2f}x" if b else "",
                      f"{1000 * r['cpu_per_audio_s']:.2f}")
    console.print(table)
    for note in result.get("notes", []):
        console.print(f"note: {note}")
    if args.json_out:
        doc = {"machine": result["machine"], "rows": result["rows"] + stream,
               "notes": result.get("notes", [])}
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
    return 0
