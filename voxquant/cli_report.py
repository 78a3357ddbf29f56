"""``voxquant report``: a self-contained HTML report plus ``report.json``."""

from __future__ import annotations

import argparse
import sys


def register(sub, add_model_options) -> None:
    p = sub.add_parser(
        "report",
        help="measure and report accuracy vs SNR, CPU per policy and compute saved (HTML+JSON)",
        description="Builds DIR/report.html (plots embedded as PNG) and DIR/report.json. Uses "
        "the shared audio when found (--data, VOXQUANT_DATA or ../shared/data), else the "
        "bundled example clips with synthetic noise, and says so on the first page.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_options(p)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="shared audio folder (holding speech_commands/, fsdd/, noise/)")
    p.add_argument("--snr", default="20,10,5,0",
                   help="comma-separated SNRs in dB for the accuracy curve (default: %(default)s)")
    p.add_argument("--max-clips", type=int, default=300,
                   help="validation clips used per condition (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxquant.errors import ConfigError
    from voxquant.report import build_report

    try:
        snrs = tuple(float(x) for x in args.snr.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--snr must be comma-separated numbers, got {args.snr!r}") from None
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("building the report") as status:
        report = build_report(args.out, model=args.model, data_dir=args.data, snrs=snrs,
                              runtime=args.runtime, max_clips=args.max_clips,
                              progress=lambda step: status.update(f"report: {step}"))
    print(f"wrote {args.out}/report.html and report.json ({report['data_source']} data, "
          f"{report['build_seconds']} s)", file=sys.stderr)
    for policy, per in report["accuracy_vs_snr"].items():
        print(f"{policy:>13}: " + "  ".join(f"{c}: {100 * v:.1f}%" for c, v in per.items()))
    return 0
