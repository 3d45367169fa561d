"""Memory planning: what caches of a shape and policy will hold, from the library's exact byte
formulas, before any cache exists (``sparkv_plan_*`` in sparkv.h).

Every answer counts ``reserved_bytes`` (pages as allocated, slack included). Predictions equal the
memory report of a real cache for every policy except cumulative selection, where each token is
counted with the policy's maximum kept channels (an upper bound).
"""

from __future__ import annotations

import ctypes
import operator
from typing import Dict

from . import _lib
from .cache import MEMORY_FIELDS
from .config import Policy, Shape
from .errors import error_for

# llama.cpp's cache types: (bytes per block, values per block) of K and V rows in ggml blocks
LLAMA_CPP_BLOCKS = {"f16": (2, 1), "q8_0": (34, 32), "q4_0": (18, 32)}


def _count(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not 0 <= v < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64), got {v}")
    return v


def _call(fn: str, *args: object) -> None:
    lib = _lib.load()
    status = getattr(lib, fn)(*args)
    if status != 0:
        raise error_for(status, (lib.sparkv_last_error(None) or b"").decode("utf-8", "replace"))


def plan_memory(shape: Shape, policy: Policy, prompt_tokens: int, appended_tokens: int = 0) -> Dict[str, int]:
    """The memory report (``KVCache.memory_report()`` keys) a cache would give after every layer is
    prefilled with ``prompt_tokens`` tokens (0: no prefill) and ``appended_tokens`` are appended."""
    out = _lib.new_memory()
    _call("sparkv_plan_memory", ctypes.byref(shape.to_c()), ctypes.byref(policy.to_c()),
          _count("prompt_tokens", prompt_tokens), _count("appended_tokens", appended_tokens), ctypes.byref(out))
    return {name: int(getattr(out, name)) for name in MEMORY_FIELDS}


def plan_max_prompt(shape: Shape, policy: Policy, memory_bytes: int, batch: int = 1, appended_tokens: int = 0) -> int:
    """The longest prompt per sequence such that ``batch`` sequences (plus ``appended_tokens``
    each) fit in ``memory_bytes``; at most the shape's capacity minus appended_tokens."""
    out = ctypes.c_uint64()
    _call("sparkv_plan_max_prompt", ctypes.byref(shape.to_c()), ctypes.byref(policy.to_c()),
          _count("memory_bytes", memory_bytes), _count("batch", batch), _count("appended_tokens", appended_tokens),
          ctypes.byref(out))
    return int(out.value)


def plan_max_batch(shape: Shape, policy: Policy, memory_bytes: int, prompt_tokens: int, appended_tokens: int = 0) -> int:
    """The most sequences of ``prompt_tokens`` + ``appended_tokens`` whose caches fit in
    ``memory_bytes`` (2**64 - 1 when a sequence needs no memory)."""
    out = ctypes.c_uint64()
    _call("sparkv_plan_max_batch", ctypes.byref(shape.to_c()), ctypes.byref(policy.to_c()),
          _count("memory_bytes", memory_bytes), _count("prompt_tokens", prompt_tokens),
          _count("appended_tokens", appended_tokens), ctypes.byref(out))
    return int(out.value)


def llama_cpp_bytes(shape: Shape, cache_type: str, tokens: int) -> int:
    """Bytes llama.cpp's ``cache_type`` ("f16", "q8_0", "q4_0") cache holds for ``tokens`` tokens of
    one sequence: every layer's K and V rows in whole ggml blocks."""
    if cache_type not in LLAMA_CPP_BLOCKS:
        raise ValueError(f"cache_type must be one of {sorted(LLAMA_CPP_BLOCKS)}, got {cache_type!r}")
    block_bytes, block_values = LLAMA_CPP_BLOCKS[cache_type]
    row = shape.n_kv_heads * shape.head_dim
    blocks = -(-row // block_values)
    return blocks * block_bytes * 2 * shape.n_layers * _count("tokens", tokens)
