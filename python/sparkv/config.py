"""Shape and Policy: immutable mirrors of ``sparkv_shape`` and ``sparkv_policy``.

Ranges are checked by the C library (``Policy.validate`` or ``KVCache(...)`` raise
:class:`~sparkv.errors.InvalidPolicyError` & co. with the C message); this module only rejects
values that cannot be represented in the C field at all (a negative ``window``, a ``seed`` of
2**64, a non-number), with ``TypeError`` / ``ValueError``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import operator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, Optional, Type, TypeVar, Union

from . import _lib
from .errors import Status, error_for


class Selection(IntEnum):
    """How pruned channels are chosen per token (sparkv_selection)."""

    TOPK = 0
    CUMULATIVE = 1


class Recovery(IntEnum):
    """How a pruned key entry is rebuilt at attention time (sparkv_recovery)."""

    NONE = 0
    MEAN = 1
    GAUSSIAN = 2
    EXPONENTIAL = 3


class Eviction(IntEnum):
    """Token eviction at prefill (sparkv_eviction)."""

    NONE = 0
    SNAPKV = 1
    PYRAMIDKV = 2
    STREAMING = 3


class KeyPruning(IntEnum):
    """How key channels are pruned (sparkv_key_pruning): per token (SparK) or per head (ThinK)."""

    SPARK = 0
    THINK = 1


class Precision(IntEnum):
    """Storage precision of kept keys and values (sparkv_precision).

    I8 and I4 are symmetric int8 / 4-bit with fp16 scales: a run of values sharing one scale stores
    ``q = clip(rint(x / s), -Q, Q)`` with ``s = fp16(max|x| / Q)`` (Q = 127 or 7) and reads back as
    ``s * q`` (within ``s / 2`` of the input); a run whose ``max|x| / Q`` reaches 65520 has no fp16
    scale and is refused (status RANGE), as is an f16 value of 65520 or more. Rows stored whole
    (dense or appended keys, values without value pruning) use one scale per ``Policy.quant_group``
    channels; the kept key values of a pruned token and the kept values of a value-pruned token
    share one scale.
    """

    F32 = 0
    F16 = 1
    BF16 = 2
    I8 = 3
    I4 = 4

    @property
    def is_quantized(self) -> bool:
        """True for I8 and I4 (integers with fp16 scales)."""
        return self in (Precision.I8, Precision.I4)

    @property
    def quant_max(self) -> int:
        """Largest integer of the grid: 127 (I8), 7 (I4); 0 for float precisions."""
        return {Precision.I8: 127, Precision.I4: 7}.get(self, 0)

    def row_bytes(self, n: int) -> int:
        """Bytes of n stored values, scales excluded: 4n, 2n, 2n, n, ceil(n/2) (the header's rb)."""
        return {Precision.F32: 4 * n, Precision.F16: 2 * n, Precision.BF16: 2 * n, Precision.I8: n}.get(
            self, (n + 1) // 2
        )

    def scale_bytes(self, k: int) -> int:
        """Bytes of k fp16 scales: 2k for I8/I4, else 0 (the header's sc)."""
        return 2 * k if self.is_quantized else 0


class Kernel(IntEnum):
    """Attention kernel family (sparkv_kernel)."""

    AUTO = 0
    PORTABLE = 1
    AVX2 = 2
    AVX512 = 3


E = TypeVar("E", bound=IntEnum)


def to_enum(cls: Type[E], value: Any, field: str) -> E:
    """An enum member from a member, its value or its case-insensitive name ("mean", "f16")."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls[value.strip().upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return cls(value)
        except ValueError:
            pass
    names = ", ".join(repr(m.name.lower()) for m in cls)
    raise ValueError(f"{field} must be one of {names} (or a {cls.__name__}), got {value!r}")


def c_integer(name: str, value: Any, lo: int, hi: int, what: str = "parameter") -> int:
    """`value` as a Python int after checking it is an integer (not a bool) in [lo, hi]: ctypes
    would silently mask a wider int to the C type's width (-1 becoming 2**32 - 1)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value} does not fit the C {what} (range [{lo}, {hi}])")
    return value


def _int_field(obj: Any, field: str, lo: int, hi: int) -> int:
    return c_integer(field, getattr(obj, field), lo, hi, "field")


def _float_field(obj: Any, field: str) -> float:
    value = getattr(obj, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{field} must be a number, got {type(value).__name__}")
    return float(value)


U32 = 2**32 - 1
U64 = 2**64 - 1


def _sign_bits(sign_bits: Optional[bool], recovery: Recovery) -> bool:
    """The presets' sign_bits: as given, or (None) whether the recovery reads signs."""
    return recovery != Recovery.NONE if sign_bits is None else sign_bits


@dataclass(frozen=True)
class Shape:
    """Shape of the attention layers a cache serves (mirrors sparkv_shape; defaults as in C).

    ``Shape(n_layers=32, n_q_heads=32, n_kv_heads=8, head_dim=128, capacity=8192)``
    """

    n_layers: int = 1
    n_q_heads: int = 1
    n_kv_heads: int = 1
    head_dim: int = 128
    capacity: int = 4096

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA group size)."""
        return self.n_q_heads // self.n_kv_heads if self.n_kv_heads else 0

    def to_c(self) -> _lib.CShape:
        return _lib.CShape(
            ctypes.sizeof(_lib.CShape),
            _int_field(self, "n_layers", 0, U32),
            _int_field(self, "n_q_heads", 0, U32),
            _int_field(self, "n_kv_heads", 0, U32),
            _int_field(self, "head_dim", 0, U32),
            _int_field(self, "capacity", 0, U64),
        )

    @classmethod
    def from_c(cls, c: _lib.CShape) -> "Shape":
        return cls(c.n_layers, c.n_q_heads, c.n_kv_heads, c.head_dim, c.capacity)


@dataclass(frozen=True)
class Policy:
    """Compression policy (mirrors sparkv_policy; defaults as in sparkv_default_policy()).

    A policy is a pipeline run at prefill: token eviction (``eviction``: SnapKV, PyramidKV or
    StreamingLLM), then key-channel pruning of the surviving prompt tokens (``key_pruning``: SparK
    per token with recovery, or ThinK per head), then value-channel pruning (``value_prune_ratio``).

    Enum fields accept members, values or names: ``Policy(recovery="gaussian", key_precision="bf16")``.
    Presets (the same C policies as the Swift presets: Tests/presets.json): ``Policy.dense()``,
    ``Policy.spark(0.8)`` (SparK, MEAN recovery, sign bits; ``recovery="none"`` drops them),
    ``Policy.cumulative(0.9)``, ``Policy.snapkv(512)``, ``Policy.pyramidkv(512)``,
    ``Policy.streaming(4, 508)``, ``Policy.think(0.5)``, ``Policy.snap_spark(512, 0.8)``,
    ``Policy.quantized("i8", "i8")`` (int8 K and V, no pruning); every preset takes any other field
    as a keyword (``Policy.think(0.5, value_prune_ratio=0.5)``). Use ``policy.replace(window=16)``
    to change a field and ``policy.with_precision("i8", "i4")`` to quantize any preset's storage.

    Quantized storage: ``key_precision`` / ``value_precision`` ``"i8"`` or ``"i4"`` with
    ``quant_group`` channels per fp16 scale in rows stored whole (default 32; a multiple of 8 dividing
    head_dim, checked only when a precision is I8/I4): ``Policy.spark(0.8).with_precision("i8", "i8")``.
    """

    key_prune_ratio: float = 0.0
    selection: Selection = Selection.TOPK
    cumulative_p: float = 0.9
    cumulative_min_keep: int = 1
    cumulative_max_keep: int = 0
    recovery: Recovery = Recovery.MEAN
    sign_bits: bool = True
    key_precision: Precision = Precision.F16
    value_precision: Precision = Precision.F16
    window: int = 32
    seed: int = 0
    threads: int = 0
    attention_scale: float = 0.0
    # token eviction (prefill)
    eviction: Eviction = Eviction.NONE
    evict_budget: int = 512
    pool_kernel: int = 5
    pyramid_ratio: float = 4.0
    sink_tokens: int = 4
    recent_tokens: int = 508
    # structured key pruning and value pruning
    key_pruning: KeyPruning = KeyPruning.SPARK
    value_prune_ratio: float = 0.0
    # quantization (key_precision / value_precision I8 or I4)
    quant_group: int = 32
    # decode-time compression: appended tokens compressed as they age (KVCache.append(..., q=...)),
    # the newest decode_recent kept dense
    compress_decode: bool = False
    decode_recent: int = 32

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "selection", to_enum(Selection, self.selection, "selection"))
        set_(self, "eviction", to_enum(Eviction, self.eviction, "eviction"))
        set_(self, "key_pruning", to_enum(KeyPruning, self.key_pruning, "key_pruning"))
        set_(self, "recovery", to_enum(Recovery, self.recovery, "recovery"))
        set_(self, "key_precision", to_enum(Precision, self.key_precision, "key_precision"))
        set_(self, "value_precision", to_enum(Precision, self.value_precision, "value_precision"))
        if not isinstance(self.sign_bits, (bool, int)):
            raise TypeError(f"sign_bits must be a bool, got {type(self.sign_bits).__name__}")
        if not isinstance(self.compress_decode, (bool, int)):
            raise TypeError(f"compress_decode must be a bool, got {type(self.compress_decode).__name__}")

    @classmethod
    def dense(cls, **fields: Any) -> "Policy":
        """No pruning (r = 0): keys stored whole in ``key_precision``."""
        return cls(key_prune_ratio=0.0, **fields)

    @classmethod
    def spark(
        cls,
        ratio: float,
        recovery: Union[Recovery, str, int] = "mean",
        sign_bits: Optional[bool] = None,
        **fields: Any,
    ) -> "Policy":
        """SparK TOPK: prune ``ratio`` of every prompt key's channels and recover them at attention.

        ``sign_bits``: store the signs of pruned entries; None (the default) means "whenever the
        recovery reads them", i.e. False for ``recovery="none"`` (as Swift's ``.spark``). An explicit
        ``sign_bits=True`` with ``recovery="none"`` is an invalid policy (C reports it).
        """
        recovery = to_enum(Recovery, recovery, "recovery")
        return cls(
            key_prune_ratio=ratio,
            selection=Selection.TOPK,
            recovery=recovery,
            sign_bits=_sign_bits(sign_bits, recovery),
            **fields,
        )

    @classmethod
    def cumulative(
        cls,
        p: float,
        min_keep: int = 1,
        max_keep: int = 0,
        recovery: Union[Recovery, str, int] = "mean",
        sign_bits: Optional[bool] = None,
        **fields: Any,
    ) -> "Policy":
        """SparK with CUMULATIVE selection: keep the fewest channels holding ``p`` of the saliency
        (``sign_bits`` as in :meth:`spark`: None means "unless recovery is none")."""
        recovery = to_enum(Recovery, recovery, "recovery")
        return cls(
            selection=Selection.CUMULATIVE,
            cumulative_p=p,
            cumulative_min_keep=min_keep,
            cumulative_max_keep=max_keep,
            recovery=recovery,
            sign_bits=_sign_bits(sign_bits, recovery),
            **fields,
        )

    @classmethod
    def snapkv(cls, budget: int, pool_kernel: int = 5, **fields: Any) -> "Policy":
        """SnapKV eviction: keep the observation window and the ``budget`` prompt tokens with the
        highest pooled window attention (average pooling of width ``pool_kernel``, odd)."""
        return cls(eviction=Eviction.SNAPKV, evict_budget=budget, pool_kernel=pool_kernel, **fields)

    @classmethod
    def pyramidkv(cls, budget: int, ratio: float = 4.0, pool_kernel: int = 5, **fields: Any) -> "Policy":
        """PyramidKV eviction: SnapKV scoring with budgets falling linearly over the layers, ``budget``
        on average, the first layer's ``ratio`` times the last layer's."""
        return cls(
            eviction=Eviction.PYRAMIDKV, evict_budget=budget, pyramid_ratio=ratio, pool_kernel=pool_kernel, **fields
        )

    @classmethod
    def streaming(cls, sinks: int, recent: int, **fields: Any) -> "Policy":
        """StreamingLLM eviction: keep the first ``sinks`` and the last ``recent`` prompt tokens."""
        return cls(eviction=Eviction.STREAMING, sink_tokens=sinks, recent_tokens=recent, **fields)

    @classmethod
    def think(cls, ratio: float, **fields: Any) -> "Policy":
        """ThinK: prune ``ratio`` of the key channels with one channel set per layer and KV head
        (TOPK, pruned channels are 0: no recovery, no sign bits)."""
        base: dict = dict(selection=Selection.TOPK, recovery=Recovery.NONE, sign_bits=False)
        base.update(fields)  # explicit fields win (an invalid combination is the C library's to report)
        return cls(key_pruning=KeyPruning.THINK, key_prune_ratio=ratio, **base)

    @classmethod
    def snap_spark(
        cls,
        budget: int,
        ratio: float,
        recovery: Union[Recovery, str, int] = "mean",
        sign_bits: Optional[bool] = None,
        pool_kernel: int = 5,
        **fields: Any,
    ) -> "Policy":
        """SnapKV eviction to ``budget`` prompt tokens (plus the window), then SparK pruning of
        ``ratio`` of every surviving key's channels (``sign_bits`` as in :meth:`spark`)."""
        return cls.spark(
            ratio,
            recovery=recovery,
            sign_bits=sign_bits,
            eviction=Eviction.SNAPKV,
            evict_budget=budget,
            pool_kernel=pool_kernel,
            **fields,
        )

    @classmethod
    def quantized(
        cls,
        keys: Union[Precision, str, int] = "i8",
        values: Union[Precision, str, int] = "i8",
        group: int = 32,
        **fields: Any,
    ) -> "Policy":
        """A quantized cache without eviction or pruning: keys and values stored whole in ``keys`` /
        ``values`` precision with one fp16 scale per ``group`` channels.

        ``Policy.quantized("i8", "i8")``: 128 + 8 bytes of K and of V per token at head_dim 128.
        """
        return cls(key_precision=keys, value_precision=values, quant_group=group, **fields)

    def with_precision(
        self,
        keys: Union[Precision, str, int, None] = None,
        values: Union[Precision, str, int, None] = None,
        group: Union[int, None] = None,
    ) -> "Policy":
        """A copy with key/value storage precisions (and quant_group) changed; None keeps the current
        one. ``Policy.snap_spark(512, 0.8).with_precision("i8", "i4")``."""
        changes: dict = {}
        if keys is not None:
            changes["key_precision"] = keys
        if values is not None:
            changes["value_precision"] = values
        if group is not None:
            changes["quant_group"] = group
        return self.replace(**changes)

    @property
    def is_quantized(self) -> bool:
        """Whether keys or values are stored as I8/I4."""
        return self.key_precision.is_quantized or self.value_precision.is_quantized

    def to_c(self) -> _lib.CPolicy:
        return _lib.CPolicy(
            ctypes.sizeof(_lib.CPolicy),
            _float_field(self, "key_prune_ratio"),
            int(self.selection),
            _float_field(self, "cumulative_p"),
            _int_field(self, "cumulative_min_keep", 0, U32),
            _int_field(self, "cumulative_max_keep", 0, U32),
            int(self.recovery),
            1 if self.sign_bits else 0,
            int(self.key_precision),
            int(self.value_precision),
            _int_field(self, "window", 0, U32),
            _int_field(self, "seed", 0, U64),
            _int_field(self, "threads", -(2**31), 2**31 - 1),
            _float_field(self, "attention_scale"),
            int(self.eviction),
            _int_field(self, "evict_budget", 0, U32),
            _int_field(self, "pool_kernel", 0, U32),
            _float_field(self, "pyramid_ratio"),
            _int_field(self, "sink_tokens", 0, U32),
            _int_field(self, "recent_tokens", 0, U32),
            int(self.key_pruning),
            _float_field(self, "value_prune_ratio"),
            _int_field(self, "quant_group", 0, U32),
            1 if self.compress_decode else 0,
            _int_field(self, "decode_recent", 0, U32),
        )

    @classmethod
    def from_c(cls, c: _lib.CPolicy) -> "Policy":
        return cls(
            key_prune_ratio=c.key_prune_ratio,
            selection=Selection(c.selection),
            cumulative_p=c.cumulative_p,
            cumulative_min_keep=c.cumulative_min_keep,
            cumulative_max_keep=c.cumulative_max_keep,
            recovery=Recovery(c.recovery),
            sign_bits=bool(c.sign_bits),
            key_precision=Precision(c.key_precision),
            value_precision=Precision(c.value_precision),
            window=c.window,
            seed=c.seed,
            threads=c.threads,
            attention_scale=c.attention_scale,
            eviction=Eviction(c.eviction),
            evict_budget=c.evict_budget,
            pool_kernel=c.pool_kernel,
            pyramid_ratio=c.pyramid_ratio,
            sink_tokens=c.sink_tokens,
            recent_tokens=c.recent_tokens,
            key_pruning=KeyPruning(c.key_pruning),
            value_prune_ratio=c.value_prune_ratio,
            quant_group=c.quant_group,
            compress_decode=bool(c.compress_decode),
            decode_recent=c.decode_recent,
        )

    def validate(self, head_dim: int) -> "Policy":
        """Check the policy against a head dimension in C; returns self or raises the C error."""
        head_dim = operator.index(head_dim)
        if not 0 <= head_dim <= U32:
            raise error_for(Status.HEAD_DIM, f"head_dim {head_dim} is not a multiple of 8 in [8, 256]")
        lib = _lib.load()
        c_policy = self.to_c()
        status = lib.sparkv_policy_validate(ctypes.byref(c_policy), head_dim)
        if status != 0:
            raise error_for(status, lib.sparkv_last_error(None).decode("utf-8", "replace"))
        return self

    def replace(self, **changes: Any) -> "Policy":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, text: str) -> "Policy":
        """The policy of a compact string, the grammar of the CLI's ``--policy`` and of Swift's
        ``CompressionPolicy(parsing:)`` (one table tests all three: Tests/policy-grammar.json)::

            Policy.parse("snapkv(512)+spark(0.8)")        # == Policy.snap_spark(512, 0.8)
            Policy.parse("think(0.5)+vprune(0.5)+kprec(i8)")

        Only the syntax is checked here (raises InvalidPolicyError naming the term); ranges are
        checked by :meth:`validate` or when a cache is created."""
        from .compact import parse_fields

        return cls(**parse_fields(text))

    def compact(self) -> str:
        """The compact string of this policy (``Policy.parse(p.compact()) == p``), as Swift writes it:
        ``Policy.snap_spark(512, 0.8).compact() == "snapkv(512)+spark(0.8,mean,signed)"``."""
        from .compact import format_policy

        return format_policy(self)

    @classmethod
    def from_json(cls, document: Union[str, bytes, Dict[str, Any]]) -> "Policy":
        """The policy of a JSON document (or parsed dict) as Swift's ``CompressionPolicy`` and
        ``sparkv policy`` write it: C field names as keys, ``null`` for "off"/"default", missing
        keys at their defaults. Raises InvalidPolicyError for a malformed document."""
        from .policy_json import from_json_obj

        return cls(**from_json_obj(document))

    def to_json(self) -> Dict[str, Any]:
        """This policy as a JSON-ready dict, the form :meth:`from_json` and Swift read
        (``json.dumps(policy.to_json())``)."""
        from .policy_json import to_json_dict

        return to_json_dict(self)

    def __str__(self) -> str:
        return self.compact()
