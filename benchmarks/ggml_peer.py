"""ggml's CPU matmul as a benchmark peer (ctypes; no build step of its own).

The shared libraries (``libggml-base``, ``libggml-cpu``, ``libggml``) are taken from the folder
named by ``QPART_GGML_LIB`` (a local ggml build, e.g. ``build/src``), else from an installed
``ggml-python`` package (its ``ggml/lib``). :func:`load` returns ``(None, reason)`` when neither
is there, and the benchmarks print the reason and skip ggml.

One :class:`GgmlMatmul` holds several copies of one weight matrix quantized to a ggml type
(``q4_0``, ``q4_K``, ``q8_0``, ...) by ggml's own quantizer, one graph ``y = W x`` per copy, a
persistent ggml thread pool and one work buffer; each call computes the next copy's graph
(copies rotate like the other cache-cold cases). ggml quantizes the activations itself (to
q8_0 / q8_K at batch 1) inside the graph, as it does in llama.cpp.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pathlib

import numpy as np

GGML_TYPES = {"f32": 0, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q8_0": 8, "q2_K": 10, "q4_K": 12}
_MAX_THREADS = 512  # GGML_MAX_N_THREADS (the cpumask array of ggml_threadpool_params)


class _InitParams(ctypes.Structure):
    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


class _Cplan(ctypes.Structure):
    _fields_ = [
        ("work_size", ctypes.c_size_t),
        ("work_data", ctypes.c_void_p),
        ("n_threads", ctypes.c_int),
        ("threadpool", ctypes.c_void_p),
        ("abort_callback", ctypes.c_void_p),
        ("abort_callback_data", ctypes.c_void_p),
        ("use_ref", ctypes.c_bool),
    ]


class _TpParams(ctypes.Structure):
    _fields_ = [
        ("cpumask", ctypes.c_bool * _MAX_THREADS),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


def _lib_dir() -> tuple[pathlib.Path | None, str]:
    env = os.environ.get("QPART_GGML_LIB")
    if env:
        return pathlib.Path(env), f"QPART_GGML_LIB={env}"
    spec = importlib.util.find_spec("ggml")
    if spec is not None and spec.origin is not None:
        return pathlib.Path(spec.origin).parent / "lib", "the ggml-python package"
    return (
        None,
        "no ggml (set QPART_GGML_LIB to a ggml build's library folder, or pip install ggml-python)",
    )


def load():
    """(library handle, where it came from) or (None, why not)."""
    folder, where = _lib_dir()
    if folder is None:
        return None, where
    libs = []
    try:
        for name in ("ggml-base", "ggml-cpu", "ggml"):
            path = folder / f"lib{name}.so"
            if path.exists():
                libs.append(ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL))
    except OSError as e:
        return None, f"ggml from {where} failed to load: {e}"
    if not libs:
        return None, f"no libggml*.so in {folder} ({where})"

    class Lib:
        def __getattr__(self, name):
            for lib in libs:
                if hasattr(lib, name):
                    return getattr(lib, name)
            raise AttributeError(name)

    lib = Lib()
    try:
        _declare(lib)
    except AttributeError as e:
        return None, f"ggml from {where} lacks {e}"
    return lib, where


def _declare(lib) -> None:
    p, i64, sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
    sigs = {
        "ggml_init": ([_InitParams], p),
        "ggml_free": ([p], None),
        "ggml_new_tensor_2d": ([p, ctypes.c_int, i64, i64], p),
        "ggml_get_data": ([p], p),
        "ggml_nbytes": ([p], sz),
        "ggml_row_size": ([ctypes.c_int, i64], sz),
        "ggml_tensor_overhead": ([], sz),
        "ggml_graph_overhead_custom": ([sz, ctypes.c_bool], sz),
        "ggml_mul_mat": ([p, p, p], p),
        "ggml_new_graph_custom": ([p, sz, ctypes.c_bool], p),
        "ggml_build_forward_expand": ([p, p], None),
        "ggml_graph_plan": ([p, ctypes.c_int, p], _Cplan),
        "ggml_graph_compute": ([p, ctypes.POINTER(_Cplan)], ctypes.c_int),
        "ggml_quantize_chunk": ([ctypes.c_int, p, p, i64, i64, i64, p], sz),
        "ggml_threadpool_params_default": ([ctypes.c_int], _TpParams),
        "ggml_threadpool_new": ([ctypes.POINTER(_TpParams)], p),
        "ggml_threadpool_free": ([p], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if hasattr_safe(lib, "ggml_cpu_init"):
        lib.ggml_cpu_init.argtypes, lib.ggml_cpu_init.restype = [], None
        lib.ggml_cpu_init()


def hasattr_safe(obj, name: str) -> bool:
    try:
        getattr(obj, name)
    except AttributeError:
        return False
    return True


class GgmlMatmul:
    """``y = x @ w.T`` by ggml (w quantized to ``qtype``) over ``copies`` weight copies."""

    def __init__(
        self,
        lib,
        w: np.ndarray,
        x: np.ndarray,
        qtype: str,
        copies: int,
        threads: int,
        poll: int = 0,
    ):
        self.lib = lib
        n, k = w.shape
        m = x.shape[0]
        t = GGML_TYPES[qtype]
        row = lib.ggml_row_size(t, k)
        graph = lib.ggml_graph_overhead_custom(16, False)
        mem = (
            copies * (n * row + graph + 3 * lib.ggml_tensor_overhead())
            + 4 * (m * k + m * n)
            + (4 << 20)
        )
        self.ctx = lib.ggml_init(_InitParams(mem, None, False))
        if not self.ctx:
            raise RuntimeError("ggml_init failed")
        self.weight_bytes = n * row
        w32 = np.ascontiguousarray(w, dtype=np.float32)
        xt = lib.ggml_new_tensor_2d(self.ctx, 0, k, m)
        ctypes.memmove(
            lib.ggml_get_data(xt), np.ascontiguousarray(x, dtype=np.float32).ctypes.data, 4 * m * k
        )
        self.graphs, self.outs = [], []
        for _ in range(copies):
            wt = lib.ggml_new_tensor_2d(self.ctx, t, k, n)
            lib.ggml_quantize_chunk(t, w32.ctypes.data, lib.ggml_get_data(wt), 0, n, k, None)
            y = lib.ggml_mul_mat(self.ctx, wt, xt)
            g = lib.ggml_new_graph_custom(self.ctx, 16, False)
            lib.ggml_build_forward_expand(g, y)
            self.graphs.append(g)
            self.outs.append(y)
        params = lib.ggml_threadpool_params_default(threads)
        params.poll = poll
        self.pool = lib.ggml_threadpool_new(ctypes.byref(params))
        self.plan = lib.ggml_graph_plan(self.graphs[0], threads, self.pool)
        self.work = ctypes.create_string_buffer(max(1, self.plan.work_size))
        self.plan.work_data = ctypes.cast(self.work, ctypes.c_void_p)
        self.shape = (m, n)
        self.i = 0

    def __call__(self) -> None:
        g = self.graphs[self.i]
        self.i = (self.i + 1) % len(self.graphs)
        if self.lib.ggml_graph_compute(g, ctypes.byref(self.plan)) != 0:
            raise RuntimeError("ggml_graph_compute failed")

    def result(self, copy: int = 0) -> np.ndarray:
        """The output of weight copy `copy` (after it has been computed) as (m, n)."""
        ptr = self.lib.ggml_get_data(self.outs[copy])
        m, n = self.shape
        return (
            np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(m * n,))
            .reshape(m, n)
            .copy()
        )

    def close(self) -> None:
        if self.pool:
            self.lib.ggml_threadpool_free(self.pool)
            self.pool = None
        if self.ctx:
            self.lib.ggml_free(self.ctx)
            self.ctx = None
