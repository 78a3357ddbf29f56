"""AVX2 path (placeholder until the vpmaddwd micro-kernel lands): same as portable."""

from .portable import (  # noqa: F401
    MAX_K_8BIT,
    conv2d_q,
    fully_connected_q,
    gemm_q,
    pack_gemm_weights,
    packed_size,
    pointwise_conv_q,
)

PATH_NAME = "avx2"
