"""Throughput micro-benchmarks of the multiply-accumulate instruction each path is built on.

They measure the machine's real ceiling (register-only loops of independent accumulators, no
memory traffic), which the benchmark reports our kernels against.  x86 AVX2 only.
"""

from __future__ import annotations

import time

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

N_ACC = 12


@intrinsic
def _pmaddwd_loop(typingctx, n_iter, seed):
    """``n_iter`` x 12 independent ``acc = vpaddd(acc, vpmaddwd(acc, b))`` on ymm (checksum)."""
    sig = types.int32(types.intp, types.int32)

    def codegen(context, builder, signature, args):
        n, s = args
        i16 = ir.IntType(16)
        i32 = ir.IntType(32)
        v16i16 = ir.VectorType(i16, 16)
        v8i32 = ir.VectorType(i32, 8)
        pmadd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd")
        seed16 = builder.trunc(s, i16)
        accs = []
        bs = []
        for j in range(N_ACC):
            accs.append(cgutils.alloca_once_value(builder, ir.Constant(v8i32, None)))
            bj = builder.insert_element(ir.Constant(v16i16, [1] * 16),
                                        builder.add(seed16, ir.Constant(i16, j)),
                                        ir.Constant(i32, 1))
            bs.append(bj)
        with cgutils.for_range(builder, n):
            for j in range(N_ACC):
                # the multiplicand depends on the accumulator: nothing can be hoisted
                acc = builder.load(accs[j])
                prod = builder.call(pmadd, [builder.bitcast(acc, v16i16), bs[j]])
                builder.store(builder.add(acc, prod), accs[j])
        total = builder.load(accs[0])
        for j in range(1, N_ACC):
            total = builder.add(total, builder.load(accs[j]))
        out = builder.extract_element(total, ir.Constant(i32, 0))
        for lane in range(1, 8):
            out = builder.add(out, builder.extract_element(total, ir.Constant(i32, lane)))
        return out

    return sig, codegen


@njit(cache=True)
def _run_pmaddwd(n_iter, seed):
    return _pmaddwd_loop(n_iter, seed)


def measure_pmaddwd_peak_gops(n_iter: int = 2_000_000, repeats: int = 7) -> float:
    """Best-of-``repeats`` int8/int16 MAC throughput of ``vpmaddwd`` + ``vpaddd`` on ymm, in
    GOPS (2 ops per multiply-accumulate; 16 MACs per instruction)."""
    _run_pmaddwd(10, 1)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run_pmaddwd(n_iter, 1)
        best = min(best, time.perf_counter() - t0)
    return n_iter * N_ACC * 16 * 2 / best / 1e9


@intrinsic
def _fma_loop(typingctx, n_iter, seed):
    """``n_iter`` x 12 independent ``vfmadd`` on 8 x float32 (ymm)."""
    sig = types.float32(types.intp, types.float32)

    def codegen(context, builder, signature, args):
        n, s = args
        f32 = ir.FloatType()
        v8f = ir.VectorType(f32, 8)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
        a = builder.insert_element(ir.Constant(v8f, [1.0] * 8), s, ir.Constant(ir.IntType(32), 0))
        accs = [cgutils.alloca_once_value(builder, ir.Constant(v8f, [0.0] * 8))
                for _ in range(N_ACC)]
        b = builder.insert_element(ir.Constant(v8f, [0.999] * 8), s,
                                   ir.Constant(ir.IntType(32), 1))
        with cgutils.for_range(builder, n):
            for j in range(N_ACC):
                builder.store(builder.call(fma, [a, b, builder.load(accs[j])]), accs[j])
        total = builder.load(accs[0])
        for j in range(1, N_ACC):
            total = builder.fadd(total, builder.load(accs[j]))
        return builder.extract_element(total, ir.Constant(ir.IntType(32), 0))

    return sig, codegen


@njit(cache=True)
def _run_fma(n_iter, seed):
    return _fma_loop(n_iter, seed)


def measure_fma_peak_gflops(n_iter: int = 2_000_000, repeats: int = 7) -> float:
    """Best-of-``repeats`` fp32 FMA throughput on ymm (2 flops per lane per FMA), in GFLOPS."""
    _run_fma(10, 1.0)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run_fma(n_iter, 1.0)
        best = min(best, time.perf_counter() - t0)
    return n_iter * N_ACC * 8 * 2 / best / 1e9
