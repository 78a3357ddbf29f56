"""Small frozen layer records: what an importer produces and a plan consumes.

Every activation is a 3-D tensor in HWC order for batch 1: H = time frames,
W = frequency bins, C = channels. A fully connected layer is a 1x1 convolution
on a ``(1, 1, K)`` tensor, so the executor has few kernels. Weights are kept in
``[kh, kw, cin_per_group, cout]`` order (output channel innermost) because the
kernels vectorise over output channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CONV = "conv"
AVGPOOL = "avgpool"
MAXPOOL = "maxpool"
ADD = "add"
SOFTMAX = "softmax"
LAYER_KINDS = (CONV, AVGPOOL, MAXPOOL, ADD, SOFTMAX)

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class QuantInfo:
    """Fixed quantization parameters of an int8 model (TFLite full-integer).

    ``weight_scales`` is per output channel (per-tensor weights are broadcast);
    ``bias_int32`` has scale ``input_scale * weight_scales``.
    """

    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    weight_scales: np.ndarray | None = None
    weight_int8: np.ndarray | None = None
    bias_int32: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of a planned network (batch 1, HWC tensors).

    ``inputs`` and ``output`` are tensor ids; tensor 0 is the network input.
    ``pads`` is (top, bottom, left, right). ``act_min``/``act_max`` is the
    fused activation clamp (ReLU = (0, inf), ReLU6 = (0, 6)).
    """

    kind: str
    name: str
    inputs: tuple[int, ...]
    output: int
    in_shape: Shape3
    out_shape: Shape3
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    act_min: float = -np.inf
    act_max: float = np.inf
    quant: QuantInfo | None = None

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one run (0 for pooling and elementwise)."""
        if self.kind != CONV or self.weights is None:
            return 0
        kh, kw, cin_g, cout = self.weights.shape
        return int(self.out_shape[0] * self.out_shape[1] * cout * kh * kw * cin_g)


@dataclass(frozen=True, eq=False)
class Graph:
    """An imported network: layers in execution order plus I/O description.

    ``input_quant`` holds (scale, zero_point) of the input of a full-integer
    model, ``None`` otherwise. ``output_is_probability`` says the last layer is
    a softmax.
    """

    path: str
    layers: tuple[Layer, ...]
    input_shape: Shape3
    output_shape: Shape3
    n_tensors: int
    input_quant: tuple[float, int] | None = None
    source: str = "onnx"
    meta: dict = field(default_factory=dict)

    @property
    def output_tensor(self) -> int:
        return self.layers[-1].output

    @property
    def is_int8(self) -> bool:
        return self.input_quant is not None

    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def conv_out_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dil: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode)."""
    eff = dil * (kernel - 1) + 1
    return (size + pad_lo + pad_hi - eff) // stride + 1


def same_pads(size: int, kernel: int, stride: int, dil: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding (extra pad at the end) for one axis."""
    eff = dil * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2
