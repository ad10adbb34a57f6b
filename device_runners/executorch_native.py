"""ExecuTorch training without torch in the process: the C++ runtime the executorch wheel ships,
driven through a small C ABI (rgft_et.cpp, beside this file) with ctypes and numpy.

The Python bindings (`executorch.extension.pybindings._C`) link libtorch: importing them costs
~280 MB resident before a program is loaded, and on linux-aarch64 they need a torch build whose
CUDA packages the registry lacks. The wheel's runtime libraries (libexecutorch.so, the optimized
kernels, the XNNPACK delegate, the thread pool) link no torch, and the wheel ships their headers,
so the runner compiles a ~200-line shim against them once per (source, executorch build, machine)
with the system C++ compiler (`g++`, or `$CXX`) into a cache directory (`$RGFT_EDGE_NATIVE_DIR`,
default ~/.cache/rgft-edge/native), then loads it.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from rgft_edge.artifact import ArtifactError

SOURCE = Path(__file__).parent / "rgft_et.cpp"
# ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) <-> numpy
DTYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 6: np.float32, 7: np.float64,
          11: np.bool_}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
LIBS = ["executorch", "executorch_kernels_optimized", "executorch_backend_xnnpack", "executorch_threadpool"]


class NativeBuildError(RuntimeError):
    pass


def executorch_root() -> Path:
    spec = importlib.util.find_spec("executorch")  # a namespace package: finding it imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise NativeBuildError("executorch is not installed (pip install --no-deps executorch==1.5.1)")
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "include").is_dir() or not (root / "lib" / "libexecutorch.so").is_file():
        raise NativeBuildError(f"{root}: this executorch wheel ships no C++ runtime (include/, lib/)")
    return root


def executorch_version(root: Path) -> str:
    text = (root / "version.py").read_text() if (root / "version.py").is_file() else ""
    return next((ln.split("=", 1)[1].strip().strip("'\"") for ln in text.splitlines()
                 if ln.startswith("__version__")), "unknown")


def library_path() -> Path:
    """The built shim for this source, executorch build and machine (built on first use)."""
    root = executorch_root()
    key = hashlib.sha256(SOURCE.read_bytes() + str(root).encode() + executorch_version(root).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    cache = Path(os.environ.get("RGFT_EDGE_NATIVE_DIR") or Path.home() / ".cache" / "rgft-edge" / "native")
    lib = cache / f"librgft_et-{key}.so"
    if not lib.is_file():
        build(lib, root)
    return lib


def build(out: Path, root: Path | None = None) -> Path:
    root = root or executorch_root()
    wanted = os.environ.get("CXX") or "g++"
    cxx = shutil.which(wanted) or (None if os.environ.get("CXX") else shutil.which("c++"))
    if not cxx:
        raise NativeBuildError(f"no C++ compiler ({wanted!r}; set $CXX) to build the ExecuTorch shim "
                               "(Debian / Raspberry Pi OS / JetPack: sudo apt install g++)")
    out.parent.mkdir(parents=True, exist_ok=True)
    lib_dir = (root / "lib").resolve()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # built aside, then moved: atomic
        tmp_lib = Path(tmp) / out.name
        cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-DC10_USING_CUSTOM_GENERATED_MACROS",
               "-DET_EVENT_TRACER_ENABLED", "-DET_USE_THREADPOOL", f"-I{root / 'include'}",
               f"-I{root / 'include/executorch/runtime/core/portable_type/c10'}", str(SOURCE), f"-L{lib_dir}",
               "-Wl,--no-as-needed", *[f"-l{n}" for n in LIBS], "-Wl,--as-needed", f"-Wl,-rpath,{lib_dir}",
               "-o", str(tmp_lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NativeBuildError(f"building the ExecuTorch shim failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp_lib, out)
    return out


class NativeProgram:
    """One .pte through the C++ runtime: methods share one set of planned-memory arenas."""

    def __init__(self, pte: str | Path, method_prefix: str = "train", threads: int = 1):
        self.lib = lib = ctypes.CDLL(str(library_path()))
        lib.rgft_et_open.restype = ctypes.c_void_p
        lib.rgft_et_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        lib.rgft_et_close.argtypes = [ctypes.c_void_p]
        lib.rgft_et_meta.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_size_t]
        lib.rgft_et_run.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                    ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_size_t]
        self._err = ctypes.create_string_buffer(4096)
        self.handle = lib.rgft_et_open(str(pte).encode(), method_prefix.encode(), threads, self._err, 4096)
        if not self.handle:
            raise ArtifactError(self._err.value.decode(errors="replace"))
        self._outputs: dict[str, list[tuple[np.dtype, tuple[int, ...]]]] = {}

    def _check(self, rc: int) -> int:
        if rc < 0:
            raise RuntimeError(self._err.value.decode(errors="replace"))
        return rc

    def meta(self, method: str, output: bool) -> list[tuple[np.dtype, tuple[int, ...]]]:
        name = method.encode()
        count = self._check(self.lib.rgft_et_meta(self.handle, name, int(output), -1, None, None, None, self._err, 4096))
        out, dtype, ndim, sizes = [], ctypes.c_int(), ctypes.c_int(), (ctypes.c_int64 * 16)()
        for i in range(count):
            self._check(self.lib.rgft_et_meta(self.handle, name, int(output), i, ctypes.byref(dtype),
                                              ctypes.byref(ndim), sizes, self._err, 4096))
            if dtype.value not in DTYPES:
                raise ArtifactError(f"{method}: tensor {i} has ExecuTorch dtype code {dtype.value}, unsupported here")
            out.append((np.dtype(DTYPES[dtype.value]), tuple(sizes[d] for d in range(ndim.value))))
        return out

    def run(self, method: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if method not in self._outputs:
            self._outputs[method] = self.meta(method, output=True)
        arrays = [np.ascontiguousarray(a) for a in inputs]  # kept alive for the call
        n = len(arrays)
        data = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
        codes = (ctypes.c_int * n)(*[CODES[a.dtype] for a in arrays])
        ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
        flat = [s for a in arrays for s in a.shape]
        sizes = (ctypes.c_int64 * max(1, len(flat)))(*flat)
        outs = [np.empty(shape, dtype) for dtype, shape in self._outputs[method]]
        optr = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        onb = (ctypes.c_int64 * len(outs))(*[o.nbytes for o in outs])
        self._check(self.lib.rgft_et_run(self.handle, method.encode(), n, data, codes, ndims, sizes, len(outs), optr,
                                         onb, self._err, 4096))
        return outs

    def close(self) -> None:
        if getattr(self, "handle", None):
            self.lib.rgft_et_close(self.handle)
            self.handle = None

    def __del__(self):
        self.close()
