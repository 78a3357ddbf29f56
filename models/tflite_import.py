"""TFLite flatbuffer -> :class:`~voxquant.models.graph.Graph`.

Parsed with the maintained ``tflite`` schema package (no hand-written byte
offsets). Covers what keyword-spotting CNNs from the TFLite converter use:
CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, MAX_POOL_2D, ADD, RESHAPE,
FULLY_CONNECTED, SOFTMAX, in float32, dynamic-range (int8 weights, float
activations: weights are dequantized at load) and full-integer int8 (the fixed
quantization parameters are kept in :class:`QuantInfo` so the engine can
reproduce TFLite's integer arithmetic bit for bit).

TFLite tensors are NHWC, so the engine's HWC storage is the TFLite storage:
RESHAPE never moves data.
"""

from __future__ import annotations

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
    QuantInfo,
    conv_out_size,
    same_pads,
)

_FLOAT32, _INT32, _INT8 = 0, 2, 9
_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
             7: np.int16}
_ACT = {0: (-np.inf, np.inf), 1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


class _Reader:
    def __init__(self, path: str, buf: bytes) -> None:
        import tflite

        self.tfl = tflite
        self.path = path
        try:
            self.model = tflite.Model.GetRootAsModel(buf, 0)
            if self.model.SubgraphsLength() < 1:
                raise ValueError("no subgraph")
            self.graph = self.model.Subgraphs(0)
            self.n_tensors = self.graph.TensorsLength()
        except Exception as exc:
            raise ModelImportError(path, None, f"cannot parse TFLite flatbuffer: {exc}") from exc
        ops = tflite.BuiltinOperator
        self.op_names = {v: k for k, v in vars(ops).items() if not k.startswith("_")}

    def tensor(self, i: int):
        return self.graph.Tensors(int(i))

    def shape(self, i: int) -> tuple[int, ...]:
        t = self.tensor(i)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def dtype(self, i: int) -> int:
        return int(self.tensor(i).Type())

    def data(self, i: int) -> np.ndarray | None:
        t = self.tensor(i)
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        raw = buf.DataAsNumpy().tobytes()
        return np.frombuffer(raw, dtype=_NP_TYPES[t.Type()]).reshape(self.shape(i)).copy()

    def quant(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        q = self.tensor(i).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        return q.ScaleAsNumpy().astype(np.float32), q.ZeroPointAsNumpy().astype(np.int64)

    def op_name(self, op) -> str:
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        return self.op_names.get(code, f"builtin_{code}")

    def options(self, op, cls):
        tab = op.BuiltinOptions()
        opt = cls()
        opt.Init(tab.Bytes, tab.Pos)
        return opt


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    s = list(shape)
    if len(s) == 4:
        return (s[1], s[2], s[3])
    if len(s) == 2:
        return (1, 1, s[1])
    if len(s) == 3:
        return (s[0], s[1], s[2]) if s[0] != 1 else (1, s[1], s[2])
    return (1, 1, int(np.prod(s)))


def import_tflite(path: str | Path) -> Graph:
    """Parse a TFLite model (float, dynamic-range or full-integer int8).

    Raises
    ------
    ModelImportError
        Unreadable or malformed flatbuffer, or a shape the engine cannot plan.
    UnsupportedOpError
        An operator this importer does not handle.
    """
    path = str(path)
    try:
        buf = Path(path).read_bytes()
    except OSError as exc:
        raise ModelImportError(path, None, f"cannot read file: {exc}") from exc
    try:
        return _import(path, buf)
    except (ModelImportError, UnsupportedOpError):
        raise
    except Exception as exc:  # a corrupt flatbuffer fails in many ways (struct, index, ...)
        raise ModelImportError(path, None, f"malformed TFLite flatbuffer: {exc!r}") from exc


def _import(path: str, buf: bytes) -> Graph:
    r = _Reader(path, buf)
    g = r.graph
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise ModelImportError(path, None, "expected one input and one output tensor")
    in_idx = int(g.Inputs(0))
    in_shape = r.shape(in_idx)
    if not in_shape or in_shape[0] not in (1, -1):
        raise ModelImportError(path, None, f"input shape {in_shape} cannot be planned")
    if any(d <= 0 for d in in_shape[1:]):
        raise ModelImportError(path, None, f"dynamic input shape {in_shape} cannot be planned")
    full_int = r.dtype(in_idx) == _INT8
    input_quant = None
    if full_int:
        qs = r.quant(in_idx)
        input_quant = (float(qs[0][0]), int(qs[1][0]))
    tid = {in_idx: 0}
    hwc = {in_idx: _hwc(in_shape)}
    layers: list[Layer] = []
    next_id = 1

    def fail(name: str, reason: str) -> ModelImportError:
        return ModelImportError(path, name, reason)

    def act_qinfo(i: int) -> tuple[float, int]:
        q = r.quant(i)
        if q is None:
            raise fail(r.tensor(i).Name().decode(), "int8 tensor without quantization")
        return float(q[0][0]), int(q[1][0])

    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        name = r.op_name(op)
        ins = [int(x) for x in op.InputsAsNumpy()]
        outs = [int(x) for x in op.OutputsAsNumpy()]
        out_name = r.tensor(outs[0]).Name().decode()
        node = f"{name}#{k}:{out_name}"
        x = ins[0]
        if x not in tid:
            raise fail(node, "input tensor is not produced by an earlier operator")
        in_hwc = hwc[x]
        out_hwc = _hwc(r.shape(outs[0]))
        qi = None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            wq = r.data(ins[1])
            if wq is None:
                raise fail(node, "weights are not constant")
            bias = r.data(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            wquant = r.quant(ins[1])
            if wq.dtype == np.int8:
                if wquant is None:
                    raise fail(node, "int8 weights without scales")
                scales = wquant[0]
            elif wq.dtype == np.float32:
                scales = None
            else:
                raise fail(node, f"weights of type {wq.dtype} are not supported")
            if name == "CONV_2D":
                o = r.options(op, r.tfl.Conv2DOptions)
                cout, kh, kw, cin_g = wq.shape
                w_hwio = wq.transpose(1, 2, 3, 0)
                groups = in_hwc[2] // cin_g
                stride = (int(o.StrideH()), int(o.StrideW()))
                dil = (int(o.DilationHFactor()), int(o.DilationWFactor()))
            elif name == "DEPTHWISE_CONV_2D":
                o = r.options(op, r.tfl.DepthwiseConv2DOptions)
                _, kh, kw, cout = wq.shape
                if int(o.DepthMultiplier()) != 1 or cout != in_hwc[2]:
                    raise fail(node, "depth multiplier != 1 is not supported")
                w_hwio = wq.reshape(kh, kw, 1, cout)
                groups = cout
                cin_g = 1
                stride = (int(o.StrideH()), int(o.StrideW()))
                dil = (int(o.DilationHFactor()), int(o.DilationWFactor()))
            else:
                o = r.options(op, r.tfl.FullyConnectedOptions)
                cout, cin_g = wq.shape
                if int(np.prod(in_hwc)) != cin_g:
                    raise fail(node, f"input of {in_hwc} does not match weights {wq.shape}")
                w_hwio = wq.T.reshape(1, 1, cin_g, cout)
                kh = kw = 1
                groups = 1
                stride = dil = (1, 1)
                in_hwc = (1, 1, cin_g)
            act = int(o.FusedActivationFunction())
            if act not in _ACT:
                raise fail(node, f"fused activation {act} is not supported")
            if name == "FULLY_CONNECTED":
                pads = (0, 0, 0, 0)
            elif int(o.Padding()) == 0:  # SAME
                pads = same_pads(in_hwc[0], kh, stride[0], dil[0]) + same_pads(
                    in_hwc[1], kw, stride[1], dil[1])
            else:
                pads = (0, 0, 0, 0)
            ho = conv_out_size(in_hwc[0], kh, stride[0], pads[0], pads[1], dil[0])
            wo = conv_out_size(in_hwc[1], kw, stride[1], pads[2], pads[3], dil[1])
            if (ho, wo, cout) != out_hwc:
                raise fail(node, f"computed output {(ho, wo, cout)} != declared {out_hwc}")
            if scales is not None:
                sc = np.broadcast_to(scales, (cout,)).astype(np.float32)
                w_f = (w_hwio.astype(np.float32) * sc).astype(np.float32)
            else:
                sc = None
                w_f = w_hwio.astype(np.float32)
            if full_int:
                if sc is None or bias is None or bias.dtype != np.int32:
                    raise fail(node, "full-integer layer needs int8 weights and int32 bias")
                s_in, z_in = act_qinfo(x)
                s_out, z_out = act_qinfo(outs[0])
                bias_f = (bias.astype(np.float64) * s_in * sc.astype(np.float64)).astype(
                    np.float32)
                qi = QuantInfo(s_in, z_in, s_out, z_out, weight_scales=sc,
                               weight_int8=np.ascontiguousarray(w_hwio.astype(np.int8)),
                               bias_int32=bias.astype(np.int32))
            else:
                bias_f = (bias.astype(np.float32) if bias is not None
                          else np.zeros(cout, np.float32))
            lo, hi = _ACT[act]
            layers.append(Layer(kind=CONV, name=node, inputs=(tid[x],), output=next_id,
                                in_shape=in_hwc, out_shape=out_hwc, kernel=(kh, kw),
                                stride=stride, pads=pads, dilation=dil, groups=groups,
                                weights=np.ascontiguousarray(w_f), bias=bias_f,
                                act_min=lo, act_max=hi, quant=qi))
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            o = r.options(op, r.tfl.Pool2DOptions)
            kh, kw = int(o.FilterHeight()), int(o.FilterWidth())
            stride = (int(o.StrideH()), int(o.StrideW()))
            if int(o.FusedActivationFunction()) != 0:
                raise fail(node, "fused activation on pooling is not supported")
            pads = (same_pads(in_hwc[0], kh, stride[0]) + same_pads(in_hwc[1], kw, stride[1])
                    if int(o.Padding()) == 0 else (0, 0, 0, 0))
            if full_int:
                s_in, z_in = act_qinfo(x)
                s_out, z_out = act_qinfo(outs[0])
                if (s_in, z_in) != (s_out, z_out):
                    raise fail(node, "pooling that changes quantization is not supported")
                qi = QuantInfo(s_in, z_in, s_out, z_out)
            layers.append(Layer(kind=AVGPOOL if name == "AVERAGE_POOL_2D" else MAXPOOL,
                                name=node, inputs=(tid[x],), output=next_id, in_shape=in_hwc,
                                out_shape=out_hwc, kernel=(kh, kw), stride=stride, pads=pads,
                                quant=qi))
        elif name == "ADD":
            y = ins[1]
            if y not in tid or hwc[y] != in_hwc:
                raise fail(node, "ADD needs two computed tensors of the same shape")
            o = r.options(op, r.tfl.AddOptions)
            lo, hi = _ACT.get(int(o.FusedActivationFunction()), (None, None))
            if lo is None:
                raise fail(node, "fused activation not supported")
            if full_int:
                raise fail(node, "int8 ADD is not supported by the TFLite importer")
            layers.append(Layer(kind=ADD, name=node, inputs=(tid[x], tid[y]), output=next_id,
                                in_shape=in_hwc, out_shape=out_hwc, act_min=lo, act_max=hi))
        elif name in ("RESHAPE", "SQUEEZE"):
            if int(np.prod(in_hwc)) != int(np.prod(out_hwc)):
                raise fail(node, "reshape changes the element count")
            tid[outs[0]] = tid[x]
            hwc[outs[0]] = out_hwc
            continue
        elif name == "SOFTMAX":
            o = r.options(op, r.tfl.SoftmaxOptions)
            if float(o.Beta()) != 1.0 or in_hwc[0] * in_hwc[1] != 1:
                raise fail(node, "only beta=1 softmax over a vector is supported")
            if full_int:
                s_in, z_in = act_qinfo(x)
                s_out, z_out = act_qinfo(outs[0])
                qi = QuantInfo(s_in, z_in, s_out, z_out)
            layers.append(Layer(kind=SOFTMAX, name=node, inputs=(tid[x],), output=next_id,
                                in_shape=in_hwc, out_shape=out_hwc, quant=qi))
        else:
            raise UnsupportedOpError(path, node, name)
        tid[outs[0]] = next_id
        hwc[outs[0]] = out_hwc
        next_id += 1
    out_idx = int(g.Outputs(0))
    if not layers or tid.get(out_idx) != layers[-1].output:
        raise ModelImportError(path, None, "the model output is not the last computed layer")
    # tensor ids must be dense 0..n-1 in production order
    return Graph(path=path, layers=tuple(layers), input_shape=hwc[in_idx],
                 output_shape=layers[-1].out_shape, n_tensors=layers[-1].output + 1,
                 input_quant=input_quant, source="tflite")
