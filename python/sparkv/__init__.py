"""SparKV for Python: a ctypes binding of libsparkv (query-aware channel-pruned KV cache, SparK).

    import numpy as np
    import sparkv

    shape = sparkv.Shape(n_layers=1, n_q_heads=8, n_kv_heads=2, head_dim=128, capacity=1024)
    with sparkv.KVCache(shape, sparkv.Policy.spark(0.8)) as cache:
        cache.prefill(0, keys, values, q_window)     # (2, n, 128), (2, n, 128), (8, w, 128) float32
        out = cache.attend(0, q)                      # (8, 128) float32
        print(cache.memory_report())

The C library is found through SPARKV_LIBRARY, a libsparkv.so next to this package, or the
installed prefix (see sparkv._lib). Inputs must be float32, C-contiguous numpy arrays of the exact
shape: nothing is converted silently.
"""

from __future__ import annotations

import ctypes
from typing import Tuple, Union

from . import _lib
from ._lib import LibraryNotFoundError, library_path
from ._version import __version__
from .cache import MEMORY_FIELDS, KVCache, attend_batch
from .config import (
    U32,
    U64,
    Eviction,
    Kernel,
    KeyPruning,
    Policy,
    Precision,
    Recovery,
    Selection,
    Shape,
    c_integer,
    to_enum,
)
from .plan import llama_cpp_bytes, plan_max_batch, plan_max_prompt, plan_memory
from .errors import (
    CapacityError,
    EmptyLayerError,
    GQAError,
    HeadDimError,
    IndexOutOfRangeError,
    RangeError,
    AttentionOverflowError,
    ElementTypeError,
    FileIOError,
    FormatError,
    InvalidPolicyError,
    InvalidShapeError,
    LayerError,
    NonFiniteError,
    NullPointerError,
    OutOfMemoryError,
    SparKVError,
    StateError,
    Status,
    StructSizeError,
    UnsupportedError,
    WindowError,
)

ALL_LAYERS = _lib.ALL_LAYERS


def version() -> str:
    """The C library's version string, "MAJOR.MINOR.PATCH"."""
    return _lib.load().sparkv_version_string().decode()


def version_info() -> Tuple[int, int, int]:
    """The C library's version as (major, minor, patch)."""
    v = _lib.load().sparkv_version()
    return v // 10000, v // 100 % 100, v % 100


def status_string(status: Union[Status, int]) -> str:
    """The C library's stable sentence for a status code (a generic one for unknown codes)."""
    code = c_integer("status", status, -(2**31), 2**31 - 1)
    return _lib.load().sparkv_status_string(code).decode()


def topk_keep(key_prune_ratio: float, head_dim: int) -> int:
    """Key channels TOPK keeps per token: head_dim - floor(r * head_dim), as the library computes it."""
    d = c_integer("head_dim", head_dim, 0, U32)
    return int(_lib.load().sparkv_topk_keep(float(key_prune_ratio), d))


def kernel_supported(kernel: Union[Kernel, str, int]) -> bool:
    """Whether this CPU and build support a kernel family."""
    return bool(_lib.load().sparkv_kernel_supported(int(to_enum(Kernel, kernel, "kernel"))))


def draw_standard(
    seed: int, layer: int, kv_head: int, token: int, channel: int, recovery: Union[Recovery, str, int]
) -> float:
    """The standardized GAUSSIAN/EXPONENTIAL recovery draw (sparkv_draw_standard in sparkv.h): the
    standard-normal point for GAUSSIAN, the square root of the unit-exponential point for
    EXPONENTIAL, 0.0 otherwise. The same on every ISA and thread count."""
    args = (
        c_integer("seed", seed, 0, U64),
        c_integer("layer", layer, 0, U32),
        c_integer("kv_head", kv_head, 0, U32),
        c_integer("token", token, 0, U64),
        c_integer("channel", channel, 0, U32),
    )
    return float(_lib.load().sparkv_draw_standard(*args, int(to_enum(Recovery, recovery, "recovery"))))


__all__ = [
    "attend_batch",
    "llama_cpp_bytes",
    "plan_max_batch",
    "plan_max_prompt",
    "plan_memory",
    "ALL_LAYERS",
    "MEMORY_FIELDS",
    "CapacityError",
    "EmptyLayerError",
    "Eviction",
    "GQAError",
    "HeadDimError",
    "IndexOutOfRangeError",
    "RangeError",
    "AttentionOverflowError",
    "ElementTypeError",
    "FileIOError",
    "FormatError",
    "InvalidPolicyError",
    "InvalidShapeError",
    "KVCache",
    "Kernel",
    "KeyPruning",
    "LayerError",
    "LibraryNotFoundError",
    "NonFiniteError",
    "NullPointerError",
    "OutOfMemoryError",
    "Policy",
    "Precision",
    "Recovery",
    "Selection",
    "Shape",
    "SparKVError",
    "StateError",
    "Status",
    "StructSizeError",
    "UnsupportedError",
    "WindowError",
    "__version__",
    "draw_standard",
    "kernel_supported",
    "library_path",
    "status_string",
    "topk_keep",
    "version",
    "version_info",
]
