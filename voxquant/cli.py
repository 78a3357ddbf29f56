"""The ``voxquant`` command line: one entry point, one sub-command per use.

Each sub-command lives in its own module (``voxquant/cli_*.py``) and registers
its options here; this module only builds the parser and dispatches.
"""

from __future__ import annotations

import argparse
import sys

from voxquant.errors import VoxquantError

__all__ = ["main", "build_parser"]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``listen``, ``score``, ``report`` and ``bench``."""
    parser.add_argument(
        "--model",
        default="kws12",
        help="shipped model name (kws12, digits) or path to an .onnx file with its "
        ".json model card beside it (default: %(default)s)",
    )
    parser.add_argument(
        "--policy",
        default="adaptive",
        choices=["fp32", "int8-static", "int8-dynamic", "int16", "adaptive"],
        help="precision policy: a fixed precision, or 'adaptive' (precision follows "
        "the estimated noise, model skipped on stationary background) (default: %(default)s)",
    )
    parser.add_argument(
        "--runtime",
        default="voxquant",
        choices=["voxquant", "onnxruntime"],
        help="inference runtime; onnxruntime is the fp32 peer baseline (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="smoothed posterior (0-1) a keyword needs to fire (default: the model card's)",
    )


def build_parser() -> argparse.ArgumentParser:
    from voxquant import cli_listen

    parser = argparse.ArgumentParser(
        prog="voxquant",
        description="Streaming dynamic-quantization keyword spotting.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_listen.register(sub, add_model_options)
    for name in ("cli_score", "cli_report", "cli_bench", "cli_train"):
        try:
            module = __import__(f"voxquant.{name}", fromlist=["register"])
        except ModuleNotFoundError:
            continue
        module.register(sub, add_model_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # every option, --help included, belongs to the trainer
        argv = argv[:1] + ["--"] + argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VoxquantError as exc:
        print(f"voxquant: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
