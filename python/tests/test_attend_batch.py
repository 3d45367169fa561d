"""attend_batch: one call over many sequences' caches, each row bit-identical to that cache's own
attend; failures name the sequence and leave out untouched."""

import numpy as np
import pytest

import sparkv
from sparkv import KVCache, Policy, Shape

SHAPE = Shape(n_layers=1, n_q_heads=4, n_kv_heads=2, head_dim=64, capacity=900)


def build(rng, policy, n):
    c = KVCache(SHAPE, policy)
    k = rng.standard_normal((2, n, 64), dtype=np.float32)
    c.prefill(0, k, rng.standard_normal((2, n, 64), dtype=np.float32),
              rng.standard_normal((4, min(n, 16), 64), dtype=np.float32))
    return c


def test_rows_equal_each_caches_own_attend(rng):
    caches = [build(rng, Policy.spark(0.8), 700), build(rng, Policy(), 3), build(rng, Policy.think(0.5), 300)]
    caches.append(caches[0])
    q = rng.standard_normal((4, 4, 64), dtype=np.float32)
    got = sparkv.attend_batch(caches, 0, q)
    for i, c in enumerate(caches):
        assert got[i].tobytes() == c.attend(0, q[i]).tobytes()


def test_failures_name_the_sequence_and_write_nothing(rng):
    caches = [build(rng, Policy(), 10), KVCache(SHAPE, Policy())]  # the second holds nothing
    q = rng.standard_normal((2, 4, 64), dtype=np.float32)
    out = np.full((2, 4, 64), 7.0, dtype=np.float32)
    with pytest.raises(sparkv.EmptyLayerError, match="sequence 1"):
        sparkv.attend_batch(caches, 0, q, out=out)
    assert (out == 7.0).all()
    other = KVCache(Shape(n_layers=1, n_q_heads=8, n_kv_heads=2, head_dim=64, capacity=10), Policy())
    with pytest.raises(ValueError, match="must have shape"):
        sparkv.attend_batch(caches[:1], 0, q)
    with pytest.raises(sparkv.InvalidShapeError, match="caches\\[1\\]"):
        sparkv.attend_batch([caches[0], other], 0, q)
    with pytest.raises(ValueError, match="at least one"):
        sparkv.attend_batch([], 0, q)
