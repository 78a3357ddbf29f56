"""voxquant: streaming dynamic-quantization keyword spotting.

Public names are imported lazily, so ``import voxquant`` stays cheap (numba
and onnxruntime load only when a model or spotter is made).
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "KeywordSpotter": "voxquant.spotter",
    "Detection": "voxquant.results",
    "SpotterStats": "voxquant.results",
    "Microphone": "voxquant.stream.sources",
    "WavFile": "voxquant.stream.sources",
    "load": "voxquant.engine",
    "DynamicQuantizer": "voxquant.stream.quantizer",
    "compute_features": "voxquant.stream.frontend",
    "StreamingFrontEnd": "voxquant.stream.frontend",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxquant' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
