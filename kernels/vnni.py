"""VNNI path placeholder (``vpdpbusd`` kernel not written yet): same code as the portable path."""

from .portable import (  # noqa: F401
    MAX_K_8BIT,
    MAX_K_INT16,
    PACKED_DTYPE,
    conv2d_q,
    fully_connected_q,
    gemm_q,
    pack_gemm_weights,
    packed_size,
    pointwise_conv_q,
)

PATH_NAME = "vnni"
