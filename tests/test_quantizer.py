"""Observers, calibration and DynamicQuantizer; kernel statistics match the Python observers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxquant import DynamicQuantizer
from voxquant.errors import ConfigError
from voxquant.kernels import network as net
from voxquant.stream.quantizer import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PercentileObserver,
    calibrate,
    make_observer,
    qparams_for_range,
)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e3, 0.0), st.floats(0.0, 1e3), st.sampled_from([8, 16]))
def test_qparams_cover_range_and_zero(mn, mx, bits):
    q = qparams_for_range(mn, mx, bits)
    assert q.qmin <= q.zero_point <= q.qmax
    xs = np.array([mn, 0.0, mx], np.float64)
    back = q.dequantize(q.quantize(xs)).astype(np.float64)
    assert abs(back[1]) == 0.0  # zero is exact (zero padding stays exact)
    assert np.all(np.abs(back - xs) <= q.scale * 0.5 + 1e-6 * max(1.0, abs(mn), abs(mx)))
    # the compiled kernels use the same rule
    s, z = net.qparams_from_range(mn, mx, q.qmin, q.qmax)
    assert np.isclose(s, q.scale) and z == q.zero_point


def test_minmax_observer_and_reset():
    ob = MinMaxObserver()
    ob.observe(np.array([1.0, -2.0]))
    ob.observe(np.array([3.0]))
    assert ob.range() == (-2.0, 3.0)
    ob.reset()
    assert ob.range() == (0.0, 0.0)
    assert ob.qparams().scale == 1.0


def test_ema_observer_formula():
    ob = MovingAverageMinMaxObserver(averaging_constant=0.25)
    ob.observe(np.array([0.0, 4.0]))
    ob.observe(np.array([0.0, 8.0]))
    assert ob.range() == (0.0, 5.0)
    with pytest.raises(ConfigError):
        MovingAverageMinMaxObserver(averaging_constant=0.0)


def test_percentile_clips_outliers_minmax_does_not():
    x = np.concatenate([np.random.default_rng(0).uniform(0, 1, 100_000), [100.0]])
    pct, mm = PercentileObserver(percentile=99.9), MinMaxObserver()
    pct.observe(x)
    mm.observe(x)
    assert mm.range()[1] == 100.0
    assert 0.9 < pct.range()[1] < 1.2


def test_entropy_threshold_inside_range():
    x = np.abs(np.random.default_rng(1).standard_normal(50_000))
    ob = EntropyObserver()
    ob.observe(x)
    lo, hi = ob.range()
    assert lo == 0.0 and 0.5 < hi <= x.max()


def test_histogram_rebinning_keeps_mass():
    ob = PercentileObserver(percentile=100.0, bins=64)
    ob.observe(np.linspace(0, 1, 1000))
    ob.observe(np.linspace(0, 10, 1000))
    assert ob.hist.sum() == pytest.approx(2000)
    assert ob.range()[1] == pytest.approx(10.0)


def test_dynamic_quantizer_per_window_and_calibrate():
    q = DynamicQuantizer(2, observer="minmax")
    assert q.kernel_mode == "exact"
    a = q.observe_window([np.array([0.0, 1.0]), np.array([-1.0, 1.0])])
    b = q.observe_window([np.array([0.0, 4.0]), np.array([-1.0, 1.0])])
    assert b[0].scale == pytest.approx(4 * a[0].scale)  # reset every window
    ema = DynamicQuantizer(2, observer="ema", averaging_constant=0.5)
    assert ema.kernel_mode == "running"
    ema.observe_window([np.array([0.0, 1.0]), np.array([0.0])])
    ema.observe_window([np.array([0.0, 3.0]), np.array([0.0])])
    assert ema.ranges()[0, 1] == pytest.approx(2.0)
    ranges = calibrate([[np.array([0.0, 2.0])], [np.array([-1.0, 1.0])]], 1, "minmax")
    assert ranges.tolist() == [[-1.0, 2.0]]
    with pytest.raises(ConfigError):
        calibrate([], 1, "minmax")
    with pytest.raises(ConfigError):
        make_observer("nope")


def test_kernel_running_stats_equal_python_ema(tmp_path):
    """The EMA kept inside the compiled network equals MovingAverageMinMaxObserver's."""
    from onnx import helper

    from tests.test_engine import _save, _w

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1)]
    from voxquant.engine import load

    model = load(_save(tmp_path, nodes, dict(w=_w(4, 1, 3, 3), b=_w(4), wd=_w(5, 4),
                                             bd=_w(5)), "m.onnx"))
    model.set_precision("int8")
    model.set_quantization("running", averaging_constant=0.3)
    obs = [MovingAverageMinMaxObserver(0.3) for _ in range(model.graph.n_tensors)]
    rng = np.random.default_rng(3)
    for _ in range(6):
        model(rng.standard_normal((16, 6)).astype(np.float32))
        ost = model.plan.ost
        for t, ob in enumerate(obs):
            if ost[t, net.OS_SEEN]:
                ob.observe_range(ost[t, net.OS_WIN_MIN], ost[t, net.OS_WIN_MAX])
                assert ost[t, net.OS_EMA_MAX] == pytest.approx(ob.max_val, rel=1e-12)
                assert ost[t, net.OS_EMA_MIN] == pytest.approx(ob.min_val, rel=1e-12)
    assert obs[1].count == 6


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(2**30, 2**31 - 1), st.integers(-31, 4))
def test_vectorized_tflite_requant_equals_reference(x, mult, shift):
    """The branch-free fixed-point requantization equals TFLite's MultiplyByQuantizedMultiplier."""
    assert net._mbqm_vec(np.int64(x), np.int64(mult), np.int64(shift)) == net.mbqm(
        np.int64(x), np.int64(mult), np.int64(shift))
