"""Saved caches: KVCache.save / load / to_bytes / from_bytes round trips and malformed files."""

import numpy as np
import pytest

import sparkv
from sparkv import KVCache, Policy, Shape


def build(policy, rng, prompt=300, appended=3, shape=Shape(2, 4, 2, 64, 1024)):
    cache = KVCache(shape, policy)
    for layer in range(shape.n_layers):
        k = rng.standard_normal((shape.n_kv_heads, prompt, shape.head_dim), dtype=np.float32)
        v = rng.standard_normal((shape.n_kv_heads, prompt, shape.head_dim), dtype=np.float32)
        q = rng.standard_normal((shape.n_q_heads, 16, shape.head_dim), dtype=np.float32)
        cache.prefill(layer, k, v, q)
        for _ in range(appended):
            cache.append(layer, np.ascontiguousarray(k[:, 0]), np.ascontiguousarray(v[:, 1]))
    return cache


def assert_same(a, b, rng, layers):
    for layer in layers:
        assert a.memory_report(layer) == b.memory_report(layer)
        q = rng.standard_normal((a.shape.n_q_heads, a.shape.head_dim), dtype=np.float32)
        assert a.attend(layer, q).tobytes() == b.attend(layer, q).tobytes()


@pytest.mark.parametrize(
    "policy",
    [Policy.dense(), Policy.spark(0.75), Policy.spark(0.5, recovery="gaussian", key_precision="i8", value_precision="i4")],
    ids=["dense", "spark", "spark-gauss-i8-i4"],
)
def test_save_load_round_trip_is_bit_identical(tmp_path, rng, policy):
    a = build(policy, rng)
    path = tmp_path / "prefix.svc"
    a.save(path)
    b = KVCache.load(path, expected_shape=a.shape)
    assert b.shape == a.shape and b.policy == a.policy
    assert_same(a, b, rng, range(2))
    # appends continue identically
    k = rng.standard_normal((2, 64), dtype=np.float32)
    a.append(0, k, k)
    b.append(0, k, k)
    assert_same(a, b, rng, [0])
    assert a.to_bytes() == KVCache.from_bytes(a.to_bytes()).to_bytes()


def test_layer_range_loads_other_layers_empty(rng):
    a = build(Policy.spark(0.5), rng)
    b = KVCache.from_bytes(a.to_bytes(first_layer=1, n_layers=1))
    assert b.tokens(0) == 0 and b.tokens(1) == a.tokens(1)
    assert_same(a, b, rng, [1])


def test_malformed_files_raise_format_error(tmp_path, rng):
    data = build(Policy.spark(0.5), rng, prompt=20, appended=1).to_bytes()
    with pytest.raises(sparkv.FormatError):
        KVCache.from_bytes(data[:-1])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x20
    with pytest.raises(sparkv.FormatError, match="checksum"):
        KVCache.from_bytes(bytes(flipped))
    with pytest.raises(sparkv.FormatError, match="magic"):
        KVCache.from_bytes(b"NOTSPARK" + data[8:])
    with pytest.raises(sparkv.FileIOError):
        KVCache.load(tmp_path / "missing.svc")
    with pytest.raises(sparkv.InvalidShapeError):
        KVCache.from_bytes(data, expected_shape=Shape(2, 4, 1, 64, 1024))
    with pytest.raises(sparkv.CapacityError):
        KVCache.from_bytes(data, expected_shape=Shape(2, 4, 2, 64, 8))
    with pytest.raises(TypeError):
        KVCache.from_bytes("not bytes")
