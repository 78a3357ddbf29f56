"""ONNX (opset 13+) -> :class:`~voxquant.models.graph.Graph`.

One importer function per op kind, registered in ``IMPORTERS`` (the pattern of
onnxruntime quantization's ``registry.py``): a new op is one function and one
line. Layout-only ops (Reshape/Flatten/Squeeze/Transpose that do not move data,
Identity, Dropout) produce no layer; BatchNormalization, Relu/Clip, a bias Add
and Pad are folded into the layer next to them at import. Anything else raises
:class:`UnsupportedOpError` naming the file and node.

Tensors are tracked with their ONNX logical shape plus how their data is laid
out in the engine's HWC storage:

* ``nchw``: ONNX ``(1, C, H, W)`` stored as HWC;
* ``rowmajor``: stored in ONNX row-major order; ``perm`` (flat tensors only)
  maps a logical index to its storage index when a flatten of an NCHW map left
  the data in HWC order, which the next Gemm/MatMul absorbs into its weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxquant.errors import ModelImportError, UnsupportedOpError
from voxquant.models.graph import (
    ADD,
    AVGPOOL,
    CONV,
    MAXPOOL,
    SOFTMAX,
    Graph,
    Layer,
    conv_out_size,
    same_pads,
)


@dataclass
class _Info:
    """What the importer knows about one ONNX tensor."""

    shape: tuple[int, ...]
    tid: int | None = None
    layout: str = "rowmajor"
    hwc: tuple[int, int, int] | None = None
    perm: np.ndarray | None = None
    const: np.ndarray | None = None
    pending_pads: tuple[int, int, int, int] | None = None


class _Ctx:
    """Import state: tensors by name, layers so far, consumer counts."""

    def __init__(self, path: str, model) -> None:
        self.path = path
        self.model = model
        self.infos: dict[str, _Info] = {}
        self.layers: list[Layer] = []
        self.n_tensors = 1
        self.consumers: dict[str, int] = {}
        self.producer_layer: dict[int, int] = {}
        for node in model.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
        for out in model.graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1

    def fail(self, node, reason: str) -> ModelImportError:
        return ModelImportError(self.path, node.name or node.op_type, reason)

    def info(self, node, name: str) -> _Info:
        if name not in self.infos:
            raise self.fail(node, f"input {name!r} is not produced by any earlier node")
        return self.infos[name]

    def const(self, node, name: str) -> np.ndarray:
        inf = self.info(node, name)
        if inf.const is None:
            raise self.fail(node, f"input {name!r} must be a constant initializer")
        return inf.const

    def new_tensor(self) -> int:
        self.n_tensors += 1
        return self.n_tensors - 1

    def add_layer(self, layer: Layer) -> None:
        self.producer_layer[layer.output] = len(self.layers)
        self.layers.append(layer)

    def fusable_layer(self, node, name: str) -> int | None:
        """Index of the layer producing ``name`` if only this node consumes it."""
        inf = self.info(node, name)
        if inf.tid is None or self.consumers.get(name, 0) != 1:
            return None
        return self.producer_layer.get(inf.tid)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _as_nchw(ctx: _Ctx, node, inf: _Info) -> tuple[int, int, int]:
    """HWC storage shape of a tensor a spatial op reads as NCHW."""
    if inf.tid is None:
        raise ctx.fail(node, "spatial op on a constant tensor")
    if inf.layout == "nchw":
        return inf.hwc
    shp = inf.shape
    if len(shp) == 4 and shp[0] == 1 and shp[1] == 1 and inf.perm is None:
        return (shp[2], shp[3], 1)
    if len(shp) == 3 and shp[0] == 1 and inf.perm is None:
        return (shp[1], shp[2], 1)
    raise ctx.fail(node, f"input of shape {shp} is not an NCHW map the engine can read")


def _flat_features(ctx: _Ctx, node, inf: _Info) -> int:
    """Length K of a tensor read as a (1, K) vector."""
    if inf.tid is None:
        raise ctx.fail(node, "dense op on a constant input")
    if inf.layout == "nchw":
        h, w, c = inf.hwc
        if h * w != 1:
            raise ctx.fail(node, "dense op on an unflattened feature map")
        return c
    shp = inf.shape
    if len(shp) != 2 or shp[0] != 1:
        raise ctx.fail(node, f"dense op input must be (1, K), got {shp}")
    return shp[1]


def _rowmajor_hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A storage shape for a row-major tensor (only its size matters)."""
    s = [d for d in shape]
    while len(s) > 3 and s[0] == 1:
        s = s[1:]
    if len(s) > 3:
        return (1, 1, int(np.prod(s)))
    while len(s) < 3:
        s = [1] + s
    return (int(s[0]), int(s[1]), int(s[2]))


def _passthrough(ctx: _Ctx, node, out: _Info) -> None:
    ctx.infos[node.output[0]] = out


def _fuse_clamp(ctx: _Ctx, node, lo: float, hi: float) -> None:
    idx = ctx.fusable_layer(node, node.input[0])
    if idx is None or ctx.layers[idx].kind not in (CONV, ADD):
        raise ctx.fail(node, "activation can only be fused into a Conv/Gemm/Add "
                       "with no other consumer")
    layer = ctx.layers[idx]
    ctx.layers[idx] = dataclasses.replace(
        layer, act_min=max(layer.act_min, lo), act_max=min(layer.act_max, hi)
    )
    _passthrough(ctx, node, dataclasses.replace(ctx.info(node, node.input[0])))


# --------------------------------------------------------------------------- ops


def _imp_conv(ctx: _Ctx, node) -> None:
    a = _attrs(node)
    inf = ctx.info(node, node.input[0])
    h, w, cin = _as_nchw(ctx, node, inf)
    weight = ctx.const(node, node.input[1]).astype(np.float32)
    if weight.ndim != 4:
        raise ctx.fail(node, f"only 2-D convolutions are supported (weight {weight.shape})")
    cout, cin_g, kh, kw = weight.shape
    group = int(a.get("group", 1))
    if cin_g * group != cin or cout % group:
        raise ctx.fail(node, f"weight {weight.shape} does not match input channels {cin}")
    bias = (
        ctx.const(node, node.input[2]).astype(np.float32).reshape(cout)
        if len(node.input) > 2 and node.input[2]
        else np.zeros(cout, np.float32)
    )
    sh, sw = (int(v) for v in a.get("strides", (1, 1)))
    dh, dw = (int(v) for v in a.get("dilations", (1, 1)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pt, pb = same_pads(h, kh, sh, dh)
        pl, pr = same_pads(w, kw, sw, dw)
        if auto == "SAME_LOWER":
            pt, pb, pl, pr = pb, pt, pr, pl
    elif auto == "VALID":
        pt = pb = pl = pr = 0
    else:
        p = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
        pt, pl, pb, pr = p
    if inf.pending_pads is not None:
        qt, qb, ql, qr = inf.pending_pads
        pt, pb, pl, pr = pt + qt, pb + qb, pl + ql, pr + qr
    ho = conv_out_size(h, kh, sh, pt, pb, dh)
    wo = conv_out_size(w, kw, sw, pl, pr, dw)
    if ho <= 0 or wo <= 0:
        raise ctx.fail(node, "convolution output is empty")
    out = ctx.new_tensor()
    ctx.add_layer(
        Layer(
            kind=CONV,
            name=node.name or node.output[0],
            inputs=(inf.tid,),
            output=out,
            in_shape=(h, w, cin),
            out_shape=(ho, wo, cout),
            kernel=(kh, kw),
            stride=(sh, sw),
            pads=(pt, pb, pl, pr),
            dilation=(dh, dw),
            groups=group,
            weights=np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),
            bias=bias,
        )
    )
    _passthrough(ctx, node, _Info((1, cout, ho, wo), out, "nchw", (ho, wo, cout)))


def _dense(ctx: _Ctx, node, inf: _Info, wmat: np.ndarray, bias: np.ndarray) -> None:
    k = _flat_features(ctx, node, inf)
    if wmat.shape[0] != k:
        raise ctx.fail(node, f"weight {wmat.shape} does not match input features {k}")
    if inf.perm is not None:
        stored = np.empty_like(wmat)
        stored[inf.perm] = wmat
        wmat = stored
    n = wmat.shape[1]
    out = ctx.new_tensor()
    ctx.add_layer(
        Layer(
            kind=CONV,
            name=node.name or node.output[0],
            inputs=(inf.tid,),
            output=out,
            in_shape=(1, 1, k),
            out_shape=(1, 1, n),
            weights=np.ascontiguousarray(wmat.reshape(1, 1, k, n).astype(np.float32)),
            bias=bias.astype(np.float32).reshape(n),
        )
    )
    _passthrough(ctx, node, _Info((1, n), out, "rowmajor", (1, 1, n)))


def _imp_gemm(ctx: _Ctx, node) -> None:
    a = _attrs(node)
    if int(a.get("transA", 0)):
        raise ctx.fail(node, "Gemm with transA=1 is not supported")
    wmat = ctx.const(node, node.input[1]).astype(np.float32)
    if int(a.get("transB", 0)):
        wmat = wmat.T
    wmat = wmat * np.float32(a.get("alpha", 1.0))
    n = wmat.shape[1]
    bias = np.zeros(n, np.float32)
    if len(node.input) > 2 and node.input[2]:
        bias = np.broadcast_to(
            ctx.const(node, node.input[2]).astype(np.float32) * np.float32(a.get("beta", 1.0)),
            (1, n),
        ).reshape(n)
    _dense(ctx, node, ctx.info(node, node.input[0]), wmat, bias)


def _imp_matmul(ctx: _Ctx, node) -> None:
    wmat = ctx.const(node, node.input[1]).astype(np.float32)
    if wmat.ndim != 2:
        raise ctx.fail(node, "MatMul needs a 2-D constant right operand")
    _dense(ctx, node, ctx.info(node, node.input[0]), wmat, np.zeros(wmat.shape[1], np.float32))


def _imp_add(ctx: _Ctx, node) -> None:
    left, right = (ctx.info(node, n) for n in node.input[:2])
    if left.const is not None and right.const is not None:
        _passthrough(ctx, node, _Info(np.broadcast_shapes(left.shape, right.shape),
                                      const=left.const + right.const))
        return
    if left.const is not None:
        left, right = right, left
        name = node.input[1]
    else:
        name = node.input[0]
    if right.const is not None:
        idx = ctx.fusable_layer(node, name)
        layer = ctx.layers[idx] if idx is not None else None
        if layer is None or layer.kind != CONV or np.isfinite([layer.act_min, layer.act_max]).any():
            raise ctx.fail(node, "a constant Add must follow a Conv/Gemm/MatMul "
                           "with no other consumer")
        cout = layer.out_shape[2]
        c = right.const.astype(np.float32)
        if c.size == 1:
            add = np.full(cout, c.reshape(()), np.float32)
        elif c.size == cout and (left.layout == "nchw" and c.reshape(-1).size == cout
                                 and (c.ndim < 3 or c.shape[-1] == c.shape[-2] == 1)
                                 or left.layout == "rowmajor"):
            add = c.reshape(cout)
        else:
            raise ctx.fail(node, f"bias of shape {c.shape} is not per output channel")
        ctx.layers[idx] = dataclasses.replace(layer, bias=layer.bias + add)
        _passthrough(ctx, node, dataclasses.replace(left))
        return
    if left.shape != right.shape or left.layout != right.layout or left.perm is not None:
        raise ctx.fail(node, f"Add of shapes {left.shape} and {right.shape} needs broadcasting")
    hwc = left.hwc if left.layout == "nchw" else _rowmajor_hwc(left.shape)
    out = ctx.new_tensor()
    ctx.add_layer(Layer(kind=ADD, name=node.name or node.output[0], inputs=(left.tid, right.tid),
                        output=out, in_shape=hwc, out_shape=hwc))
    _passthrough(ctx, node, _Info(left.shape, out, left.layout, hwc))


def _imp_batchnorm(ctx: _Ctx, node) -> None:
    idx = ctx.fusable_layer(node, node.input[0])
    layer = ctx.layers[idx] if idx is not None else None
    if layer is None or layer.kind != CONV or np.isfinite([layer.act_min, layer.act_max]).any():
        raise ctx.fail(node, "BatchNormalization must directly follow a Conv "
                       "with no other consumer")
    gamma, beta, mean, var = (ctx.const(node, n).astype(np.float64) for n in node.input[1:5])
    eps = float(_attrs(node).get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    w = (layer.weights.astype(np.float64) * scale).astype(np.float32)
    b = ((layer.bias.astype(np.float64) - mean) * scale + beta).astype(np.float32)
    ctx.layers[idx] = dataclasses.replace(layer, weights=w, bias=b)
    _passthrough(ctx, node, dataclasses.replace(ctx.info(node, node.input[0])))


def _imp_relu(ctx: _Ctx, node) -> None:
    _fuse_clamp(ctx, node, 0.0, np.inf)


def _imp_clip(ctx: _Ctx, node) -> None:
    a = _attrs(node)
    lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    if len(node.input) > 1 and node.input[1]:
        lo = float(ctx.const(node, node.input[1]).reshape(()))
    if len(node.input) > 2 and node.input[2]:
        hi = float(ctx.const(node, node.input[2]).reshape(()))
    _fuse_clamp(ctx, node, lo, hi)


def _pool(ctx: _Ctx, node, kind: str, kernel, strides, pads) -> None:
    inf = ctx.info(node, node.input[0])
    if inf.pending_pads is not None:
        raise ctx.fail(node, "a Pad before a pooling op is not supported")
    h, w, c = _as_nchw(ctx, node, inf)
    kh, kw = kernel
    pt, pb, pl, pr = pads
    ho = conv_out_size(h, kh, strides[0], pt, pb, 1)
    wo = conv_out_size(w, kw, strides[1], pl, pr, 1)
    if ho <= 0 or wo <= 0:
        raise ctx.fail(node, "pooling output is empty")
    out = ctx.new_tensor()
    ctx.add_layer(Layer(kind=kind, name=node.name or node.output[0], inputs=(inf.tid,), output=out,
                        in_shape=(h, w, c), out_shape=(ho, wo, c), kernel=(kh, kw),
                        stride=tuple(strides), pads=(pt, pb, pl, pr)))
    _passthrough(ctx, node, _Info((1, c, ho, wo), out, "nchw", (ho, wo, c)))


def _pool_attrs(ctx: _Ctx, node, kind: str) -> None:
    a = _attrs(node)
    if int(a.get("ceil_mode", 0)):
        raise ctx.fail(node, "ceil_mode=1 pooling is not supported")
    kh, kw = (int(v) for v in a["kernel_shape"])
    strides = tuple(int(v) for v in a.get("strides", (1, 1)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    h, w, _ = _as_nchw(ctx, node, ctx.info(node, node.input[0]))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pt, pb = same_pads(h, kh, strides[0])
        pl, pr = same_pads(w, kw, strides[1])
    elif auto == "VALID":
        pt = pb = pl = pr = 0
    else:
        pt, pl, pb, pr = (int(v) for v in a.get("pads", (0, 0, 0, 0)))
    if kind == AVGPOOL and int(a.get("count_include_pad", 0)) and (pt or pb or pl or pr):
        raise ctx.fail(node, "AveragePool with count_include_pad=1 and padding is not supported")
    if int(np.prod(a.get("dilations", (1, 1)))) != 1:
        raise ctx.fail(node, "dilated pooling is not supported")
    _pool(ctx, node, kind, (kh, kw), strides, (pt, pb, pl, pr))


def _imp_avgpool(ctx: _Ctx, node) -> None:
    _pool_attrs(ctx, node, AVGPOOL)


def _imp_maxpool(ctx: _Ctx, node) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise ctx.fail(node, "MaxPool indices output is not supported")
    _pool_attrs(ctx, node, MAXPOOL)


def _imp_global_avgpool(ctx: _Ctx, node) -> None:
    h, w, _ = _as_nchw(ctx, node, ctx.info(node, node.input[0]))
    _pool(ctx, node, AVGPOOL, (h, w), (1, 1), (0, 0, 0, 0))


def _imp_global_maxpool(ctx: _Ctx, node) -> None:
    h, w, _ = _as_nchw(ctx, node, ctx.info(node, node.input[0]))
    _pool(ctx, node, MAXPOOL, (h, w), (1, 1), (0, 0, 0, 0))


def _imp_reducemean(ctx: _Ctx, node) -> None:
    a = _attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, node.input[1]).tolist()
    inf = ctx.info(node, node.input[0])
    h, w, c = _as_nchw(ctx, node, inf)
    axes = sorted(int(x) % 4 for x in axes) if axes is not None else [0, 1, 2, 3]
    if not set(axes) <= {2, 3} or not axes:
        raise ctx.fail(node, f"ReduceMean over axes {axes}: only time (2) / "
                       "frequency (3) are supported")
    kh = h if 2 in axes else 1
    kw = w if 3 in axes else 1
    _pool(ctx, node, AVGPOOL, (kh, kw), (1, 1), (0, 0, 0, 0))
    if not int(a.get("keepdims", 1)):
        out = ctx.infos[node.output[0]]
        shape = tuple(d for i, d in enumerate(out.shape) if i not in axes)
        ctx.infos[node.output[0]] = _reshaped(ctx, node, out, shape)


def _imp_softmax(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    axis = int(_attrs(node).get("axis", -1))
    if inf.layout == "nchw":
        h, w, c = inf.hwc
        ok = axis % 4 == 1 and h * w == 1
    else:
        ok = axis % len(inf.shape) == len(inf.shape) - 1 and inf.perm is None
        c = inf.shape[-1]
        ok = ok and int(np.prod(inf.shape)) == c
    if not ok or inf.tid is None:
        raise ctx.fail(node, f"Softmax over axis {axis} of {inf.shape} is not supported")
    out = ctx.new_tensor()
    ctx.add_layer(Layer(kind=SOFTMAX, name=node.name or node.output[0], inputs=(inf.tid,),
                        output=out, in_shape=(1, 1, c), out_shape=(1, 1, c)))
    _passthrough(ctx, node, _Info(inf.shape, out, inf.layout, inf.hwc or (1, 1, c)))


def _target_shape(ctx: _Ctx, node, inf: _Info, shape: list[int]) -> tuple[int, ...]:
    shape = [inf.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    total = int(np.prod(inf.shape))
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = total // max(known, 1)
    if int(np.prod(shape)) != total:
        raise ctx.fail(node, f"cannot reshape {inf.shape} to {shape}")
    return tuple(shape)


def _reshaped(ctx: _Ctx, node, inf: _Info, shape: tuple[int, ...]) -> _Info:
    if inf.const is not None:
        return _Info(shape, const=inf.const.reshape(shape))
    if inf.layout == "nchw":
        h, w, c = inf.hwc
        if c == 1 or h * w == 1:
            return _Info(shape, inf.tid, "rowmajor", _rowmajor_hwc(shape))
        if len(shape) == 2 and shape[0] == 1:
            idx = np.arange(c * h * w).reshape(h, w, c)
            perm = idx.transpose(2, 0, 1).reshape(-1)  # logical (c,h,w) -> storage index
            return _Info(shape, inf.tid, "rowmajor", (1, 1, c * h * w), perm=perm)
        raise ctx.fail(node, f"reshape of an NCHW map {inf.shape} to {shape} moves data")
    perm = inf.perm if (inf.perm is not None and len(shape) == 2 and shape[0] == 1) else None
    if inf.perm is not None and perm is None:
        raise ctx.fail(node, "reshape of a permuted flat tensor is not supported")
    return _Info(shape, inf.tid, "rowmajor", _rowmajor_hwc(shape), perm=perm)


def _imp_reshape(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    shape = _target_shape(ctx, node, inf, ctx.const(node, node.input[1]).astype(np.int64).tolist())
    _passthrough(ctx, node, _reshaped(ctx, node, inf, shape))


def _imp_flatten(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    axis = int(_attrs(node).get("axis", 1)) % max(len(inf.shape), 1)
    shape = (int(np.prod(inf.shape[:axis])), int(np.prod(inf.shape[axis:])))
    _passthrough(ctx, node, _reshaped(ctx, node, inf, shape))


def _axes(ctx: _Ctx, node) -> list[int] | None:
    axes = _attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, node.input[1]).tolist()
    return None if axes is None else [int(a) for a in axes]


def _imp_squeeze(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    axes = _axes(ctx, node)
    nd = len(inf.shape)
    axes = [a % nd for a in axes] if axes is not None else [i for i, d in enumerate(inf.shape)
                                                            if d == 1]
    shape = tuple(d for i, d in enumerate(inf.shape) if i not in axes)
    _passthrough(ctx, node, _reshaped(ctx, node, inf, shape))


def _imp_unsqueeze(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    axes = _axes(ctx, node)
    nd = len(inf.shape) + len(axes)
    shape = list(inf.shape)
    for a in sorted(x % nd for x in axes):
        shape.insert(a, 1)
    _passthrough(ctx, node, _reshaped(ctx, node, inf, tuple(shape)))


def _imp_transpose(ctx: _Ctx, node) -> None:
    inf = ctx.info(node, node.input[0])
    perm = [int(p) for p in _attrs(node).get("perm", range(len(inf.shape))[::-1])]
    shape = tuple(inf.shape[p] for p in perm)
    if inf.const is not None:
        _passthrough(ctx, node, _Info(shape, const=inf.const.transpose(perm)))
        return
    if inf.perm is None and len(perm) == 4 and inf.shape[0] == 1:
        if inf.layout == "rowmajor" and perm == [0, 3, 1, 2]:
            h, w, c = inf.shape[1:]
            _passthrough(ctx, node, _Info(shape, inf.tid, "nchw", (h, w, c)))
            return
        if inf.layout == "nchw" and perm == [0, 2, 3, 1]:
            _passthrough(ctx, node, _Info(shape, inf.tid, "rowmajor", inf.hwc))
            return
    moved = [p for p in perm if inf.shape[p] != 1]
    if moved == sorted(moved) and inf.perm is None:
        _passthrough(ctx, node, _reshaped(ctx, node, inf, shape))
        return
    raise ctx.fail(node, f"Transpose {perm} of {inf.shape} moves data (not layout-only)")


def _imp_pad(ctx: _Ctx, node) -> None:
    a = _attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = a.get("pads")
    if pads is None:
        pads = ctx.const(node, node.input[1]).tolist()
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(ctx.const(node, node.input[2]).reshape(()))
    if len(node.input) > 3 and node.input[3]:
        raise ctx.fail(node, "Pad with axes input is not supported")
    inf = ctx.info(node, node.input[0])
    if mode != "constant" or value != 0.0 or len(pads) != 8:
        raise ctx.fail(node, "only zero constant padding of a 4-D map is supported")
    if any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise ctx.fail(node, "padding of batch/channel axes is not supported")
    h, w, c = _as_nchw(ctx, node, inf)
    extra = (int(pads[2]), int(pads[6]), int(pads[3]), int(pads[7]))
    if inf.pending_pads is not None:
        extra = tuple(x + y for x, y in zip(extra, inf.pending_pads, strict=True))
    shape = (1, c, h + extra[0] + extra[1], w + extra[2] + extra[3])
    _passthrough(ctx, node, _Info(shape, inf.tid, "nchw", (h, w, c), pending_pads=extra))


def _imp_identity(ctx: _Ctx, node) -> None:
    _passthrough(ctx, node, dataclasses.replace(ctx.info(node, node.input[0])))


def _imp_constant(ctx: _Ctx, node) -> None:
    from onnx import numpy_helper

    a = {x.name: x for x in node.attribute}
    if "value" not in a:
        raise ctx.fail(node, "Constant without a tensor value is not supported")
    arr = numpy_helper.to_array(a["value"].t)
    _passthrough(ctx, node, _Info(tuple(arr.shape), const=arr))


Importer = Callable[[_Ctx, object], None]

IMPORTERS: dict[str, Importer] = {
    "Conv": _imp_conv,
    "Gemm": _imp_gemm,
    "MatMul": _imp_matmul,
    "Add": _imp_add,
    "BatchNormalization": _imp_batchnorm,
    "Relu": _imp_relu,
    "Clip": _imp_clip,
    "AveragePool": _imp_avgpool,
    "MaxPool": _imp_maxpool,
    "GlobalAveragePool": _imp_global_avgpool,
    "GlobalMaxPool": _imp_global_maxpool,
    "ReduceMean": _imp_reducemean,
    "Softmax": _imp_softmax,
    "Reshape": _imp_reshape,
    "Flatten": _imp_flatten,
    "Squeeze": _imp_squeeze,
    "Unsqueeze": _imp_unsqueeze,
    "Transpose": _imp_transpose,
    "Pad": _imp_pad,
    "Identity": _imp_identity,
    "Dropout": _imp_identity,
    "Constant": _imp_constant,
}


def _input_shape(ctx: _Ctx, vi) -> tuple[int, ...]:
    dims = vi.type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)  # dynamic batch: we run batch 1
        else:
            raise ModelImportError(ctx.path, vi.name,
                                   f"dynamic dimension {i} of the input cannot be planned")
    if not shape:
        raise ModelImportError(ctx.path, vi.name, "input has no static shape")
    if shape[0] != 1:
        raise ModelImportError(ctx.path, vi.name, f"batch {shape[0]} != 1 is not supported")
    return tuple(shape)


def import_onnx(path: str | Path) -> Graph:
    """Parse an ONNX file into a :class:`Graph` (layers in execution order).

    Raises
    ------
    ModelImportError
        Unreadable/malformed file, or a shape/layout the engine cannot plan.
    UnsupportedOpError
        An operator not in :data:`IMPORTERS`.
    """
    import onnx
    from onnx import numpy_helper

    path = str(path)
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelImportError(path, None, f"cannot read ONNX file: {exc}") from exc
    if not model.graph.node:
        raise ModelImportError(path, None, "the graph has no nodes")
    ctx = _Ctx(path, model)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        ctx.infos[init.name] = _Info(tuple(arr.shape), const=arr)
    inputs = [vi for vi in model.graph.input if vi.name not in ctx.infos]
    if len(inputs) != 1:
        raise ModelImportError(path, None, f"expected one graph input, found {len(inputs)}")
    in_shape = _input_shape(ctx, inputs[0])
    in_hwc = _rowmajor_hwc(in_shape)
    if len(in_shape) == 4 and in_shape[1] == 1:
        in_hwc = (in_shape[2], in_shape[3], 1)
    ctx.infos[inputs[0].name] = _Info(in_shape, 0, "rowmajor", in_hwc)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(path, node.name or node.op_type,
                                     f"{node.domain}.{node.op_type}")
        fn = IMPORTERS.get(node.op_type)
        if fn is None:
            raise UnsupportedOpError(path, node.name or node.op_type, node.op_type)
        try:
            fn(ctx, node)
        except (ModelImportError, UnsupportedOpError):
            raise
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise ModelImportError(path, node.name or node.op_type,
                                   f"malformed node: {exc}") from exc
    if len(model.graph.output) != 1:
        raise ModelImportError(path, None, "expected exactly one graph output")
    out_name = model.graph.output[0].name
    out = ctx.infos.get(out_name)
    if not ctx.layers or out is None or out.tid != ctx.layers[-1].output:
        raise ModelImportError(path, out_name, "the graph output is not the last computed layer")
    return Graph(path=path, layers=tuple(ctx.layers), input_shape=in_hwc,
                 output_shape=ctx.layers[-1].out_shape, n_tensors=ctx.n_tensors,
                 source="onnx", meta={"onnx_input_shape": in_shape})
