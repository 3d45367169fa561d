"""Finding libsparkv and declaring its C API for ctypes.

The library is looked up, in order:

1. the path in the environment variable ``SPARKV_LIBRARY`` (only that path when it is set);
2. ``libsparkv.so`` (or ``libsparkv.so.MAJOR``) shipped next to this package;
3. the installed library: the dynamic loader's own search (``LD_LIBRARY_PATH``, the ld cache),
   ``ctypes.util.find_library("sparkv")``, then the usual prefixes (``/usr/local/lib``, ...).

The library is loaded on first use, so ``import sparkv`` works without it (``Policy`` and ``Shape``
are plain data); the first call that needs C raises :class:`LibraryNotFoundError` if nothing loads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import sysconfig
import threading
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_int32, c_uint, c_uint8, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import List, Optional

ENV_VAR = "SPARKV_LIBRARY"
#: The C library major version this binding speaks (SPARKV_VERSION_MAJOR).
SUPPORTED_MAJOR = 0


class LibraryNotFoundError(OSError):
    """libsparkv could not be found or loaded, or it is not a version this binding supports."""


class CShape(ctypes.Structure):
    """struct sparkv_shape."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("n_layers", c_uint32),
        ("n_q_heads", c_uint32),
        ("n_kv_heads", c_uint32),
        ("head_dim", c_uint32),
        ("capacity", c_uint64),
    ]


class CPolicy(ctypes.Structure):
    """struct sparkv_policy (enums are C ints)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("key_prune_ratio", c_float),
        ("selection", c_int),
        ("cumulative_p", c_float),
        ("cumulative_min_keep", c_uint32),
        ("cumulative_max_keep", c_uint32),
        ("recovery", c_int),
        ("sign_bits", c_int32),
        ("key_precision", c_int),
        ("value_precision", c_int),
        ("window", c_uint32),
        ("seed", c_uint64),
        ("threads", c_int32),
        ("attention_scale", c_float),
        # token eviction (prefill)
        ("eviction", c_int),
        ("evict_budget", c_uint32),
        ("pool_kernel", c_uint32),
        ("pyramid_ratio", c_float),
        ("sink_tokens", c_uint32),
        ("recent_tokens", c_uint32),
        # structured key pruning and value pruning
        ("key_pruning", c_int),
        ("value_prune_ratio", c_float),
        # quantization (key_precision / value_precision I8 or I4)
        ("quant_group", c_uint32),
        # decode-time compression (append)
        ("compress_decode", c_int32),
        ("decode_recent", c_uint32),
    ]


class CMemory(ctypes.Structure):
    """struct sparkv_memory (the caller sets struct_size; see new_memory())."""

    _fields_ = [
        ("struct_size", c_uint64),
        ("n_tokens", c_uint64),
        ("key_bytes", c_uint64),
        ("key_meta_bytes", c_uint64),
        ("value_bytes", c_uint64),
        ("total_bytes", c_uint64),
        ("dense_bytes", c_uint64),
        ("reserved_bytes", c_uint64),
        ("value_meta_bytes", c_uint64),
    ]


def new_memory() -> CMemory:
    """A zeroed sparkv_memory with struct_size set, ready for sparkv_memory_report."""
    out = CMemory()
    out.struct_size = ctypes.sizeof(CMemory)
    return out


ALL_LAYERS = 0xFFFFFFFF

_F = POINTER(c_float)
_PROTOTYPES = {
    "sparkv_version": (c_uint, []),
    "sparkv_version_string": (c_char_p, []),
    "sparkv_status_string": (c_char_p, [c_int]),
    "sparkv_default_shape": (CShape, []),
    "sparkv_default_policy": (CPolicy, []),
    "sparkv_policy_validate": (c_int, [POINTER(CPolicy), c_uint32]),
    "sparkv_topk_keep": (c_uint32, [c_float, c_uint32]),
    "sparkv_cache_create": (c_int, [POINTER(CShape), POINTER(CPolicy), POINTER(c_void_p)]),
    "sparkv_cache_free": (None, [c_void_p]),
    "sparkv_last_error": (c_char_p, [c_void_p]),
    "sparkv_cache_shape": (c_int, [c_void_p, POINTER(CShape)]),
    "sparkv_cache_policy": (c_int, [c_void_p, POINTER(CPolicy)]),
    "sparkv_cache_threads": (c_int, [c_void_p]),
    "sparkv_layer_tokens": (c_uint64, [c_void_p, c_uint32]),
    "sparkv_prefill": (c_int, [c_void_p, c_uint32, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64]),
    "sparkv_append": (c_int, [c_void_p, c_uint32, c_void_p, c_void_p]),
    "sparkv_plan_memory": (c_int, [POINTER(CShape), POINTER(CPolicy), c_uint64, c_uint64, POINTER(CMemory)]),
    "sparkv_plan_max_prompt": (c_int, [POINTER(CShape), POINTER(CPolicy), c_uint64, c_uint64, c_uint64, POINTER(c_uint64)]),
    "sparkv_plan_max_batch": (c_int, [POINTER(CShape), POINTER(CPolicy), c_uint64, c_uint64, c_uint64, POINTER(c_uint64)]),
    "sparkv_attend_batch": (c_int, [POINTER(c_void_p), c_uint32, c_uint32, c_void_p, c_void_p]),
    "sparkv_prefill_typed": (c_int, [c_void_p, c_uint32, c_int, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64]),
    "sparkv_append_typed": (c_int, [c_void_p, c_uint32, c_int, c_void_p, c_void_p]),
    "sparkv_append_step": (c_int, [c_void_p, c_uint32, c_int, c_void_p, c_void_p, c_void_p]),
    "sparkv_attend": (c_int, [c_void_p, c_uint32, c_void_p, c_void_p]),
    "sparkv_memory_report": (c_int, [c_void_p, c_uint32, POINTER(CMemory)]),
    "sparkv_inspect_key": (c_int, [c_void_p, c_uint32, c_uint32, c_uint64, POINTER(c_uint8), _F]),
    "sparkv_inspect_value": (c_int, [c_void_p, c_uint32, c_uint32, c_uint64, _F]),
    "sparkv_inspect_qnorm": (c_int, [c_void_p, c_uint32, c_uint32, _F, _F]),
    "sparkv_draw_standard": (c_float, [c_uint64, c_uint32, c_uint32, c_uint64, c_uint32, c_int]),
    "sparkv_kernel_supported": (c_int, [c_int]),
    "sparkv_cache_set_kernel": (c_int, [c_void_p, c_int]),
    "sparkv_cache_kernel": (c_int, [c_void_p]),
    "sparkv_kernel_name": (c_char_p, [c_int]),
    "sparkv_cache_save": (c_int, [c_void_p, c_uint32, c_uint32, c_char_p]),
    "sparkv_cache_save_size": (c_int, [c_void_p, c_uint32, c_uint32, POINTER(c_uint64)]),
    "sparkv_cache_save_buffer": (c_int, [c_void_p, c_uint32, c_uint32, c_void_p, ctypes.c_size_t, POINTER(ctypes.c_size_t)]),
    "sparkv_cache_load": (c_int, [c_char_p, POINTER(CShape), POINTER(c_void_p)]),
    "sparkv_cache_load_buffer": (c_int, [c_void_p, ctypes.c_size_t, POINTER(CShape), POINTER(c_void_p)]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def _library_names() -> List[str]:
    if sys.platform == "darwin":
        return ["libsparkv.dylib", f"libsparkv.{SUPPORTED_MAJOR}.dylib"]
    if sys.platform == "win32":
        return ["sparkv.dll", "libsparkv.dll"]
    return ["libsparkv.so", f"libsparkv.so.{SUPPORTED_MAJOR}"]


def candidates() -> List[str]:
    """Where the library is looked for, in order (see the module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [env]
    names = _library_names()
    out = [str(Path(__file__).resolve().parent / n) for n in names]
    out += list(reversed(names))  # the loader's search: LD_LIBRARY_PATH, ld cache, /lib, /usr/lib
    found = ctypes.util.find_library("sparkv")
    if found:
        out.append(found)
    dirs = [Path(sys.prefix) / "lib", Path("/usr/local/lib"), Path("/usr/local/lib64")]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs += [Path("/usr/local/lib") / multiarch, Path("/usr/lib") / multiarch]
    dirs += [Path("/usr/lib"), Path("/usr/lib64"), Path("/opt/homebrew/lib")]
    out += [str(d / n) for d in dirs for n in names]
    seen = set()
    return [c for c in out if not (c in seen or seen.add(c))]


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _check(lib: ctypes.CDLL, where: str) -> None:
    version = lib.sparkv_version()
    if version // 10000 != SUPPORTED_MAJOR:
        raise LibraryNotFoundError(
            f"{where} is SparKV {lib.sparkv_version_string().decode()}; this binding needs major version "
            f"{SUPPORTED_MAJOR}"
        )
    shape, policy = lib.sparkv_default_shape(), lib.sparkv_default_policy()
    if shape.struct_size != ctypes.sizeof(CShape) or policy.struct_size != ctypes.sizeof(CPolicy):
        raise LibraryNotFoundError(
            f"{where}: struct sizes differ from this binding's (shape {shape.struct_size} vs "
            f"{ctypes.sizeof(CShape)}, policy {policy.struct_size} vs {ctypes.sizeof(CPolicy)})"
        )
    # sparkv_memory has no default constructor: ask a tiny cache for a report with our struct_size.
    shape.n_layers = shape.n_q_heads = shape.n_kv_heads = 1
    shape.head_dim, shape.capacity = 8, 1
    handle = c_void_p()
    status = lib.sparkv_cache_create(ctypes.byref(shape), ctypes.byref(policy), ctypes.byref(handle))
    if status != 0:
        raise LibraryNotFoundError(
            f"{where}: cannot create a 1-token cache to check sparkv_memory's size (status {status}: "
            f"{(lib.sparkv_last_error(None) or b'').decode('utf-8', 'replace')})"
        )
    try:
        memory = new_memory()
        status = lib.sparkv_memory_report(handle, ALL_LAYERS, ctypes.byref(memory))
        detail = (lib.sparkv_last_error(handle) or b"").decode("utf-8", "replace")
    finally:
        lib.sparkv_cache_free(handle)
    if status != 0:
        raise LibraryNotFoundError(
            f"{where}: sparkv_memory differs from this binding's ({ctypes.sizeof(CMemory)} bytes): {detail}"
        )


def load() -> ctypes.CDLL:
    """The loaded library (loaded once, on first use). Raises LibraryNotFoundError."""
    global _lib, _path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        errors = []
        for cand in candidates():
            is_path = os.sep in cand
            if is_path and not os.path.exists(cand):
                errors.append(f"{cand}: no such file")
                continue
            try:
                lib = ctypes.CDLL(cand)
                _declare(lib)
            except (OSError, AttributeError) as exc:
                errors.append(f"{cand}: {exc}")
                continue
            _check(lib, cand)
            _lib, _path = lib, cand
            return lib
        hint = (
            f"set {ENV_VAR} to the path of libsparkv.so (build it with `make` at the repository root), "
            "or install it with `make install`"
        )
        raise LibraryNotFoundError("cannot load libsparkv; " + hint + ". Tried:\n  " + "\n  ".join(errors))


def library_path() -> str:
    """The path (or loader name) the library was loaded from."""
    load()
    assert _path is not None
    return _path
