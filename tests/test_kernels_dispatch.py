"""Kernel-path selection: CPU features, the VOXQUANT_KERNELS override, per-path modules."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import voxquant.kernels as K
from voxquant.errors import ConfigError
from voxquant.kernels import _cpu

ZEN3 = frozenset({"avx", "avx2", "fma", "bmi2"})
ZEN4 = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512vnni"}


def test_feature_sets_map_to_paths(monkeypatch):
    monkeypatch.setattr(_cpu.platform, "machine", lambda: "x86_64")
    assert _cpu.best_path(ZEN3) == "avx2"
    assert _cpu.best_path(ZEN4) == "vnni"
    assert _cpu.best_path(frozenset()) == "portable"
    assert not _cpu.path_supported("vnni", ZEN3)
    monkeypatch.setattr(_cpu.platform, "machine", lambda: "aarch64")
    assert _cpu.best_path(ZEN4) == "portable"
    with pytest.raises(ValueError):
        _cpu.path_supported("sse9", ZEN3)


def test_env_override(monkeypatch):
    monkeypatch.setenv(_cpu.ENV_VAR, "portable")
    assert _cpu.select_path() == "portable"
    monkeypatch.setenv(_cpu.ENV_VAR, "AUTO")
    assert _cpu.select_path() == _cpu.best_path()
    monkeypatch.setenv(_cpu.ENV_VAR, "fastest")
    with pytest.raises(ConfigError):
        _cpu.select_path()
    for path in K.PATHS:
        monkeypatch.setenv(_cpu.ENV_VAR, path)
        if K.path_supported(path):
            assert _cpu.select_path() == path
        else:
            with pytest.raises(ConfigError, match="lacks"):
                _cpu.select_path()


def test_host_features_seen():
    feats = _cpu.host_cpu_features()
    if "avx2" in feats:
        assert K.path_supported("avx2")
    assert K.KERNEL_PATH in K.PATHS and K.path_supported(K.KERNEL_PATH)


@pytest.mark.parametrize("path", ["portable", "avx2"])
def test_env_var_selects_module_in_a_fresh_process(path):
    if not K.path_supported(path):
        pytest.skip(f"this CPU cannot run the {path} kernels")
    code = ("import voxquant.kernels as K; "
            "print(K.KERNEL_PATH, K.gemm_q is K.path_module(K.KERNEL_PATH).gemm_q, "
            "K.PACKED_DTYPE.__name__)")
    env = dict(os.environ, VOXQUANT_KERNELS=path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == path and out[1] == "True"
    assert out[2] == ("int16" if path == "avx2" else "int8")


def test_each_path_has_the_same_interface():
    names = ["pack_gemm_weights", "packed_size", "gemm_q", "fully_connected_q",
             "pointwise_conv_q", "conv2d_q", "PACKED_DTYPE", "MAX_K_8BIT", "MAX_K_INT16",
             "PATH_NAME"]
    for path in K.PATHS:
        if not K.path_supported(path):
            continue
        mod = K.path_module(path)
        assert mod.PATH_NAME == path
        for name in names:
            assert hasattr(mod, name), (path, name)
