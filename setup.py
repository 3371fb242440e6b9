"""Build script: the Python packages ``qpart_kernels`` and ``qpart`` plus the compiled
extension ``qpart_kernels._C``.

``QPART_BUILD_EXT`` chooses what happens to the extension:

* ``auto`` (default) - build it when torch is importable; on failure warn and install the
  pure-Python package (every op then runs on the reference implementation);
* ``1`` / ``required`` - the build must succeed (CI uses this);
* ``0`` / ``none`` - pure Python, no compiler needed.

CUDA sources under ``csrc/cuda/`` are compiled in when torch has CUDA and ``nvcc`` exists
(no GPU needed); ``TORCH_CUDA_ARCH_LIST`` is respected (default below).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
MODE = os.environ.get("QPART_BUILD_EXT", "auto").strip().lower()
DEFAULT_CUDA_ARCHS = "8.0;8.7;8.9;9.0+PTX"  # A100, Jetson Orin, Ada, Hopper (+PTX for newer)


def _rel(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _cuda_available(torch) -> bool:
    if os.environ.get("QPART_DISABLE_CUDA") == "1":
        return False
    return bool(torch.version.cuda) and (
        shutil.which("nvcc") is not None or os.environ.get("CUDA_HOME") is not None
    )


def _extensions():
    if MODE in ("0", "none", "off"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        if MODE in ("1", "required"):
            sys.exit(
                "QPART_BUILD_EXT=required but torch is not importable; install torch "
                "first and build with `pip install --no-build-isolation .`"
            )
        print(
            "qpart: torch not importable - installing without the native extension", file=sys.stderr
        )
        return [], {}

    # ISA-specific kernels (x86/, arm/) are guarded by #if on the target architecture and
    # pick their ISA per file with #pragma GCC target; no global -m flags (runtime dispatch).
    sources = (
        _rel("csrc/kernels/*.cpp")
        + _rel("csrc/kernels/x86/*.cpp")
        + _rel("csrc/kernels/arm/*.cpp")
        + _rel("csrc/torch/*.cpp")
    )
    cxx_flags = ["-O3", "-g0", "-fvisibility=hidden"]
    link_flags = []
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        # at::parallel_for is inlined from ATen's headers; with torch's OpenMP backend it only
        # runs in parallel when the extension itself is compiled with OpenMP.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    kwargs = dict(
        name="qpart_kernels._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=True,
    )
    cuda_sources = _rel("csrc/cuda/*.cu")
    if cuda_sources and _cuda_available(torch):
        # CUDA: torch-free kernels (csrc/cuda/*.cu) + their ATen glue (csrc/cuda/*.cpp, only
        # compiled here, never in a CPU-only build). torch adds -D__CUDA_NO_HALF_*__ itself.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        kwargs["sources"] = sources + cuda_sources + _rel("csrc/cuda/*.cpp")
        kwargs["extra_compile_args"]["nvcc"] = [
            "-O3",
            "-std=c++20",
            "--expt-relaxed-constexpr",
            "-lineinfo",
        ]
        # pip's CUDA torch keeps the toolkit headers it was built with (cuBLAS, ...) here.
        nvidia_inc = glob.glob(
            os.path.join(
                os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "cu[0-9]*", "include"
            )
        )
        kwargs["include_dirs"] = kwargs["include_dirs"] + sorted(nvidia_inc)
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        ext = cpp_extension.CppExtension(**kwargs)

    base = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)

    class BuildExtension(base):
        """torch's BuildExtension, made non-fatal in ``auto`` mode."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                if MODE in ("1", "required"):
                    raise
                print(
                    f"qpart: WARNING - native extension build failed ({exc}); installing "
                    "the pure-Python package (reference kernels only). Set "
                    "QPART_BUILD_EXT=required to make this an error.",
                    file=sys.stderr,
                )

    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["qpart_kernels", "qpart_kernels.*"])
    + find_packages("python", include=["qpart", "qpart.*"]),
    package_dir={"qpart": "python/qpart"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
    zip_safe=False,
)
