"""``voxquant listen``: spot keywords live from a microphone or from a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from voxquant.paths import EXAMPLES_DIR


def register(sub, add_model_options) -> None:
    p = sub.add_parser(
        "listen",
        help="spot keywords in live audio (microphone) or a recording",
        description="Print keyword detections as they happen. Reads the default "
        "microphone unless --file or --example is given.",
    )
    add_model_options(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", default=None,
                     help="sounddevice input device (index or name substring)")
    src.add_argument("--file", default=None, help="read this audio file instead of a microphone")
    src.add_argument("--example", action="store_true",
                     help="read the example recording bundled with voxquant")
    p.add_argument("--realtime", action="store_true",
                   help="with --file: read at real-time speed (default: as fast as possible)")
    p.add_argument("--sample-rate-hz", type=int, default=16000,
                   help="microphone capture rate in Hz (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds of audio (default: until the end or Ctrl-C)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per detection, then a final {\"stats\": ...} line")
    p.add_argument("--trace", default=None, metavar="OUT.jsonl",
                   help="write a per-window trace (time, SNR, precision, gate, CPU) to this file")
    p.add_argument("--confirm", default=None, metavar="MODEL",
                   help="a second model that must agree before a detection is reported, "
                        "run only when the first fires (e.g. mlperf-kws: the shared MLPerf "
                        "Tiny reference)")
    p.add_argument("--confirm-threshold", type=float, default=0.5,
                   help="posterior the confirming model must give (default: %(default)s)")
    p.add_argument("--incremental", action="store_true",
                   help="update only the newest rows of each layer per hop (causal models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxquant.spotter import KeywordSpotter
    from voxquant.stream.sources import Microphone, WavFile

    path = EXAMPLES_DIR / "keywords.wav" if args.example else args.file
    spotter = KeywordSpotter(
        args.model,
        policy=args.policy,
        threshold=args.threshold,
        sample_rate_hz=16000 if path else args.sample_rate_hz,
        runtime=args.runtime,
        trace=bool(args.trace),
        incremental=args.incremental,
        confirm=args.confirm,
        confirm_threshold=args.confirm_threshold,
    )
    if path:
        source = WavFile(path, sample_rate_hz=16000, realtime=args.realtime)
        where = str(path)
    else:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        source = Microphone(device, sample_rate_hz=args.sample_rate_hz)
        where = f"microphone {device if device is not None else '(default)'}"
    if not args.json:
        print(f"voxquant listen: model {spotter.card.name}, policy {args.policy}, "
              f"{len(spotter.labels)} classes, reading {where}", file=sys.stderr)

    async def announced(opened):
        first = True
        async for chunk in opened:
            if first:
                print("voxquant listen: audio is flowing", file=sys.stderr, flush=True)
                first = False
            yield chunk
            spotter.overruns = int(getattr(opened, "overruns", 0))
            if args.seconds and spotter.stats.audio_seconds >= args.seconds:
                return

    async def consume() -> None:
        spotter.warm_up()  # compile or load kernels before the microphone opens
        async with source as opened:
            detections = spotter.listen(announced(opened))
            await _print_detections(detections)

    async def _print_detections(detections) -> None:
        async for det in detections:
            if args.json:
                print(json.dumps(det.to_dict()), flush=True)
            else:
                st = spotter.stats
                load = 100.0 * st.cpu_seconds / max(st.audio_seconds, 1e-9)
                print(f"{det}   (now {spotter.precision}, CPU {load:.2f}% of real time)",
                      flush=True)

    def stop_on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    interrupted = False
    try:
        asyncio.run(consume())
    except KeyboardInterrupt:
        interrupted = True
    _finish(spotter, args, interrupted)
    return 0


def _finish(spotter, args, interrupted: bool) -> None:
    st = spotter.stats
    summary = {**st.to_dict(), "interrupted": interrupted}
    if args.trace:
        with open(args.trace, "w") as fh:
            for row in spotter.trace:
                fh.write(json.dumps(row.to_dict()) + "\n")
    if args.json:
        print(json.dumps({"stats": summary}), flush=True)
    else:
        rtf = st.audio_seconds / max(st.cpu_seconds, 1e-9)
        times = ", ".join(f"{k} {v:.1f} s" for k, v in summary["precision_time"].items())
        print(f"{st.audio_seconds:.1f} s of audio in {st.cpu_seconds * 1000:.0f} ms CPU "
              f"({rtf:.0f}x real time); precision: {times}; "
              f"gated {100 * st.gated_fraction:.0f}% of windows; overruns {st.overruns}",
              file=sys.stderr)
