"""CPU feature detection and kernel-path selection (done once, at import)."""

from __future__ import annotations

import os
import platform

from voxquant.errors import ConfigError

ENV_VAR = "VOXQUANT_KERNELS"
PATHS = ("portable", "avx2", "vnni")


def host_cpu_features() -> frozenset[str]:
    """LLVM's view of the host CPU features that are enabled (e.g. ``{"avx2", "fma"}``)."""
    try:
        import llvmlite.binding as llvm

        flat = llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - llvmlite always present with numba
        return frozenset()
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


def path_supported(path: str, features: frozenset[str] | None = None) -> bool:
    """Whether ``path`` can be compiled and run on this CPU."""
    if path not in PATHS:
        raise ValueError(f"unknown kernel path {path!r}; expected one of {PATHS}")
    feats = host_cpu_features() if features is None else features
    if path == "portable":
        return True
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if path == "avx2":
        return "avx2" in feats
    return {"avx512f", "avx512bw", "avx512vnni"} <= feats


def best_path(features: frozenset[str] | None = None) -> str:
    """Fastest path this CPU supports."""
    for path in ("vnni", "avx2"):
        if path_supported(path, features):
            return path
    return "portable"


def select_path() -> str:
    """Path chosen by ``$VOXQUANT_KERNELS`` (portable|avx2|vnni|auto, default auto).

    Raises ConfigError (a ValueError) for an unknown value or a path this CPU cannot run.
    """
    wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if wanted == "auto":
        return best_path()
    if wanted not in PATHS:
        raise ConfigError(f"{ENV_VAR}={wanted!r}: expected portable, avx2, vnni or auto")
    if not path_supported(wanted):
        raise ConfigError(f"{ENV_VAR}={wanted!r}: this CPU lacks the instructions for it")
    return wanted
