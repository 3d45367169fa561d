"""Every array the binding hands to C, for reading (keys, values, q_window, k, v, q) or writing
(attend's out): each wrong buffer (read-only out, wrong dtype, object arrays, 0-d, wrong shape,
strided, misaligned, masked, huge shapes) is refused with a clear TypeError / ValueError (or the
C library's typed error for sizes only it can judge), in bounded time, without a crash, leaving the
cache and the caller's buffers as they were."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import sparkv
from helpers import observable_state
from sparkv import KVCache, Policy, Shape

N_Q, N_KV, D, N, W = 4, 2, 64, 40, 8
SHAPE = Shape(n_layers=2, n_q_heads=N_Q, n_kv_heads=N_KV, head_dim=D, capacity=64)
SECONDS = 2.0  # every refusal is immediate; this only catches a call that scans a huge buffer


def f32(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


@pytest.fixture
def cache(rng):
    """Layer 0: a pruned 40-token prompt + 1 appended token; layer 1 empty."""
    c = KVCache(SHAPE, Policy.spark(0.5, window=W))
    c.prefill(0, f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, W, D))
    c.append(0, f32(rng, N_KV, D), f32(rng, N_KV, D))
    yield c
    c.close()


def state(cache):
    """Everything observable, to check that failures change nothing."""
    return observable_state(cache, N)


# ---- attend's out must be writable --------------------------------------------------------------


def test_attend_refuses_a_read_only_out(cache, rng):
    """Before the fix, C wrote through the pointer of a writeable=False array."""
    before = state(cache)
    out = np.zeros((N_Q, D), dtype=np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        cache.attend(0, f32(rng, N_Q, D), out=out)
    assert not out.any()
    assert state(cache) == before


def test_attend_refuses_an_out_over_immutable_bytes(cache, rng):
    """Before the fix, attend wrote into a Python bytes object behind np.frombuffer."""
    before = state(cache)
    raw = bytes(N_Q * D * 4)
    out = np.frombuffer(raw, dtype=np.float32).reshape(N_Q, D)
    with pytest.raises(ValueError, match="out must be writeable"):
        cache.attend(0, f32(rng, N_Q, D), out=out)
    assert raw == bytes(N_Q * D * 4)
    assert state(cache) == before


def test_attend_into_a_read_only_memmap_is_an_error_not_a_crash(tmp_path):
    """Before the fix, a mode="r" np.memmap as out killed the process with SIGSEGV (so this runs in a
    child process)."""
    path = tmp_path / "out.f32"
    np.full((N_Q, D), 3.0, dtype=np.float32).tofile(path)
    script = textwrap.dedent(
        f"""
        import numpy as np, sparkv
        shape = sparkv.Shape(1, {N_Q}, {N_KV}, {D}, 8)
        rng = np.random.default_rng(1)
        with sparkv.KVCache(shape, sparkv.Policy.dense()) as cache:
            cache.prefill(0, rng.standard_normal(({N_KV}, 4, {D}), dtype=np.float32),
                          rng.standard_normal(({N_KV}, 4, {D}), dtype=np.float32))
            out = np.memmap({str(path)!r}, dtype=np.float32, mode="r", shape=({N_Q}, {D}))
            try:
                cache.attend(0, rng.standard_normal(({N_Q}, {D}), dtype=np.float32), out=out)
                print("WROTE")
            except ValueError as exc:
                print("REFUSED", exc)
        """
    )
    env = dict(os.environ)
    package_root = str(Path(sparkv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    if os.sep in sparkv.library_path():
        env["SPARKV_LIBRARY"] = sparkv.library_path()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("REFUSED out must be writeable"), proc.stdout + proc.stderr
    assert (np.fromfile(path, dtype=np.float32) == 3.0).all()


def test_a_writable_memmap_out_is_written(cache, rng, tmp_path):
    q = f32(rng, N_Q, D)
    out = np.memmap(tmp_path / "out.f32", dtype=np.float32, mode="w+", shape=(N_Q, D))
    assert cache.attend(0, q, out=out) is out
    assert np.array_equal(np.asarray(out), cache.attend(0, q))


def test_read_only_inputs_are_accepted(rng):
    """C only reads keys, values, q_window, k, v and q: read-only arrays are fine there."""

    def ro(a):
        a.flags.writeable = False
        return a

    with KVCache(SHAPE, Policy.spark(0.5, window=W)) as a, KVCache(SHAPE, Policy.spark(0.5, window=W)) as b:
        keys, values, qw, k, v, q = (f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, W, D),
                                     f32(rng, N_KV, D), f32(rng, N_KV, D), f32(rng, N_Q, D))
        a.prefill(0, keys, values, qw)
        a.append(0, k, v)
        b.prefill(0, ro(keys.copy()), ro(values.copy()), ro(qw.copy()))
        b.append(0, ro(k.copy()), ro(v.copy()))
        assert np.array_equal(a.attend(0, q), b.attend(0, ro(q.copy())))


# ---- every buffer argument against every kind of wrong buffer ----------------------------------

# name -> (expected shape, how to call with that argument replaced)
ARGS = {
    "keys": ((N_KV, N, D), lambda c, r, x: c.prefill(1, x, f32(r, N_KV, N, D), f32(r, N_Q, W, D))),
    "values": ((N_KV, N, D), lambda c, r, x: c.prefill(1, f32(r, N_KV, N, D), x, f32(r, N_Q, W, D))),
    "q_window": ((N_Q, W, D), lambda c, r, x: c.prefill(1, f32(r, N_KV, N, D), f32(r, N_KV, N, D), x)),
    "k": ((N_KV, D), lambda c, r, x: c.append(1, x, f32(r, N_KV, D))),
    "v": ((N_KV, D), lambda c, r, x: c.append(1, f32(r, N_KV, D), x)),
    "q": ((N_Q, D), lambda c, r, x: c.attend(0, x)),
    "out": ((N_Q, D), lambda c, r, x: c.attend(0, f32(r, N_Q, D), out=x)),
}


def misaligned(shape):
    raw = np.zeros(int(np.prod(shape)) * 4 + 1, dtype=np.uint8)
    a = raw[1:].view(np.float32).reshape(shape)
    assert not a.flags.aligned
    return a


def huge(shape, axis):
    """A C-contiguous-looking float32 view claiming 2**40 rows along `axis` over 4 bytes of memory."""
    shape = list(shape)
    shape[axis] = 2**40
    strides = [4 * int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
    a = as_strided(np.zeros(1, dtype=np.float32), shape=tuple(shape), strides=tuple(strides), writeable=False)
    assert a.flags.c_contiguous
    return a


# kind -> (make(shape), expected exception, message pattern)
KINDS = {
    "list": (lambda s: np.zeros(s, np.float32).tolist(), TypeError, "numpy.ndarray"),
    "none": (lambda s: None, TypeError, "numpy.ndarray"),
    "bytes": (lambda s: bytes(int(np.prod(s)) * 4), TypeError, "numpy.ndarray"),
    "float64": (lambda s: np.zeros(s, np.float64), TypeError, "dtype float32"),
    "float16": (lambda s: np.zeros(s, np.float16), TypeError, "dtype"),  # the others are float32
    "int32": (lambda s: np.zeros(s, np.int32), TypeError, "dtype float32"),
    "complex64": (lambda s: np.zeros(s, np.complex64), TypeError, "dtype float32"),
    "object": (lambda s: np.full(s, 1.0, dtype=object), TypeError, "dtype float32"),
    "big-endian": (lambda s: np.zeros(s, np.dtype(">f4")), TypeError, "dtype float32"),
    "structured": (lambda s: np.zeros(s, np.dtype([("x", "<f4")])), TypeError, "dtype float32"),
    "0-d": (lambda s: np.array(1.0, np.float32), ValueError, "must have shape"),
    "flat": (lambda s: np.zeros(int(np.prod(s)), np.float32), ValueError, "must have shape"),
    "extra-axis": (lambda s: np.zeros((1,) + tuple(s), np.float32), ValueError, "must have shape"),
    "head_dim+8": (lambda s: np.zeros(tuple(s[:-1]) + (s[-1] + 8,), np.float32), ValueError, "must have shape"),
    "empty-heads": (lambda s: np.zeros((0,) + tuple(s[1:]), np.float32), ValueError, "must have shape"),
    "strided": (lambda s: np.zeros(tuple(s[:-1]) + (2 * s[-1],), np.float32)[..., ::2], ValueError, "C-contiguous"),
    "fortran": (lambda s: np.asfortranarray(np.zeros(s, np.float32)), ValueError, "C-contiguous"),
    "broadcast": (lambda s: np.broadcast_to(np.float32(1), s), ValueError, "C-contiguous"),
    "misaligned": (misaligned, ValueError, "aligned"),
    "masked": (lambda s: np.ma.masked_array(np.zeros(s, np.float32), mask=True), TypeError, "masked"),
    "huge-heads": (lambda s: huge(s, 0), ValueError, "must have shape"),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("arg", list(ARGS))
def test_wrong_buffers_are_refused_cleanly(cache, rng, arg, kind):
    shape, call = ARGS[arg]
    make, error, message = KINDS[kind]
    if kind == "none" and arg == "q_window":
        pytest.skip("q_window=None is allowed (and refused by C for this pruning policy: test_errors)")
    if kind == "none" and arg == "out":
        pytest.skip("out=None means: allocate")
    before = state(cache)
    x = make(shape)
    small = isinstance(x, np.ndarray) and x.dtype != object and x.nbytes < 2**20
    snapshot = np.array(x, copy=True) if small else None
    start = time.monotonic()
    with pytest.raises(error, match=message):
        call(cache, rng, x)
    assert time.monotonic() - start < SECONDS
    assert state(cache) == before
    if snapshot is not None:  # the caller's buffer is untouched
        assert np.asarray(x).tobytes() == snapshot.tobytes()


@pytest.mark.parametrize(
    "arg, axis, error",
    [
        ("keys", 1, sparkv.CapacityError),  # 2**40 prompt tokens: more than the capacity
        ("q_window", 1, sparkv.WindowError),  # 2**40 window queries: longer than the prompt
    ],
)
def test_huge_token_counts_fail_in_c_before_any_read(cache, rng, arg, axis, error):
    """Sizes only C can judge (prompt length, window length) come back as its typed error, at once:
    the sizes are checked before the (here fictitious) memory is touched."""
    before = state(cache)
    x = huge(ARGS[arg][0], axis)
    start = time.monotonic()
    with pytest.raises(error):
        if arg == "keys":
            cache.prefill(1, x, huge((N_KV, N, D), 1))
        else:
            ARGS[arg][1](cache, rng, x)
    assert time.monotonic() - start < SECONDS
    assert state(cache) == before


def test_failed_attend_leaves_out_untouched(cache, rng):
    """A C failure (NaN query) or a refusal (wrong q) writes nothing into out."""
    out = np.full((N_Q, D), 7.0, dtype=np.float32)
    q = f32(rng, N_Q, D)
    q[2, 5] = np.nan
    with pytest.raises(sparkv.NonFiniteError):
        cache.attend(0, q, out=out)
    with pytest.raises(TypeError):
        cache.attend(0, q.astype(np.float64), out=out)
    with pytest.raises(sparkv.EmptyLayerError):
        cache.attend(1, f32(rng, N_Q, D), out=out)
    assert (out == 7.0).all()


def test_out_overlapping_q_in_any_way_is_refused(cache, rng):
    buf = f32(rng, 2 * N_Q, D)
    before = buf.copy()
    with pytest.raises(ValueError, match="overlap"):
        cache.attend(0, buf[:N_Q], out=buf[:N_Q])
    with pytest.raises(ValueError, match="overlap"):
        flat = buf.reshape(-1)
        cache.attend(0, flat[: N_Q * D].reshape(N_Q, D), out=flat[D : D + N_Q * D].reshape(N_Q, D))
    assert np.array_equal(buf, before)
    cache.attend(0, buf[:N_Q], out=buf[N_Q:])  # adjacent, not overlapping: fine


def test_attention_overflow_leaves_out_untouched():
    """A C failure inside attend (here float32 overflow of the scores, status 17) writes nothing into
    out."""
    policy = Policy.dense(key_precision="f32", value_precision="f32")
    with KVCache(Shape(1, 1, 1, 8, 4), policy) as cache:
        cache.append(0, np.full((1, 8), 1e20, np.float32), np.ones((1, 8), np.float32))
        out = np.full((1, 8), 7.0, np.float32)
        with pytest.raises(sparkv.SparKVError) as info:
            cache.attend(0, np.full((1, 8), 1e20, np.float32), out=out)
        assert int(info.value.status) == 17  # SPARKV_ERR_OVERFLOW
        assert (out == 7.0).all()
