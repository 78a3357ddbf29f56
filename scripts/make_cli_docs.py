"""Write docs/cli.md from real runs of each sub-command (nothing typed by hand).

    python scripts/make_cli_docs.py            # uses the shared audio when present

Each command is run as a subprocess; its output (trimmed) and the figures of
its JSON go into the page, with the machine it ran on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine  # noqa: E402

from voxquant.paths import shared_data_dir  # noqa: E402


def sh(args: list[str], *, max_lines: int = 25) -> tuple[str, int]:
    proc = subprocess.run([sys.executable, "-m", "voxquant.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,  # in the order printed
                          env={**os.environ, "COLUMNS": "100", "PYTHONUNBUFFERED": "1"})
    text = proc.stdout.rstrip().splitlines()
    if len(text) > max_lines:
        text = text[: max_lines - 3] + ["[...]"] + text[-2:]
    return "\n".join(text), proc.returncode


def block(cmd: str, out: str) -> str:
    return f"```console\n$ {cmd}\n{out}\n```\n"


def main() -> int:
    data = shared_data_dir(required=False)
    tmp = Path(tempfile.mkdtemp(prefix="vq_docs_"))
    m = machine()
    parts = [
        "# The command line\n",
        "Written by `scripts/make_cli_docs.py` from real runs (do not edit by hand). Machine: "
        f"{m['cpu']}, {m['cores']} cores; commit {m['commit']}.\n",
        "One entry point, `voxquant`, with sub-commands `listen`, `score`, `report`, `bench` and "
        "`train`. `voxquant COMMAND --help` explains every option, with units.\n",
        "## `voxquant listen`\n",
        "Spots keywords in live audio (default input device), a file (`--file`), or the bundled "
        "example (`--example`). `--json` prints one JSON line per detection and a final "
        "`{\"stats\": ...}` line.\n",
    ]
    out, _ = sh(["listen", "--example"])
    parts.append(block("voxquant listen --example", out))
    out, _ = sh(["listen", "--example", "--json", "--policy", "int8-dynamic"])
    parts.append(block("voxquant listen --example --json --policy int8-dynamic", out))

    parts.append("## `voxquant score`\n")
    parts.append("One row per file; bad files become rows in `failed` and set exit code 1; "
                 "Ctrl-C writes what was scored so far (exit 130).\n")
    if data is not None:
        words = data / "speech_commands"
        js1, js2 = tmp / "score1.json", tmp / "score2.json"
        out, rc = sh(["score", str(words), "--labels-from-dirs", "--workers", "1", "--json",
                      str(js1)], max_lines=8)
        parts.append(block("voxquant score ../shared/data/speech_commands --labels-from-dirs "
                           "--workers 1 --json score.json", out))
        out2, _ = sh(["score", str(words), "--labels-from-dirs", "--workers", "2", "--json",
                      str(js2)], max_lines=4)
        parts.append(block("voxquant score ../shared/data/speech_commands --labels-from-dirs "
                           "--workers 2 --json score.json", out2))
        s1, s2 = json.loads(js1.read_text()), json.loads(js2.read_text())
        parts.append(
            "### Throughput\n\n"
            f"On {s1['files']} one-second clips ({s1['audio_seconds']:.0f} s of audio), including "
            "decoding (FLAC), resampling when needed, features and the model: "
            f"**{s1['realtime_factor']:.0f}x real time per core** (audio seconds / CPU seconds, "
            f"1 worker; wall {s1['wall_seconds']:.1f} s, {s1['realtime_factor_wall']:.0f}x "
            f"real time), and {s2['realtime_factor_wall']:.0f}x real time of wall clock with 2 "
            f"workers ({s2['wall_seconds']:.1f} s). Target: >= 1000x real time per core.\n")
        first = json.dumps(s1["results"][0], indent=1)
        summary = {k: s1[k] for k in ("model", "policy", "files", "audio_seconds",
                                      "cpu_seconds", "wall_seconds", "realtime_factor",
                                      "accuracy", "precision_time")}
        parts.append("The JSON summary (abridged) and one of its rows:\n\n```json\n"
                     + json.dumps(summary, indent=1) + "\n" + first + "\n```\n")
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "garbage.flac").write_bytes(b"not audio at all" * 20)
    example = ROOT / "voxquant" / "examples"
    out, rc = sh(["score", str(example), str(bad)])
    parts.append(block("voxquant score voxquant/examples bad/", out + f"\n(exit code {rc})"))

    parts.append("## `voxquant report`\n")
    rep = tmp / "report"
    out, _ = sh(["report", "--out", str(rep), "--max-clips", "120"])
    parts.append(block("voxquant report --out report --max-clips 120", out))
    parts.append("`report/report.html` embeds the plots; `report/report.json` has every "
                 "figure.\n")

    parts.append("## `voxquant bench`\n")
    out, _ = sh(["bench", "--rounds", "5"], max_lines=80)
    parts.append(block("voxquant bench --rounds 5", out))

    parts.append("## `voxquant train`\n")
    out, _ = sh(["train", "--help"], max_lines=30)
    parts.append(block("voxquant train --help", out))
    (ROOT / "docs" / "cli.md").write_text("\n".join(parts))
    print("wrote docs/cli.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
