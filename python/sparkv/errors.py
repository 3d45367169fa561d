"""Status codes and the exceptions that carry them.

Every failing C call raises a subclass of :class:`SparKVError` whose ``status`` is the C
``sparkv_status`` and whose ``message`` is the C library's detail (``sparkv_last_error``). Wrong
Python inputs (dtype, layout, shape) are caught before C is called and raise ``TypeError`` /
``ValueError`` instead.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Dict, Type, Union


class Status(IntEnum):
    """sparkv_status. Values are stable."""

    OK = 0
    NULL_POINTER = 1
    INVALID_SHAPE = 2
    HEAD_DIM = 3
    GQA = 4
    INVALID_POLICY = 5
    NON_FINITE = 6
    LAYER = 7
    CAPACITY = 8
    STATE = 9
    WINDOW = 10
    OUT_OF_MEMORY = 11
    UNSUPPORTED = 12
    EMPTY = 13
    STRUCT_SIZE = 14
    INDEX = 15
    RANGE = 16
    OVERFLOW = 17
    DTYPE = 18
    FORMAT = 19
    IO = 20


class SparKVError(Exception):
    """A SparKV call failed. ``status`` is the C status, ``message`` the C library's detail."""

    def __init__(self, status: Union[Status, int], message: str):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.message = message
        super().__init__(message)

    def __repr__(self) -> str:
        name = self.status.name if isinstance(self.status, Status) else str(self.status)
        return f"{type(self).__name__}(status={name}, message={self.message!r})"


class NullPointerError(SparKVError):
    """A required pointer was NULL (a binding bug if raised from Python)."""


class InvalidShapeError(SparKVError):
    """A size is zero or sizes are inconsistent."""


class HeadDimError(SparKVError):
    """head_dim is not a multiple of 8 in [8, 256]."""


class GQAError(SparKVError):
    """n_q_heads is not a multiple of n_kv_heads."""


class InvalidPolicyError(SparKVError):
    """A policy field is out of range or an invalid combination."""


class NonFiniteError(SparKVError):
    """An input tensor contains NaN or Inf."""


class LayerError(SparKVError):
    """Layer index out of range."""


class CapacityError(SparKVError):
    """The layer's token capacity would be exceeded."""


class StateError(SparKVError):
    """Call not allowed in the layer's state (prefill twice, ...)."""


class WindowError(SparKVError):
    """Observation window is empty or longer than the prompt."""


class OutOfMemoryError(SparKVError):
    """An allocation failed inside the library."""


class UnsupportedError(SparKVError):
    """Requested kernel is not supported by this CPU or build."""


class EmptyLayerError(SparKVError):
    """attend on a layer that holds no token."""


class StructSizeError(SparKVError):
    """struct_size is not one the library knows (binding/library mismatch)."""


class IndexOutOfRangeError(SparKVError):
    """A head or token index is out of range."""


class RangeError(SparKVError):
    """A finite input is beyond what its storage precision holds (a key of 7e4 stored as f16), or a
    recovery statistic would exceed fp16."""


class AttentionOverflowError(SparKVError):
    """attend overflowed float32: a score or an output is not finite although every input is.
    The output array was not written."""


class ElementTypeError(SparKVError):
    """An input element type is not float32, float16 or bfloat16 (the binding checks dtypes
    first, so this comes only from a mismatched C library)."""


class FormatError(SparKVError):
    """A saved cache is malformed: truncated, corrupt (checksum), not a SparKV file, of another
    format version, or holding contents the library could not have written."""


class FileIOError(SparKVError):
    """A file cannot be opened, read, written or renamed."""


ERROR_CLASSES: Dict[Status, Type[SparKVError]] = {
    Status.NULL_POINTER: NullPointerError,
    Status.INVALID_SHAPE: InvalidShapeError,
    Status.HEAD_DIM: HeadDimError,
    Status.GQA: GQAError,
    Status.INVALID_POLICY: InvalidPolicyError,
    Status.NON_FINITE: NonFiniteError,
    Status.LAYER: LayerError,
    Status.CAPACITY: CapacityError,
    Status.STATE: StateError,
    Status.WINDOW: WindowError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.EMPTY: EmptyLayerError,
    Status.STRUCT_SIZE: StructSizeError,
    Status.INDEX: IndexOutOfRangeError,
    Status.RANGE: RangeError,
    Status.OVERFLOW: AttentionOverflowError,
    Status.DTYPE: ElementTypeError,
    Status.FORMAT: FormatError,
    Status.IO: FileIOError,
}


def error_for(status: int, message: str) -> SparKVError:
    """The exception for a C status (SparKVError itself for codes this binding does not know)."""
    try:
        cls = ERROR_CLASSES.get(Status(status), SparKVError)
    except ValueError:
        cls = SparKVError
    return cls(status, message)
