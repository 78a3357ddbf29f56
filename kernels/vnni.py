"""VNNI path: NOT YET a ``vpdpbusd`` kernel.

An AVX-512 VNNI micro-kernel (``llvm.x86.avx512.vpdpbusd.512``: 64 u8 x s8 MACs per
instruction, 16 channels x 4 k per zmm, the same ``[NB, K4, 16, 4]`` tiling as the AVX2 path with
int8 weights) was not written: the development machine (AMD Zen 3) has no AVX-512, so such code
could be neither compiled nor verified bit-exact there.  Until it exists, CPUs with VNNI (which
all have AVX2) run the AVX2 ``vpmaddwd`` kernels under this name, so results stay identical and
nothing slower than the AVX2 path is selected.
"""

from .avx2 import (  # noqa: F401
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
USES_VPDPBUSD = False
