"""Engine: precision switching mid-stream, incremental == window, arena reuse, describe()."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from voxquant.engine import load
from voxquant.errors import ConfigError
from voxquant.models.plan import RING_SLACK_ROWS, Plan, PrecisionPlan

T, F = 16, 6
RNG = np.random.default_rng(1)


def _w(*shape, scale=0.4):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _save(tmp_path, nodes, inits, name):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, T, F])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])
    graph = helper.make_graph(nodes, "g", [inp], [out],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / name
    onnx.save(m, str(path))
    return path


@pytest.fixture()
def causal_path(tmp_path):
    """Causal in time (pads only on top), global average over time, dense, softmax."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[3, 3],
                         pads=[2, 1, 0, 1]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["b"], kernel_shape=[3, 1], group=8,
                         pads=[4, 0, 0, 0], dilations=[2, 1]),
        helper.make_node("Relu", ["b"], ["b1"]),
        helper.make_node("Conv", ["b1", "w3", "b3"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["c1"]),
        helper.make_node("AveragePool", ["c1"], ["p"], kernel_shape=[T, F]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["l"], transB=1),
        helper.make_node("Softmax", ["l"], ["y"]),
    ]
    inits = dict(w1=_w(8, 1, 3, 3), b1=_w(8), w2=_w(8, 1, 3, 1), b2=_w(8), w3=_w(8, 8, 1, 1),
                 b3=_w(8), wd=_w(5, 8), bd=_w(5))
    return _save(tmp_path, nodes, inits, "causal.onnx")


@pytest.fixture()
def noncausal_path(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[2, 1]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("GlobalAveragePool", ["a1"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    return _save(tmp_path, nodes, dict(w1=_w(8, 1, 3, 3), b1=_w(8), wd=_w(5, 8), bd=_w(5)),
                 "noncausal.onnx")


def _stream(n):
    # a slowly varying "feature stream" so that windows look alike, as in real audio
    base = RNG.standard_normal((n, F)).astype(np.float32)
    return (np.cumsum(base, axis=0) * 0.3).astype(np.float32)


def test_precision_switch_mid_stream_matches_fresh_models(causal_path):
    model = load(causal_path)
    fresh = {p: load(causal_path) for p in ("fp32", "int8", "int16")}
    for p, m in fresh.items():
        m.set_precision(p)
    frames = _stream(T + 12)
    schedule = ["fp32", "int8", "int8", "int16", "fp32", "int8", "int16", "int16"]
    for k, prec in enumerate(schedule):
        model.set_precision(prec)
        window = frames[k:k + T]
        got = model(window)
        np.testing.assert_array_equal(got, fresh[prec](window))
    # mixed plans switch too, and int8 output differs from fp32 only by quantization noise
    model.set_precision({0: "int16", 2: "fp32"})
    assert model.describe()["layers"][0]["precision"] == "int16"
    assert model.describe()["layers"][2]["precision"] == "fp32"
    w = frames[:T]
    model.set_precision("fp32")
    ref = model(w)
    model.set_precision("int8")
    assert np.abs(model(w) - ref).max() < 0.1
    model.set_precision("int16")
    assert np.abs(model(w) - ref).max() < 1e-3


def test_incremental_equals_window_fp32_exactly(causal_path):
    model = load(causal_path)
    inc = model.incremental()
    frames = _stream(3 * T)
    window = np.zeros((T, F), np.float32)
    for t, frame in enumerate(frames):
        window = np.concatenate([window[1:], frame[None]], axis=0)
        got = inc.push(frame)
        if t >= 2:
            np.testing.assert_array_equal(got, model(window))


@pytest.mark.parametrize("precision", ["int8", "int16", "mixed"])
def test_incremental_equals_window_integer_exactly(causal_path, precision):
    model = load(causal_path)
    frames = _stream(3 * T)
    model.calibrate([frames[i:i + T] for i in range(0, 2 * T, 4)])
    model.set_precision(precision)
    inc = model.incremental()
    window = np.zeros((T, F), np.float32)
    for frame in frames:
        window = np.concatenate([window[1:], frame[None]], axis=0)
        np.testing.assert_array_equal(inc.push(frame), model(window))


def test_incremental_precision_switches_reset_and_prime(causal_path):
    """Ring tensors wrap many times; switching plans, reset() and prime() stay exact."""
    model = load(causal_path)
    frames = _stream(7 * T)
    model.calibrate([frames[i:i + T] for i in range(0, 2 * T, 4)])
    inc = model.incremental()
    plans = ["fp32", "int8", "int16", "mixed", "int8"]
    window = np.zeros((T, F), np.float32)
    for k, frame in enumerate(frames):
        if k % 13 == 0:
            model.set_precision(plans[(k // 13) % len(plans)])
        window = np.concatenate([window[1:], frame[None]], axis=0)
        np.testing.assert_array_equal(inc.push(frame), model(window))
    inc.reset()
    window = np.zeros((T, F), np.float32)
    for frame in frames[:T + 3]:
        window = np.concatenate([window[1:], frame[None]], axis=0)
        np.testing.assert_array_equal(inc.push(frame), model(window))
    window = frames[2 * T:3 * T]
    np.testing.assert_array_equal(inc.prime(window), model(window))
    for frame in frames[3 * T:5 * T]:
        window = np.concatenate([window[1:], frame[None]], axis=0)
        np.testing.assert_array_equal(inc.push(frame), model(window))


def test_incremental_integer_needs_frozen_scales(causal_path):
    model = load(causal_path)
    model.set_precision("int8")
    with pytest.raises(ConfigError):
        model.incremental().push(np.zeros(F, np.float32))


def test_incremental_rejects_noncausal(noncausal_path):
    with pytest.raises(ConfigError, match="causal"):
        load(noncausal_path).incremental()


def test_arena_reuse_gives_same_results(causal_path):
    model = load(causal_path)
    graph = model.graph
    shared, separate = Plan(graph, reuse_arena=True), Plan(graph, reuse_arena=False)
    assert shared.arena_elems < separate.arena_elems
    assert shared.arena_elems < int(shared.t_size.sum())
    frames = _stream(T + 4)
    for prec in ("fp32", "int8", "int16"):
        codes = PrecisionPlan.uniform(shared.n_layers, prec).codes
        for k in range(3):
            x = np.ascontiguousarray(frames[k:k + T].reshape(-1))
            a = shared.run(x, codes).copy()
            assert np.array_equal(a, separate.run(x, codes))
            assert np.array_equal(a, shared.run(x, codes))  # repeated calls reuse the arena


def test_describe_reports_plan(causal_path):
    model = load(causal_path)
    model.set_precision("int8")
    d = model.describe()
    assert [r["kind"] for r in d["layers"]] == ["conv", "conv", "conv", "avgpool", "conv",
                                               "softmax"]
    assert d["layers"][0]["macs"] == T * F * 8 * 9
    assert d["total_macs"] == sum(r["macs"] for r in d["layers"])
    assert all(r["precision"] == "int8" for r in d["layers"][:-1])
    assert d["layers"][-1]["precision"] == "fp32"  # softmax always in float
    assert d["weight_bytes"] > 0 and d["arena_bytes"] > 0
    assert d["peak_memory_bytes"] >= d["arena_bytes"]
    model.set_precision("fp32")
    assert model.describe()["weight_bytes"] > d["weight_bytes"]


def test_running_mode_tracks_and_static_needs_calibration(causal_path):
    model = load(causal_path)
    model.set_precision("int8")
    with pytest.raises(ConfigError):
        model.set_quantization("static")
    model.set_quantization("running", averaging_constant=0.5)
    frames = _stream(T + 8)
    model.set_precision("fp32")
    ref = np.array([model(frames[k:k + T]) for k in range(8)])
    model.set_precision("int8")
    got = np.array([model(frames[k:k + T]) for k in range(8)])
    assert np.abs(got - ref).max() < 0.2
    assert (model.plan.ost[:, 2] > 0).any()  # statistics were gathered


def test_pow2_weights_run_and_differ(causal_path):
    uni, p2 = load(causal_path), load(causal_path, weight_scheme="pow2")
    w = _stream(T)
    for m in (uni, p2):
        m.set_precision("int8")
    assert not np.array_equal(uni.plan.w_i8, p2.plan.w_i8)
    vals = np.unique(np.abs(p2.plan.w_i8.astype(int)))
    assert set(vals.tolist()) <= {0, 1, 2, 4, 8, 16, 32, 64}
    assert np.isclose(p2(w).sum(), 1.0, atol=1e-5)


def test_sensitivity_and_mixed_plan(causal_path):
    model = load(causal_path)
    frames = _stream(T + 6)
    ranking = model.sensitivity([frames[k:k + T] for k in range(6)])
    assert len(ranking) == model.n_layers - 1
    losses = [loss for _, loss in ranking]
    assert losses == sorted(losses, reverse=True)
    plan = model.mixed_plan(order=[i for i, _ in ranking], n_wide=1)
    assert plan.names().count("int16") == 1
    assert model.mixed_plan().names()[0] == "int16"


def _valid_model(tmp_path):
    """'valid' time convolutions (no padding), global average, dense."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[3, F]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["b"], kernel_shape=[5, 1], group=8),
        helper.make_node("Relu", ["b"], ["b1"]),
        helper.make_node("GlobalAveragePool", ["b1"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    path = _save(tmp_path, nodes, dict(w1=_w(8, 1, 3, F), b1=_w(8), w2=_w(8, 1, 5, 1),
                                       b2=_w(8), wd=_w(5, 8), bd=_w(5)), "valid.onnx")
    return load(path)


def test_incremental_valid_padding_recomputes_one_row(tmp_path):
    """'valid' time convolutions (no padding): one new output row per layer per frame."""
    model = _valid_model(tmp_path)
    frames = _stream(2 * T)
    model.calibrate([frames[i:i + T] for i in range(0, T, 4)])
    for prec in ("fp32", "int8"):
        model.set_precision(prec)
        inc = model.incremental()
        assert inc.rows[:2].tolist() == [[0, 0, T - 3, T - 2], [0, 0, T - 7, T - 6]]
        window = np.zeros((T, F), np.float32)
        for frame in frames:
            window = np.concatenate([window[1:], frame[None]], axis=0)
            np.testing.assert_array_equal(inc.push(frame), model(window))


@pytest.mark.parametrize("valid", [True, False])
def test_push_many_equals_push_frame_by_frame(tmp_path, causal_path, valid):
    """Several frames per compiled call give every window's output bit for bit, through
    ring wrap-arounds, batches longer than one call takes and precision switches."""
    model = _valid_model(tmp_path) if valid else load(causal_path)
    frames = _stream(9 * T)
    assert len(frames) > 2 * RING_SLACK_ROWS  # every ring wraps (copies back) at least once
    model.calibrate([frames[i:i + T] for i in range(0, 2 * T, 4)])
    one, many = model.incremental(), model.incremental()
    # valid model: rings of 16, 14 and 10 rows, so up to 10 frames per call; the padded
    # model recomputes rows at the window start every frame: one frame per call
    assert many.max_frames_per_call == (10 if valid else 1)
    sizes, plans = [1, 3, 10, 7, 11, 2, 25, 4], ["fp32", "int8", "int16", "mixed"]
    start = step = 0
    while start < len(frames):
        model.set_precision(plans[step % len(plans)])
        batch = frames[start:start + sizes[step % len(sizes)]]
        expected = np.stack([one.push(frame) for frame in batch])
        np.testing.assert_array_equal(many.push_many(batch), expected)
        start += len(batch)
        step += 1
    out = np.empty((2, 5), np.float32)
    assert many.push_many(frames[:2], out) is out
    with pytest.raises(ConfigError):
        many.push_many(frames[:2, :3])
    out.setflags(write=False)  # the compiled entry would write it all the same
    with pytest.raises(ConfigError, match="writable"):
        many.push_many(frames[:2], out)


def test_bound_steps_equal_push_many(tmp_path):
    """``bind``'s step over fixed buffers gives push_many's outputs bit for bit, through
    calls longer than one compiled call takes, precision switches (which it hands to
    push_many) and ring wrap-arounds; it refuses buffers it cannot use as they are."""
    model = _valid_model(tmp_path)
    frames = _stream(9 * T)
    model.calibrate([frames[i:i + T] for i in range(0, 2 * T, 4)])
    ref, bound = model.incremental(), model.incremental()
    buf = np.zeros((32, F), np.float32)
    out = np.full((32, 5), np.nan, np.float32)
    step = bound.bind(buf, out)
    sizes, firsts, plans = [1, 12, 7, 25, 3], [0, 5, 19, 2, 31], ["int8", "fp32", "int16"]
    start = k = 0
    while start < len(frames):
        if k % 3 == 0:  # a new plan every third call (set_precision makes a new object)
            model.set_precision(plans[(k // 3) % len(plans)])
        first = firsts[k % len(firsts)]
        n = min(sizes[k % len(sizes)], 32 - first, len(frames) - start)
        buf[first:first + n] = frames[start:start + n]
        step(first, n)
        np.testing.assert_array_equal(out[first:first + n],
                                      ref.push_many(frames[start:start + n]))
        start += n
        k += 1
    for bad in (buf[:, :3], buf.astype(np.float64), np.asfortranarray(buf)):
        with pytest.raises(ConfigError):
            bound.bind(bad, out)
    with pytest.raises(ConfigError):
        bound.bind(buf, out[:4])
    out.setflags(write=False)
    with pytest.raises(ConfigError, match="writable"):
        bound.bind(buf, out)
    with pytest.raises(ConfigError):
        step(30, 3)  # past the bound rows
