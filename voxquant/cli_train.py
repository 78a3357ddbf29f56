"""``voxquant train``: train a keyword model (needs the ``train`` extra: torch).

Every option is that of ``python -m voxquant.models.train``; ``voxquant train
--help`` lists them.
"""

from __future__ import annotations

import argparse


def register(sub, add_model_options) -> None:
    p = sub.add_parser(
        "train",
        add_help=False,
        help="train a keyword model on the shared data or your own folder of clips",
        description="Train a streaming keyword model and write ONNX plus a model card.",
    )
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="options of voxquant.models.train (see 'voxquant train --help')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxquant.errors import ConfigError

    try:
        from voxquant.models.train import main
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise ConfigError("training needs PyTorch: pip install 'voxquant[train]'") from None
        raise
    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return int(main(rest) or 0)
