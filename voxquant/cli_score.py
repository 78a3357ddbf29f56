"""``voxquant score``: batch scoring of audio files on all cores.

Bad files never stop a batch: each becomes a row in ``failed``. Ctrl-C stops
the batch and still writes what was scored. Exit code: 0 all scored, 1 some
files failed, 2 usage or model errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from voxquant.errors import ConfigError

_SCORER = None  # one warm scorer per worker process


def register(sub, add_model_options) -> None:
    p = sub.add_parser(
        "score",
        help="score audio files: one row per file, bad files reported, never fatal",
        description="Score files, folders (recursive) or text files listing paths. Clips up "
        "to --clip-max-s seconds are classified as one window; longer recordings are streamed "
        "and reported as detections with start/end times.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="audio file, folder (searched recursively) or .txt file of paths")
    add_model_options(p)
    p.add_argument("--labels-from-dirs", action="store_true",
                   help="the parent folder name is the true label (folders that are not a "
                   "model class count as _unknown_, _background_noise_ as _silence_)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, each with its own warm engine (default: all cores)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where to run: local processes or a Ray cluster (extra 'cluster')")
    p.add_argument("--clip-max-s", type=float, default=1.5,
                   help="files up to this many seconds are scored as one window "
                   "(default: %(default)s)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write summary and rows here")
    p.add_argument("--csv", dest="csv_out", metavar="OUT", help="write one CSV row per file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def expand_paths(items: list[str]) -> list[Path]:
    """Files, recursive folders and path lists, in a stable order (duplicates kept once)."""
    from voxquant.scoring import AUDIO_SUFFIXES

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.suffix.lower() == ".txt" and path.is_file():
            base = path.parent
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    out.append(p if p.is_absolute() else base / p)
        else:
            out.append(path)  # missing files become 'failed' rows, not a crash
    seen: set[str] = set()
    unique = []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return unique


def true_label(path: Path, labels: tuple[str, ...]) -> str | None:
    folder = path.parent.name
    if folder in labels:
        return folder
    if folder == "_background_noise_" and "_silence_" in labels:
        return "_silence_"
    return "_unknown_" if "_unknown_" in labels else None


def _init_worker(model, policy, runtime, threshold, clip_max_s, in_child=False) -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    if in_child:  # Ctrl-C is the parent's to handle: it keeps what is done
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _SCORER
    from voxquant.scoring import FileScorer

    _SCORER = FileScorer(model, policy=policy, runtime=runtime, threshold=threshold,
                         clip_max_s=clip_max_s)


def _score_batch(batch: list[tuple[str, str | None]]):
    from voxquant.scoring import score_or_fail

    return [score_or_fail(_SCORER, path, label) for path, label in batch]


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from voxquant.models.cards import resolve_model
    from voxquant.scoring import FailedFile, summarize

    card = resolve_model(args.model)
    paths = expand_paths(args.paths)
    if not paths:
        raise ConfigError("no audio files found in the given paths")
    jobs = [(str(p), true_label(p, card.labels) if args.labels_from_dirs else None)
            for p in paths]
    workers = max(1, args.workers or os.cpu_count() or 1)
    init = (args.model, args.policy, args.runtime, args.threshold, args.clip_max_s)
    batch_size = max(1, min(64, len(jobs) // (workers * 4) or 1))
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    rows, failed = [], []
    interrupted = False
    t0 = time.perf_counter()
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(),
                        disable=args.quiet or len(jobs) < 50, transient=True)
    try:
        with progress:
            task = progress.add_task("scoring", total=len(jobs))
            for results in _run_batches(args.engine, workers, init, batches):
                first = not rows and not failed
                for r in results:
                    (failed if isinstance(r, FailedFile) else rows).append(r)
                if first:
                    print(f"voxquant score: scoring {len(jobs)} files on {workers} worker(s)",
                          file=sys.stderr, flush=True)
                progress.advance(task, len(results))
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - t0
    order = {p: i for i, (p, _) in enumerate(jobs)}
    rows.sort(key=lambda r: order[r.path])
    failed.sort(key=lambda f: order[f.path])
    summary = summarize(rows, failed, labels=card.labels, model=args.model, policy=args.policy,
                        wall_seconds=wall, interrupted=interrupted)
    summary["workers"] = workers
    summary["engine"] = args.engine
    _write_outputs(args, summary, rows)
    _print_summary(summary, rows, failed)
    if interrupted:
        return 130
    return 1 if failed else 0


def _run_batches(engine: str, workers: int, init: tuple, batches: list):
    if engine == "ray":
        from voxquant.cluster import run_on_ray

        yield from run_on_ray(workers, init, batches)
        return
    if workers == 1:
        _init_worker(*init)
        for batch in batches:
            yield _score_batch(batch)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(*init, True)) as pool:
        futures = [pool.submit(_score_batch, batch) for batch in batches]
        try:
            for future in as_completed(futures):
                yield future.result()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _write_outputs(args, summary: dict, rows) -> None:
    if args.json_out:
        doc = {**summary, "results": [r.to_dict() for r in rows]}
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
    if args.csv_out:
        with open(args.csv_out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "mode", "duration_s", "pred", "score", "top3",
                             "precision", "cpu_ms", "detections"])
            for r in rows:
                d = r.to_dict()
                dets = ";".join(f"{x['keyword']}@{x['start_s']}-{x['end_s']}"
                                for x in d.get("detections", []))
                top3 = ";".join(f"{lab}:{s}" for lab, s in d["top3"])
                writer.writerow([d["path"], d.get("label", ""), d["mode"], d["duration_s"],
                                 d["pred"], d["score"], top3, d["precision"], d["cpu_ms"], dets])


def _print_summary(summary: dict, rows, failed) -> None:
    if len(rows) <= 20:
        for r in rows:
            extra = f" detections {len(r.detections)}" if r.mode == "stream" else ""
            print(f"{r.path}: {r.pred} ({r.score:.2f}, {r.precision}, {r.mode}){extra}")
    for f in failed:
        print(f"FAILED {f.path}: {f.error}", file=sys.stderr)
    acc = summary["accuracy"]
    print(f"{summary['scored']} scored, {len(failed)} failed; "
          f"{summary['audio_seconds']:.1f} s audio in {summary['cpu_seconds']:.2f} s CPU "
          f"({summary['realtime_factor']}x real time per core), "
          f"wall {summary['wall_seconds']:.2f} s"
          + (f"; accuracy {100 * acc:.2f}%" if acc is not None else "")
          + (" [interrupted]" if summary["interrupted"] else ""))
