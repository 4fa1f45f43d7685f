"""Which runtime runs a model file, and the ONNX file built once per checkpoint for onnxruntime.

`runtime="auto"` (the default everywhere): an .onnx file runs on onnxruntime, and so does a
.safetensors checkpoint (the bundled model included) where onnxruntime is installed (it is in the
default install). A checkpoint with an int8 companion, `<stem>.int8.onnx` beside it (the bundled model
ships one), runs on that: a static int8 graph made from this very checkpoint (`agegender export
--quantize int8-static`, its metadata names the checkpoint's sha256), about twice as fast as float32
and as accurate (docs/quantization.md). A companion made from another checkpoint, or not static int8,
is ignored with one warning line. Otherwise the checkpoint runs from a float32 ONNX file exported once
into the cache: `<cache>/onnx/<sha256 of the
checkpoint>.onnx`, checked against PyTorch when it is built (export.onnx). onnxruntime runs these
CNNs faster than PyTorch on the CPU (`benchmarks/bench_inference.py`). A cached file is used
only if its metadata names the checkpoint's hash and it loads; a stale, truncated or foreign file is
rebuilt. Where the cache cannot be written (the export's WriteError), PyTorch runs it, with one warning line.
`runtime="torch"` forces PyTorch; `runtime="onnx"` forces onnxruntime on the float32 graph (building the
cached file), which gives PyTorch's numbers within float rounding. `runtime="torch-bf16"` runs PyTorch in
bfloat16, about twice float32's speed on CPUs that multiply bfloat16 in hardware (AMX, AVX512-BF16:
models.backends.native_bfloat16) and as accurate on the evaluation sets (docs/quantization.md); where
"auto" falls back to PyTorch (no onnxruntime, or an unwritable cache), it runs that on such CPUs and
float32 PyTorch elsewhere.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import torch

from agegender.atomic_write import WriteError
from agegender.config import ConfigError
from agegender.data.cache import default_cache_dir
from agegender.models.backends import (
    InferenceBackend,
    OnnxBackend,
    OnnxModelError,
    TorchBackend,
    bundled_model_path,
    native_bfloat16,
)
from agegender.models.checkpoint import CheckpointError, file_sha256

RUNTIMES = ("auto", "torch", "torch-bf16", "onnx")


def load_backend(path: Path | str | None = None, runtime: str = "auto", *, cache_dir: Path | None = None) -> InferenceBackend:
    """A backend for `path` (None: the bundled model) on `runtime` (see the module docstring)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    path = Path(path) if path is not None else bundled_model_path()
    threads = torch.get_num_threads()  # onnxruntime gets the thread count the process gave torch
    if path.suffix == ".onnx":
        if runtime.startswith("torch"):
            raise ConfigError(f"{path}: an ONNX file runs on onnxruntime (--runtime onnx or auto), not {runtime}")
        return OnnxBackend.from_file(path, threads=threads)
    if runtime.startswith("torch"):
        return torch_backend(path, runtime)
    if runtime == "auto" and importlib.util.find_spec("onnxruntime") is None:
        return torch_backend(path, fastest_torch())
    if runtime == "auto" and (companion := int8_companion(path, threads)) is not None:
        return companion
    folder = (cache_dir or default_cache_dir()) / "onnx"
    try:
        return cached_onnx_backend(path, folder, threads)
    except WriteError as error:  # the export could not write its file (write_atomically's one line)
        reason = getattr(error.__cause__, "strerror", None) or error.__cause__ or error
        if runtime == "onnx":
            raise OnnxModelError(f"{folder}: cannot write the ONNX cache ({reason})") from None
        print(f"warning: {folder}: cannot write the ONNX cache ({reason}); running {path.name} on PyTorch", file=sys.stderr)
        return torch_backend(path, fastest_torch())


def fastest_torch() -> str:
    """The PyTorch runtime "auto" falls back to: bfloat16 where the CPU multiplies it in hardware."""
    return "torch-bf16" if native_bfloat16() else "torch"


def torch_backend(path: Path, runtime: str) -> TorchBackend:
    """PyTorch on `path`: float32 ("torch") or bfloat16 ("torch-bf16", with one warning line on a CPU
    that only emulates it, where it is slower than float32)."""
    if runtime == "torch":
        return TorchBackend.from_file(path)
    if not native_bfloat16():
        print("warning: this CPU has no bfloat16 units (AMX or AVX512-BF16): torch-bf16 runs slower than torch",
              file=sys.stderr)  # fmt: skip
    return TorchBackend.from_file(path, precision="bfloat16")


def made_from(backend: OnnxBackend, checkpoint: Path, digest: str | None = None) -> bool:
    """Whether an exported file's metadata names `checkpoint`'s sha256 (`digest`, if already known)."""
    return backend.info.meta.get("onnx", {}).get("source_sha256") == (digest or file_sha256(checkpoint))


def int8_companion_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.int8.onnx")


def int8_companion(checkpoint: Path, threads: int) -> OnnxBackend | None:
    """onnxruntime on the checkpoint's static int8 companion file, if there is one made from it."""
    companion = int8_companion_path(checkpoint)
    if not companion.is_file():
        return None
    try:
        backend = OnnxBackend.from_file(companion, threads=threads, source=checkpoint)
    except CheckpointError as error:  # its message names the file
        print(f"warning: {error}; ignoring it", file=sys.stderr)
        return None
    if backend.info.meta.get("onnx", {}).get("quantized") != "int8-static" or not made_from(backend, checkpoint):
        print(f"warning: ignoring {companion}: not a static int8 export of {checkpoint.name}", file=sys.stderr)
        return None
    return backend


def cached_onnx_backend(checkpoint: Path, folder: Path, threads: int) -> OnnxBackend:
    """onnxruntime on `checkpoint`'s cached ONNX file, built first if missing, stale or broken."""
    from agegender.export.onnx import export_onnx  # the exporter, only when a file is built

    digest = file_sha256(checkpoint)
    if digest is None:
        raise CheckpointError(f"{checkpoint}: checkpoint not found")
    cached = folder / f"{digest}.onnx"
    if cached.is_file():
        try:
            backend = OnnxBackend.from_file(cached, threads=threads, source=checkpoint)
            if made_from(backend, checkpoint, digest):
                return backend
        except CheckpointError:  # truncated or not an agegender file: rebuilt below
            pass
    start = time.perf_counter()
    try:
        export_onnx(checkpoint, cached)
    except CheckpointError as error:  # a broken checkpoint: said of the file the user named, nothing cached
        cached.unlink(missing_ok=True)
        raise type(error)(str(error).replace(str(cached), str(checkpoint))) from None
    print(f"onnxruntime: exported {checkpoint.name} once to {cached} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return OnnxBackend.from_file(cached, threads=threads, source=checkpoint)
