"""Decode-time compression from Python: appended tokens compressed as they age (compress_decode),
the newest decode_recent dense; bytes as planned, attention equal to a float64 attention over the
cache's own stored tokens."""

import numpy as np
import pytest

import sparkv
from sparkv import KVCache, Policy, Shape

N_Q, N_KV, D, P, A = 4, 2, 64, 300, 600
SHAPE = Shape(n_layers=1, n_q_heads=N_Q, n_kv_heads=N_KV, head_dim=D, capacity=P + A)


def attention_over_stored(cache, q):
    n = cache.tokens(0)
    out = np.zeros((N_Q, D))
    for h in range(N_KV):
        k = np.stack([cache.recovered_key(0, h, t) for t in range(n)]).astype(np.float64)
        v = np.stack([cache.value(0, h, t) for t in range(n)]).astype(np.float64)
        for i in range(N_Q // N_KV):
            s = k @ q[h * (N_Q // N_KV) + i].astype(np.float64) / np.sqrt(D)
            w = np.exp(s - s.max())
            out[h * (N_Q // N_KV) + i] = (w / w.sum()) @ v
    return out


@pytest.mark.parametrize("recent", [0, 32])
def test_aged_tokens_are_compressed_and_attention_reads_them(rng, recent):
    policy = Policy.spark(0.8, compress_decode=True, decode_recent=recent, window=16)
    assert Policy.parse(policy.compact()) == policy
    assert "decode(" in policy.compact()
    cache = KVCache(SHAPE, policy)
    cache.prefill(0, rng.standard_normal((N_KV, P, D), dtype=np.float32),
                  rng.standard_normal((N_KV, P, D), dtype=np.float32),
                  rng.standard_normal((N_Q, 16, D), dtype=np.float32))
    for _ in range(A):
        cache.append(0, rng.standard_normal((N_KV, D), dtype=np.float32),
                     rng.standard_normal((N_KV, D), dtype=np.float32),
                     rng.standard_normal((N_Q, D), dtype=np.float32))
    report = cache.memory_report()
    assert report == sparkv.plan_memory(SHAPE, policy, P, A)
    off = Policy.spark(0.8, window=16)
    assert report["total_bytes"] < sparkv.plan_memory(SHAPE, off, P, A)["total_bytes"]
    # the first aged token (prompt + 0) keeps 13 of 64 channels; the newest stays dense
    assert int(cache.kept_mask(0, 0, P).sum()) == 13
    assert cache.kept_mask(0, 0, P + A - 1).all()
    q = rng.standard_normal((N_Q, D), dtype=np.float32)
    np.testing.assert_allclose(cache.attend(0, q), attention_over_stored(cache, q), rtol=2e-4, atol=2e-5)


def test_a_non_finite_query_is_refused(rng):
    cache = KVCache(SHAPE, Policy.spark(0.8, compress_decode=True))
    k = rng.standard_normal((N_KV, D), dtype=np.float32)
    q = np.full((N_Q, D), np.nan, dtype=np.float32)
    with pytest.raises(sparkv.NonFiniteError):
        cache.append(0, k, k, q)
    assert cache.tokens(0) == 0
