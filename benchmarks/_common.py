"""Helpers shared by the benchmark scripts: single-thread setup, machine facts, Markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path


def single_thread() -> None:
    """Pin every runtime to one thread (call before importing numpy users)."""
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def machine() -> dict:
    """CPU model, core count, SIMD flags of interest, Python and package versions."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu in ("", "x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")
                             if f in have]
                    break
    except OSError:
        pass
    versions = {}
    for name in ("numpy", "numba", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": flags,
            "python": platform.python_version(), "versions": versions, "commit": commit}


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def publish(doc: dict, text: str, json_out: str | None, md_out: str | None) -> None:
    """Print the Markdown and write the JSON and Markdown files when asked."""
    print(text)
    if json_out:
        Path(json_out).write_text(json.dumps(doc, indent=1))
    if md_out:
        Path(md_out).write_text(text)
