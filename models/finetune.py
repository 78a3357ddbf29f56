"""Fine-tune the MLPerf Tiny keyword model (DS-CNN) on the shared data, in noise.

Usage::

    python -m voxquant.models.finetune --data ../shared/data --out OUT \\
        --name mlperf-ft --epochs 50 --seed 0 --set extra_unknown=1200 ...

The MLPerf Tiny reference model (``shared/models/mlperf_tiny_kws``) learned the
12 Speech Commands classes from the whole v0.02 training partition, far more
speakers than the shared slice has, but it loses most of its accuracy in the
shared noises (docs/accuracy.md). Fine-tuning starts from its weights and goes
on with this project's training recipe: the kws12 training split, waveform
augmentation with the training part of every noise recording, extra
``_unknown_`` speech (FSDD digits, LibriSpeech pieces) and ``_silence_``
windows (:mod:`voxquant.models.train`). The model keeps the MLPerf front end
(10 MFCC, per-clip peak scaling) and its exact graph: the fine-tuned weights are
written into a copy of the reference ONNX file, so everything that runs the
reference (the engine, onnxruntime, the :class:`~voxquant.stream.confirm.Confirmer`)
runs the result unchanged.

Its convolutions pad in time (look-ahead), so the engine runs it per window,
not incrementally: it is meant as a confirming second stage, run only when the
always-on model fires (``KeywordSpotter(..., confirm="OUT/NAME.onnx")``). As
such it is measured and not shipped: see docs/training.md.

torch is imported only inside the functions that train (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxquant.errors import ConfigError, DataNotFoundError
from voxquant.models import train as tr
from voxquant.paths import shared_data_dir, shared_models_dir
from voxquant.stream.frontend import get_frontend_config

__all__ = ["REFERENCE", "finetune", "main", "torch_module", "write_onnx"]

#: The reference model inside ``shared/models``, and where it comes from.
REFERENCE = {
    "file": "mlperf_tiny_kws/kws_ref_model_float32.onnx",
    "repository": "mlcommons/tiny",
    "commit": "1afd2c9820f795965a6134facd0b4dfae41ef23f",
    "licence": "Apache-2.0",
    "trained_on": "Speech Commands v0.02 training partition (12 classes)",
}
FRONTEND_NAME = "mlperf"


def _reference_path() -> Path:
    path = shared_models_dir(required=True) / REFERENCE["file"]
    if not path.is_file():
        raise DataNotFoundError(f"fine-tuning needs the MLPerf reference model at {path}")
    return path


def _graph_layers(model) -> tuple[list[tuple[Any, dict]], Any, Any]:
    """(convolutions with their attributes, the dense MatMul, its bias Add) of the
    DS-CNN graph; ConfigError naming the node for anything else."""
    import onnx

    convs, matmul, add = [], None, None
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if matmul is not None or len(node.input) != 3:
                raise ConfigError(f"{node.name or node.output[0]}: unexpected Conv in a DS-CNN")
            convs.append((node, attrs))
        elif node.op_type == "MatMul":
            matmul = node
        elif node.op_type == "Add":
            add = node
        elif node.op_type not in ("Reshape", "Relu", "AveragePool", "Softmax"):
            raise ConfigError(f"{node.name or node.output[0]}: op {node.op_type} is not part "
                              "of the MLPerf DS-CNN this fine-tunes")
    if not convs or matmul is None or add is None:
        raise ConfigError("not a DS-CNN: needs Conv layers, then MatMul + Add")
    return convs, matmul, add


def torch_module(model, dropout: float = 0.0):
    """A torch copy of the DS-CNN ONNX graph ``model`` (same weights, same outputs as
    onnxruntime before any training); it takes features [N, 1, frames, 10], as the TC-DS
    models do, and gives logits.

    Every Conv is followed by ReLU, the average pool covers what is left of the
    input and the dense layer follows it, as in the reference graph.
    """
    import torch
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs, matmul, add = _graph_layers(model)

    class DSCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList()
            self.pads: list[tuple[int, int, int, int]] = []
            for node, attrs in convs:
                w, b = weights[node.input[1]], weights[node.input[2]]
                group = int(attrs.get("group", 1))
                conv = torch.nn.Conv2d(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]),
                                       stride=tuple(attrs.get("strides", (1, 1))), groups=group)
                conv.weight.data = torch.from_numpy(w.copy())
                conv.bias.data = torch.from_numpy(b.copy())
                self.convs.append(conv)
                top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0))
                self.pads.append((left, right, top, bottom))  # torch pads the last dim first
            w = weights[matmul.input[1]]
            self.dense = torch.nn.Linear(w.shape[0], w.shape[1])
            self.dense.weight.data = torch.from_numpy(w.T.copy())
            self.dense.bias.data = torch.from_numpy(weights[add.input[1]].copy())
            self.dropout = torch.nn.Dropout(dropout)

        def forward(self, x):  # [N, 1, frames, features]: the file's NHWC [N, T, F, 1] as NCHW
            for conv, pad in zip(self.convs, self.pads):
                x = torch.relu(conv(torch.nn.functional.pad(x, pad)))
            return self.dense(self.dropout(x.mean(dim=(2, 3))))

    return DSCNN()


def write_onnx(template, module, path: Path, doc: str) -> Path:
    """Write ``module``'s weights into a copy of the ONNX graph ``template``."""
    import copy

    import onnx
    from onnx import numpy_helper

    model = copy.deepcopy(template)
    by_name = {t.name: t for t in model.graph.initializer}
    convs, matmul, add = _graph_layers(model)
    new = {matmul.input[1]: module.dense.weight.detach().numpy().T,
           add.input[1]: module.dense.bias.detach().numpy()}
    for (node, _), conv in zip(convs, module.convs):
        new[node.input[1]] = conv.weight.detach().numpy()
        new[node.input[2]] = conv.bias.detach().numpy()
    for name, value in new.items():
        old = by_name[name]
        if tuple(old.dims) != value.shape:
            raise ConfigError(f"{name}: shape {value.shape} differs from {tuple(old.dims)}")
        old.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
    model.doc_string = doc
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _count(module) -> tuple[int, int]:
    """(multiply-accumulates per window, parameters) of the torch DS-CNN (49 x 10 input)."""
    import torch

    macs = 0
    x = torch.zeros(1, 1, 49, 10)
    for conv, pad in zip(module.convs, module.pads):
        x = conv(torch.nn.functional.pad(x, pad))
        k = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
        macs += x.numel() * k
    macs += module.dense.weight.numel()
    return int(macs), int(sum(p.numel() for p in module.parameters()))


def finetune(
    data_dir: str | Path | None,
    out_dir: str | Path,
    epochs: int = 30,
    seed: int = 0,
    *,
    name: str = "mlperf-ft",
    log=print,
    **overrides: Any,
) -> tr.TrainResult:
    """Fine-tune the MLPerf reference on the kws12 task; write ``<name>.onnx`` and its card.

    Parameters
    ----------
    data_dir : path, optional
        Shared audio folder (default: ``shared_data_dir()``).
    out_dir : path
        Where the ONNX model and its card go.
    epochs, seed : int
        Training length and the seed of every random choice (reproducible).
    name : str
        Model name.
    **overrides
        Any :class:`~voxquant.models.train.TrainOptions` field. The augmentation,
        extra ``_unknown_`` speech, learning rate (one-cycle schedule) and
        ``dropout`` (before the dense layer) are used; the TC-DS shape, QAT,
        distillation, SpecAugment and ``frontend`` fields are not (the features are
        always the MLPerf front end's).
    """
    import onnx
    import torch

    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir(required=True)
    opts = tr.TrainOptions(task="kws12", epochs=epochs, seed=seed, **overrides)
    torch.set_num_threads(opts.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    started = time.time()

    reference = _reference_path()
    template = onnx.load(str(reference))
    module = torch_module(template, opts.dropout)
    data = tr._prepare("kws12", data_dir, opts, log, FRONTEND_NAME)
    classes, val_x, val_labels = data["classes"], data["val_x"], data["val_labels"]

    def val_accuracy() -> float:
        return tr._torch_accuracy(module, val_x, val_labels, classes)

    log(f"reference before fine-tuning: val {100 * val_accuracy():.2f}%")
    aug = tr._Augmenter(opts, data["noises"], rng)
    optim = torch.optim.AdamW(module.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
    sched = None
    for epoch in range(epochs):
        t0 = time.time()
        x_np, y_np, _ = tr._epoch_data(data, opts, aug, rng)  # MLPerf features
        x, y = torch.from_numpy(x_np[:, None]), torch.from_numpy(y_np)
        steps = (len(y) + opts.batch_size - 1) // opts.batch_size
        if sched is None:
            sched = torch.optim.lr_scheduler.OneCycleLR(
                optim, max_lr=opts.lr, epochs=epochs, steps_per_epoch=steps, pct_start=0.15)
        module.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for b in range(steps):
            idx = order[b * opts.batch_size : (b + 1) * opts.batch_size]
            loss = loss_fn(module(x[idx]), y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total += float(loss.detach())
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {total / steps:.4f}  "
            f"val {100 * val_accuracy():.2f}%  ({len(y)} samples, {time.time() - t0:.1f}s)")

    module.eval()
    out_dir = Path(out_dir)
    onnx_path = write_onnx(
        template, module, out_dir / f"{name}.onnx",
        doc=f"voxquant {name}: the MLPerf Tiny DS-CNN ({REFERENCE['repository']}, "
            f"{REFERENCE['licence']}) fine-tuned on the shared data; classes {', '.join(classes)}")
    acc, per_class, _ = tr.evaluate_onnx(onnx_path, val_x, val_labels, classes)
    log(f"onnxruntime validation accuracy: {100 * acc:.2f}%")
    card = _model_card(name, data_dir, opts, classes, data, acc, per_class, onnx_path,
                       module, reference, time.time() - started)
    card_path = out_dir / f"{name}.json"
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    log(f"wrote {onnx_path} and {card_path}")
    return tr.TrainResult(onnx_path, card_path, acc,
                          {k: v["accuracy"] for k, v in per_class.items()})


def _model_card(name, data_dir, opts, classes, data, acc, per_class, onnx_path, module,
                reference: Path, seconds: float) -> dict[str, Any]:
    macs, params = _count(module)
    fe = get_frontend_config(FRONTEND_NAME)
    return tr.model_card(
        name, "kws12", data_dir, opts, classes, data, acc, per_class, onnx_path, seconds,
        frontend=FRONTEND_NAME,
        input_spec={"name": "input_1",
                    "shape": [1, fe.frames_for(tr.WINDOW_SAMPLES), fe.n_features, 1],
                    "layout": "NHWC, H = time frames (oldest first), W = MFCC coefficients"},
        output_name="Identity",
        architecture={
            "family": "DS-CNN (the MLPerf Tiny keyword-spotting reference), fine-tuned",
            "base": {**REFERENCE,
                     "sha256": hashlib.sha256(reference.read_bytes()).hexdigest()},
            "causal": False,
            "time_padding": "'same' padding in time (look-ahead): run per window, "
                            "as a confirming second stage",
        },
        macs=macs, params=params,
        command=f"python -m voxquant.models.finetune --data DATA --out OUT "
                f"--name {name} --epochs {opts.epochs} --seed {opts.seed}"
                + "".join(f" --set {k}={v}" for k, v in tr._overrides(opts).items()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m voxquant.models.finetune",
        description="Fine-tune the MLPerf Tiny DS-CNN on the shared data; writes NAME.onnx "
                    "and NAME.json.",
    )
    p.add_argument("--data", type=Path, default=None, help="shared audio folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", default="mlperf-ft", help="model name (default: mlperf-ft)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainOptions field, e.g. --set lr=0.001")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return tr.run_command(lambda: finetune(args.data, args.out, args.epochs, args.seed,
                                           name=args.name, **tr._parse_overrides(args.set)))


if __name__ == "__main__":
    sys.exit(main())
