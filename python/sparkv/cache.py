"""KVCache: the owner of one ``sparkv_cache`` handle."""

from __future__ import annotations

import ctypes
import operator
import os
import threading
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from .config import U32, U64, Kernel, Policy, Shape, to_enum
from .errors import Status, error_for

_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_BYTE_P = ctypes.POINTER(ctypes.c_uint8)

MEMORY_FIELDS = (
    "n_tokens",
    "key_bytes",
    "key_meta_bytes",
    "value_bytes",
    "value_meta_bytes",
    "total_bytes",
    "dense_bytes",
    "reserved_bytes",
)


# sparkv_dtype: the element types prefill/append read in place.
_DTYPE_F32, _DTYPE_F16, _DTYPE_BF16 = 0, 1, 2
_DTYPE_NAMES = {_DTYPE_F32: "float32", _DTYPE_F16: "float16", _DTYPE_BF16: "bfloat16"}


def _input_dtype(name: str, a: object, bits16: Optional[str]) -> int:
    """The sparkv_dtype of a prefill/append input: float32, float16, ml_dtypes' bfloat16, or uint16
    bit patterns when ``bits16`` says what they hold ("float16" or "bfloat16"). Nothing else is
    accepted and nothing is converted: 16-bit arrays are read in place by C."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype == np.float32:
        return _DTYPE_F32
    if a.dtype == np.float16:
        return _DTYPE_F16
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:  # ml_dtypes.bfloat16
        return _DTYPE_BF16
    if a.dtype == np.uint16:
        if bits16 == "bfloat16":
            return _DTYPE_BF16
        if bits16 == "float16":
            return _DTYPE_F16
        raise TypeError(
            f"{name} is uint16: say what its bits hold with bits16='bfloat16' or bits16='float16'"
        )
    raise TypeError(
        f"{name} must have dtype float32, float16, bfloat16 (ml_dtypes) or uint16 bit patterns with bits16=..., "
        f"got {a.dtype}; convert it explicitly, e.g. {name}.astype(np.float32)"
    )


def _input_array(
    name: str, a: object, expected: Sequence[Optional[int]], labels: Sequence[str], dtype: int
) -> int:
    """_float32_array's checks for a prefill/append input of sparkv_dtype ``dtype`` (2-byte
    elements need 2-byte alignment)."""
    if dtype == _DTYPE_F32:
        return _float32_array(name, a, expected, labels)
    assert isinstance(a, np.ndarray)
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain numpy.ndarray, got a masked array")
    return _checked_layout(name, a, expected, labels, writes=False, alignment=2)


def _float32_array(
    name: str, a: object, expected: Sequence[Optional[int]], labels: Sequence[str], writes: bool = False
) -> int:
    """The address of `a` after checking it is a float32, C-contiguous, aligned array of the expected
    shape, and writeable when C writes into it (`writes`).

    `expected` holds sizes, None where any size is accepted; `labels` names each axis. Nothing is
    converted: a float64 or strided array is a caller mistake worth knowing about (a silent copy
    would hide a 2x memory and time cost on every decode step). Every array handed to C goes
    through here: C trusts the pointer for exactly the checked shape.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain numpy.ndarray, got a masked array (C would read the masked entries "
            f"as numbers); pass {name}.filled(value) or {name}.data explicitly"
        )
    if a.dtype != np.float32:
        raise TypeError(
            f"{name} must have dtype float32 (native byte order), got {a.dtype}; "
            f"convert it explicitly, e.g. {name}.astype(np.float32)"
        )
    return _checked_layout(name, a, expected, labels, writes, alignment=4)


def _checked_layout(
    name: str, a: np.ndarray, expected: Sequence[Optional[int]], labels: Sequence[str], writes: bool, alignment: int
) -> int:
    """The address of `a` after checking its shape, C-contiguity, alignment and (writes) writeability."""
    want = "(" + ", ".join(f"{lab}={'*' if e is None else e}" for lab, e in zip(labels, expected)) + ")"
    if a.ndim != len(expected) or any(e is not None and e != g for e, g in zip(expected, a.shape)):
        raise ValueError(f"{name} must have shape {want}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to {alignment} bytes; pass a fresh copy ({name}.copy())")
    if writes and not a.flags.writeable:
        raise ValueError(
            f"{name} must be writeable (the result is written into it), got a read-only array "
            "(writeable=False, a read-only memmap, or np.frombuffer over bytes); pass a writable array "
            "or omit it"
        )
    return a.ctypes.data


def _index(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


class KVCache:
    """A SparKV cache for every layer of one sequence.

    Tensors are numpy float32, C-contiguous, post-RoPE:

    - ``prefill(layer, keys, values, q_window)``: keys/values ``(n_kv_heads, n_tokens, head_dim)``,
      q_window ``(n_q_heads, n_window, head_dim)`` (the last prompt queries; may be None for a
      policy that neither prunes key channels nor scores tokens for eviction). Once per layer, on
      an empty layer; evicted prompt tokens are dropped there.
    - ``append(layer, k, v)``: ``(n_kv_heads, head_dim)`` each.
    - ``attend(layer, q)``: q ``(n_q_heads, head_dim)`` -> ``(n_q_heads, head_dim)``.

    Example::

        shape = Shape(n_layers=2, n_q_heads=8, n_kv_heads=2, head_dim=128, capacity=4096)
        with KVCache(shape, Policy.spark(0.8)) as cache:
            cache.prefill(0, keys, values, q_window)
            cache.append(0, k, v)
            out = cache.attend(0, q)
            print(cache.memory_report(0)["total_bytes"])

    A failing call raises a :class:`~sparkv.errors.SparKVError` subclass carrying the C status and
    message, and leaves the cache unchanged. Calls on one cache are serialised by a lock (the C
    library allows one thread at a time per handle); the GIL is released while C runs, so distinct
    caches can work in parallel from different threads.
    """

    def __init__(self, shape: Shape, policy: Optional[Policy] = None):
        if not isinstance(shape, Shape):
            raise TypeError(f"shape must be a sparkv.Shape, got {type(shape).__name__}")
        if policy is None:
            policy = Policy.dense()
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a sparkv.Policy, got {type(policy).__name__}")
        self._handle: Optional[int] = None
        self._lock = threading.Lock()
        lib = _lib.load()
        self._lib = lib
        c_shape, c_policy = shape.to_c(), policy.to_c()
        out = ctypes.c_void_p()
        status = lib.sparkv_cache_create(ctypes.byref(c_shape), ctypes.byref(c_policy), ctypes.byref(out))
        if status != 0:
            raise error_for(status, self._message(status, None))
        self._handle = out.value
        self._shape = shape
        self._policy = policy

    # ---- saved caches ---------------------------------------------------------------------------

    @classmethod
    def _adopt(cls, handle: int) -> "KVCache":
        """A KVCache owning a handle the C library created (the loaders)."""
        self = cls.__new__(cls)
        self._handle = None
        self._lock = threading.Lock()
        self._lib = _lib.load()
        self._handle = handle
        c_shape, c_policy = _lib.CShape(), _lib.CPolicy()
        for fn, out in (("sparkv_cache_shape", c_shape), ("sparkv_cache_policy", c_policy)):
            status = getattr(self._lib, fn)(handle, ctypes.byref(out))
            if status != 0:
                self.close()
                raise error_for(status, self._message(status, handle))
        self._shape = Shape.from_c(c_shape)
        self._policy = Policy.from_c(c_policy)
        return self

    def _layer_range(self, first_layer: int, n_layers: Optional[int]) -> Tuple[int, int]:
        first = self._layer(first_layer)
        count = _lib.ALL_LAYERS if n_layers is None else _index("n_layers", n_layers)
        if not 0 <= count <= U32:
            raise error_for(Status.LAYER, f"n_layers {count} is out of range")
        return first, count

    def save(self, path: Union[str, "os.PathLike[str]"], first_layer: int = 0, n_layers: Optional[int] = None) -> None:
        """Save layers ``[first_layer, first_layer + n_layers)`` (all from ``first_layer`` when
        ``n_layers`` is None) to ``path`` (sparkv_cache_save): a versioned file with a checksum per
        section, written beside ``path`` and renamed over it. :meth:`load` gives back a cache whose
        attend, memory report and appends are bit-identical.

        Example::

            cache.save("prefix.svc")
            again = KVCache.load("prefix.svc", expected_shape=cache.shape)
        """
        first, count = self._layer_range(first_layer, n_layers)
        self._call("sparkv_cache_save", first, count, os.fsencode(path))

    def to_bytes(self, first_layer: int = 0, n_layers: Optional[int] = None) -> bytes:
        """The file :meth:`save` would write, as bytes (sparkv_cache_save_buffer)."""
        first, count = self._layer_range(first_layer, n_layers)
        size = ctypes.c_uint64()
        self._call("sparkv_cache_save_size", first, count, ctypes.byref(size))
        buf = ctypes.create_string_buffer(max(int(size.value), 1))
        written = ctypes.c_size_t()
        self._call("sparkv_cache_save_buffer", first, count, buf, int(size.value), ctypes.byref(written))
        return buf.raw[: written.value]

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], expected_shape: Optional[Shape] = None) -> "KVCache":
        """Load a cache saved by :meth:`save` (sparkv_cache_load). ``expected_shape``: the model's
        shape; its layers, heads and head_dim must match the file's (``InvalidShapeError``) and its
        capacity replaces the file's (``CapacityError`` when a layer holds more). A malformed file
        raises ``FormatError``, an unreadable one ``FileIOError``."""
        return cls._load_with("sparkv_cache_load", (os.fsencode(path),), expected_shape)

    @classmethod
    def from_bytes(cls, data: bytes, expected_shape: Optional[Shape] = None) -> "KVCache":
        """:meth:`load` from the bytes of a saved cache (sparkv_cache_load_buffer)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        raw = bytes(data)
        return cls._load_with("sparkv_cache_load_buffer", (raw, len(raw)), expected_shape)

    @classmethod
    def _load_with(cls, fn: str, args: Tuple[object, ...], expected_shape: Optional[Shape]) -> "KVCache":
        if expected_shape is not None and not isinstance(expected_shape, Shape):
            raise TypeError(f"expected_shape must be a sparkv.Shape, got {type(expected_shape).__name__}")
        lib = _lib.load()
        c_shape = expected_shape.to_c() if expected_shape is not None else None
        out = ctypes.c_void_p()
        status = getattr(lib, fn)(*args, ctypes.byref(c_shape) if c_shape is not None else None, ctypes.byref(out))
        if status != 0:
            raw = lib.sparkv_last_error(None)
            msg = raw.decode("utf-8", "replace") if raw else ""
            raise error_for(status, msg or lib.sparkv_status_string(status).decode())
        return cls._adopt(out.value)

    # ---- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the C cache. Idempotent; any later call raises ValueError."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                self._lib.sparkv_cache_free(handle)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "KVCache":
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def __repr__(self) -> str:
        if self.closed:
            return "<KVCache closed>"
        tokens = [self.tokens(layer) for layer in range(self._shape.n_layers)]
        return f"<KVCache {self._shape} {self._policy} tokens={tokens}>"

    # ---- helpers --------------------------------------------------------------------------------

    def _live(self) -> int:
        if self._handle is None:
            raise ValueError("operation on a closed KVCache")
        return self._handle

    def _message(self, status: int, handle: Optional[int]) -> str:
        raw = self._lib.sparkv_last_error(handle)
        msg = raw.decode("utf-8", "replace") if raw else ""
        return msg or self._lib.sparkv_status_string(status).decode()

    def _call(self, fn_name: str, *args: object) -> None:
        """Run one C call on this handle under the lock; raise the C error on failure."""
        with self._lock:
            handle = self._live()
            status = getattr(self._lib, fn_name)(handle, *args)
            if status != 0:
                raise error_for(status, self._message(status, handle))

    def _layer(self, layer: object) -> int:
        value = _index("layer", layer)
        if not 0 <= value <= U32:
            raise error_for(
                Status.LAYER, f"layer {value} is out of range (n_layers = {self._shape.n_layers})"
            )
        return value

    def _head(self, kv_head: object) -> int:
        value = _index("kv_head", kv_head)
        if not 0 <= value <= U32:
            raise error_for(
                Status.INDEX, f"kv_head {value} is out of range (n_kv_heads = {self._shape.n_kv_heads})"
            )
        return value

    def _token(self, token: object) -> int:
        value = _index("token", token)
        if not 0 <= value <= U64:
            raise error_for(Status.INDEX, f"token {value} is out of range")
        return value

    # ---- properties -----------------------------------------------------------------------------

    @property
    def shape(self) -> Shape:
        """The shape, as the C cache holds it."""
        out = _lib.CShape()
        self._call("sparkv_cache_shape", ctypes.byref(out))
        return Shape.from_c(out)

    @property
    def policy(self) -> Policy:
        """The policy, as the C cache holds it (floats read back as float32 values)."""
        out = _lib.CPolicy()
        self._call("sparkv_cache_policy", ctypes.byref(out))
        return Policy.from_c(out)

    @property
    def threads(self) -> int:
        """OpenMP threads prefill and attend use: policy.threads, or OpenMP's default when 0."""
        with self._lock:
            return int(self._lib.sparkv_cache_threads(self._live()))

    @property
    def kernel(self) -> Kernel:
        """The attention kernel family in use (never AUTO)."""
        with self._lock:
            return Kernel(self._lib.sparkv_cache_kernel(self._live()))

    def set_kernel(self, kernel: Union[Kernel, str, int]) -> None:
        """Choose the kernel family ("portable", "avx2", "avx512" or "auto"); UnsupportedError if
        this CPU lacks it."""
        self._call("sparkv_cache_set_kernel", int(to_enum(Kernel, kernel, "kernel")))

    def tokens(self, layer: int) -> int:
        """Tokens held by ``layer`` per KV head (surviving prompt tokens + appended)."""
        value = self._layer(layer)
        if value >= self._shape.n_layers:
            raise error_for(Status.LAYER, f"layer {value} is out of range (n_layers = {self._shape.n_layers})")
        with self._lock:
            return int(self._lib.sparkv_layer_tokens(self._live(), value))

    # ---- prefill, append, attend ----------------------------------------------------------------

    def prefill(
        self,
        layer: int,
        keys: np.ndarray,
        values: np.ndarray,
        q_window: Optional[np.ndarray] = None,
        *,
        bits16: Optional[str] = None,
    ) -> None:
        """Compress and store the prompt of one layer (once per layer, on an empty layer).

        keys, values: ``(n_kv_heads, n_tokens, head_dim)``; q_window: ``(n_q_heads, n_window,
        head_dim)``, the last prompt queries, oldest first (required when the policy prunes key
        channels or evicts with SnapKV/PyramidKV). The policy's eviction runs first: afterwards the
        layer holds the surviving prompt tokens, in prompt order, as tokens ``0 .. kept-1``.

        The three arrays share one dtype: float32, float16, ``ml_dtypes.bfloat16``, or uint16 bit
        patterns with ``bits16="bfloat16"`` (or ``"float16"``). 16-bit arrays are read in place and
        widened exactly: the cache equals the one built from their float32 values.
        """
        s = self._shape
        layer = self._layer(layer)
        dtype = _input_dtype("keys", keys, bits16)
        for other_name, other in (("values", values), ("q_window", q_window)):
            if other is not None and _input_dtype(other_name, other, bits16) != dtype:
                raise TypeError(f"{other_name} must have the dtype of keys ({keys.dtype}), got {other.dtype}")
        k_ptr = _input_array(
            "keys", keys, (s.n_kv_heads, None, s.head_dim), ("n_kv_heads", "n_tokens", "head_dim"), dtype
        )
        n_tokens = keys.shape[1]
        v_ptr = _input_array(
            "values", values, (s.n_kv_heads, n_tokens, s.head_dim), ("n_kv_heads", "n_tokens", "head_dim"), dtype
        )
        if q_window is None:
            q_ptr, n_window = None, 0
        else:
            q_ptr = _input_array(
                "q_window", q_window, (s.n_q_heads, None, s.head_dim), ("n_q_heads", "n_window", "head_dim"), dtype
            )
            n_window = q_window.shape[1]
        self._call("sparkv_prefill_typed", layer, dtype, k_ptr, v_ptr, n_tokens, q_ptr, n_window)

    def append(
        self, layer: int, k: np.ndarray, v: np.ndarray, q: Optional[np.ndarray] = None, *, bits16: Optional[str] = None
    ) -> None:
        """Append one decode token: k, v ``(n_kv_heads, head_dim)``, both float32, float16,
        ``ml_dtypes.bfloat16`` or uint16 bit patterns with ``bits16`` (see ``prefill``).

        q: the step's post-RoPE query ``(n_q_heads, head_dim)`` float32, or None. With the policy's
        ``compress_decode``, appended tokens are compressed as they age, and SparK's window-query
        norms for them come from the last ``window`` queries passed here (sparkv_append_step)."""
        s = self._shape
        layer = self._layer(layer)
        dtype = _input_dtype("k", k, bits16)
        if _input_dtype("v", v, bits16) != dtype:
            raise TypeError(f"v must have the dtype of k ({k.dtype}), got {v.dtype}")
        k_ptr = _input_array("k", k, (s.n_kv_heads, s.head_dim), ("n_kv_heads", "head_dim"), dtype)
        v_ptr = _input_array("v", v, (s.n_kv_heads, s.head_dim), ("n_kv_heads", "head_dim"), dtype)
        q_ptr = None if q is None else _float32_array("q", q, (s.n_q_heads, s.head_dim), ("n_q_heads", "head_dim"))
        self._call("sparkv_append_step", layer, dtype, k_ptr, v_ptr, q_ptr)

    def attend(self, layer: int, q: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode attention of one query token over every token of ``layer``.

        q: ``(n_q_heads, head_dim)``. Returns ``(n_q_heads, head_dim)`` float32, written into ``out``
        when given (same shape, float32, C-contiguous, aligned, writeable, not overlapping q; a
        wrong ``out`` raises TypeError / ValueError and is left untouched).
        """
        s = self._shape
        layer = self._layer(layer)
        q_ptr = _float32_array("q", q, (s.n_q_heads, s.head_dim), ("n_q_heads", "head_dim"))
        if out is None:
            out = np.empty((s.n_q_heads, s.head_dim), dtype=np.float32)
        o_ptr = _float32_array("out", out, (s.n_q_heads, s.head_dim), ("n_q_heads", "head_dim"), writes=True)
        if np.shares_memory(q, out):
            raise ValueError("out must not overlap q")
        self._call("sparkv_attend", layer, q_ptr, o_ptr)
        return out

    # ---- memory and inspection ------------------------------------------------------------------

    def memory_report(self, layer: Optional[int] = None) -> Dict[str, int]:
        """Exact bytes held by one layer, or by the whole cache when ``layer`` is None.

        Keys (see sparkv_memory in sparkv.h): n_tokens (tokens held per KV head, summed over the
        layers), key_bytes, key_meta_bytes (masks, signs, statistics, per-head qn; the per-head
        ThinK mask; fp16 key scales of I8/I4), value_bytes, value_meta_bytes (value-pruning masks
        and fill values; fp16 value scales of I8/I4),
        total_bytes (the sum of the four), dense_bytes (every token the layers have seen, evicted
        ones included, as dense fp16 K and V over all KV heads), reserved_bytes (allocated).
        """
        index = _lib.ALL_LAYERS if layer is None else self._layer(layer)
        if layer is not None and index == _lib.ALL_LAYERS:  # the C sentinel is not a layer
            raise error_for(Status.LAYER, f"layer {index} is out of range (n_layers = {self._shape.n_layers})")
        out = _lib.new_memory()
        self._call("sparkv_memory_report", index, ctypes.byref(out))
        return {name: int(getattr(out, name)) for name in MEMORY_FIELDS}

    def kept_mask(self, layer: int, kv_head: int, token: int) -> np.ndarray:
        """Which key channels of a stored token are kept: bool ``(head_dim,)`` (all True for dense
        tokens)."""
        d = self._shape.head_dim
        packed = np.zeros(d // 8, dtype=np.uint8)
        self._call(
            "sparkv_inspect_key",
            self._layer(layer),
            self._head(kv_head),
            self._token(token),
            packed.ctypes.data_as(_BYTE_P),
            None,
        )
        return np.unpackbits(packed, bitorder="little").astype(bool)

    def recovered_key(self, layer: int, kv_head: int, token: int) -> np.ndarray:
        """A stored key as attention sees it (kept values as stored, pruned entries recovered):
        float32 ``(head_dim,)``."""
        key = np.zeros(self._shape.head_dim, dtype=np.float32)
        self._call(
            "sparkv_inspect_key",
            self._layer(layer),
            self._head(kv_head),
            self._token(token),
            None,
            key.ctypes.data_as(_FLOAT_P),
        )
        return key

    def value(self, layer: int, kv_head: int, token: int) -> np.ndarray:
        """A stored value (in its storage precision, as float32): ``(head_dim,)``."""
        value = np.zeros(self._shape.head_dim, dtype=np.float32)
        self._call(
            "sparkv_inspect_value",
            self._layer(layer),
            self._head(kv_head),
            self._token(token),
            value.ctypes.data_as(_FLOAT_P),
        )
        return value

    def qnorm(self, layer: int, kv_head: int) -> Tuple[np.ndarray, float]:
        """The window query norms qn ``(head_dim,)`` and their mean c of one layer and KV head
        (zeros and 1.0 for a layer stored dense or not prefilled)."""
        qn = np.zeros(self._shape.head_dim, dtype=np.float32)
        c = ctypes.c_float(0.0)
        self._call(
            "sparkv_inspect_qnorm",
            self._layer(layer),
            self._head(kv_head),
            qn.ctypes.data_as(_FLOAT_P),
            ctypes.byref(c),
        )
        return qn, float(c.value)


__all__ = ["KVCache", "MEMORY_FIELDS"]


def attend_batch(caches: Sequence[KVCache], layer: int, q: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Decode attention of a batch: one query per sequence, each sequence its own cache, all for
    ``layer``, in one parallel region (``sparkv_attend_batch``). Each row of the result is
    bit-identical to ``caches[i].attend(layer, q[i])``.

    caches: at least one KVCache, equal n_q_heads, n_kv_heads and head_dim (a cache may repeat);
    q: ``(len(caches), n_q_heads, head_dim)`` float32. Returns the same shape (written into ``out``
    when given). A failure raises the first failing sequence's error, named in its message.
    """
    caches = list(caches)
    if not caches:
        raise ValueError("caches must hold at least one KVCache")
    for i, c in enumerate(caches):
        if not isinstance(c, KVCache):
            raise TypeError(f"caches[{i}] must be a KVCache, got {type(c).__name__}")
    s = caches[0]._shape
    layer = caches[0]._layer(layer)
    n = len(caches)
    q_ptr = _float32_array("q", q, (n, s.n_q_heads, s.head_dim), ("n_caches", "n_q_heads", "head_dim"))
    if out is None:
        out = np.empty((n, s.n_q_heads, s.head_dim), dtype=np.float32)
    o_ptr = _float32_array("out", out, (n, s.n_q_heads, s.head_dim), ("n_caches", "n_q_heads", "head_dim"), writes=True)
    if np.shares_memory(q, out):
        raise ValueError("out must not overlap q")
    # every distinct cache's lock, in a fixed order (no deadlock with another batch)
    unique = sorted({id(c): c for c in caches}.values(), key=id)
    for c in unique:
        c._lock.acquire()
    try:
        handles = (ctypes.c_void_p * n)(*[c._live() for c in caches])
        lib = caches[0]._lib
        status = lib.sparkv_attend_batch(handles, n, layer, q_ptr, o_ptr)
        if status != 0:
            raise error_for(status, (lib.sparkv_last_error(None) or b"").decode("utf-8", "replace"))
    finally:
        for c in reversed(unique):
            c._lock.release()
    return out
