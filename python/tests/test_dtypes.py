"""float16 / bfloat16 inputs to prefill and append: read in place, widened exactly, so the cache
equals the one built from their float32 values; other dtypes and mixed dtypes are refused."""

import numpy as np
import pytest

import sparkv
from sparkv import KVCache, Policy, Shape

N_Q, N_KV, D, N, W = 4, 2, 64, 300, 16
SHAPE = Shape(n_layers=1, n_q_heads=N_Q, n_kv_heads=N_KV, head_dim=D, capacity=N + 2)

POLICIES = {
    "spark": lambda: Policy.spark(0.8, window=W),
    "think": lambda: Policy.think(0.5, window=W),
    "snapkv": lambda: Policy.snapkv(100, window=W),
}


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def everything(cache, n_tokens):
    q = np.linspace(-1, 1, N_Q * D, dtype=np.float32).reshape(N_Q, D)
    rows = [cache.recovered_key(0, h, t).tobytes() + cache.value(0, h, t).tobytes()
            for h in range(N_KV) for t in range(n_tokens)]
    return cache.memory_report(), rows, cache.attend(0, q).tobytes()


def inputs(rng):
    return (rng.standard_normal((N_KV, N, D), dtype=np.float32) * 2,
            rng.standard_normal((N_KV, N, D), dtype=np.float32),
            rng.standard_normal((N_Q, W, D), dtype=np.float32),
            rng.standard_normal((N_KV, D), dtype=np.float32),
            rng.standard_normal((N_KV, D), dtype=np.float32))


def build(policy, arrays, **kw):
    c = KVCache(SHAPE, policy)
    k, v, q, ka, va = arrays
    c.prefill(0, k, v, q, **kw)
    c.append(0, ka, va, **kw)
    return c


@pytest.mark.parametrize("name", list(POLICIES))
def test_float16_inputs_give_the_cache_of_their_float32_values(rng, name):
    half = [a.astype(np.float16) for a in inputs(rng)]
    typed = build(POLICIES[name](), half)
    exact = build(POLICIES[name](), [a.astype(np.float32) for a in half])
    n = typed.tokens(0)
    assert everything(typed, n) == everything(exact, n)


@pytest.mark.parametrize("name", list(POLICIES))
def test_bfloat16_bit_patterns_give_the_cache_of_their_float32_values(rng, name):
    bits = [bf16_bits(a) for a in inputs(rng)]
    typed = build(POLICIES[name](), bits, bits16="bfloat16")
    exact = build(POLICIES[name](), [bf16_values(b) for b in bits])
    n = typed.tokens(0)
    assert everything(typed, n) == everything(exact, n)


def test_ml_dtypes_bfloat16_arrays_are_read_as_bfloat16(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")  # optional dependency: the uint16 path covers the C side
    arrays = [a.astype(ml_dtypes.bfloat16) for a in inputs(rng)]
    typed = build(POLICIES["spark"](), arrays)
    exact = build(POLICIES["spark"](), [a.astype(np.float32) for a in arrays])
    assert everything(typed, typed.tokens(0)) == everything(exact, exact.tokens(0))


def test_uint16_without_bits16_is_refused(rng):
    k, v, q, _, _ = inputs(rng)
    c = KVCache(SHAPE, Policy.spark(0.8, window=W))
    with pytest.raises(TypeError, match="bits16"):
        c.prefill(0, bf16_bits(k), bf16_bits(v), bf16_bits(q))
    assert c.tokens(0) == 0


def test_mixed_dtypes_are_refused(rng):
    k, v, q, ka, va = inputs(rng)
    c = KVCache(SHAPE, Policy.spark(0.8, window=W))
    with pytest.raises(TypeError, match="values must have the dtype of keys"):
        c.prefill(0, k.astype(np.float16), v, q.astype(np.float16))
    with pytest.raises(TypeError, match="q_window must have the dtype of keys"):
        c.prefill(0, k.astype(np.float16), v.astype(np.float16), q)
    c.prefill(0, k, v, q)
    with pytest.raises(TypeError, match="v must have the dtype of k"):
        c.append(0, ka.astype(np.float16), va)
    with pytest.raises(TypeError, match="dtype float32, float16, bfloat16"):
        c.append(0, ka.astype(np.float64), va.astype(np.float64))
    assert c.tokens(0) == N


def test_sixteen_bit_inf_and_out_of_range_values_fail_in_c(rng):
    k, v, q, _, _ = inputs(rng)
    c = KVCache(SHAPE, Policy.spark(0.8, window=W))
    k16 = k.astype(np.float16)
    k16[1, 3, 7] = np.inf
    with pytest.raises(sparkv.NonFiniteError, match="keys contain Inf at head 1, row 3, channel 7"):
        c.prefill(0, k16, v.astype(np.float16), q.astype(np.float16))
    vb = bf16_bits(v)
    vb[0, 0, 5] = bf16_bits(np.array([1e5], dtype=np.float32))[0]
    with pytest.raises(sparkv.RangeError, match="values contain 99840"):
        c.prefill(0, bf16_bits(k), vb, bf16_bits(q), bits16="bfloat16")
    assert c.tokens(0) == 0
