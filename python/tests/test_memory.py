"""The memory report: the documented formula, per layer and summed."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import sparkv
from helpers import make_prompt, ref_policy
from sparkv import KVCache, Policy, Shape


def test_paper_setting_costs_86_bytes_of_keys_per_token(rng):
    """r = 0.8, D = 128, fp16, MEAN with signs: 26 * 2 + 16 + 16 + 2 = 86 bytes of K per token."""
    n, n_kv = 500, 2
    with KVCache(Shape(1, 8, n_kv, 128, n), Policy.spark(0.8)) as cache:
        keys, values, qw = make_prompt(rng, 8, n_kv, n, 32, 128)
        cache.prefill(0, keys, values, qw)
        m = cache.memory_report(0)
    per_head_meta = n_kv * (128 * 4 + 4)
    assert m["key_bytes"] + m["key_meta_bytes"] - per_head_meta == 86 * n * n_kv
    assert m["value_bytes"] == n * n_kv * 128 * 2
    assert m["dense_bytes"] == n * n_kv * 128 * 4
    assert m["n_tokens"] == n  # per KV head
    assert m["value_meta_bytes"] == 0


@pytest.mark.parametrize(
    "policy",
    [
        Policy.dense(),
        Policy.dense(key_precision="f32", value_precision="bf16"),
        Policy.spark(0.5, recovery="none", sign_bits=False),
        Policy.spark(0.75, recovery="exponential", sign_bits=False, key_precision="f32"),
        Policy.spark(0.25, recovery="gaussian"),
        Policy.cumulative(0.7, min_keep=4, max_keep=48),
    ],
    ids=["dense", "dense-f32-bf16", "none", "exponential", "gaussian", "cumulative"],
)
def test_report_follows_the_formula_and_sums_over_layers(rng, policy):
    d, n_q, n_kv = 64, 4, 2
    layout = [(300, 3), (20, 0), (0, 2), (0, 0)]  # (prompt, appended) per layer
    reports = []
    with KVCache(Shape(len(layout), n_q, n_kv, d, 400), policy) as cache:
        for layer, (n_prompt, n_append) in enumerate(layout):
            kept = 0
            if n_prompt:
                keys, values, qw = make_prompt(rng, n_q, n_kv, n_prompt, 16, d)
                cache.prefill(layer, keys, values, qw)
                kept = sum(
                    int(cache.kept_mask(layer, h, t).sum()) for h in range(n_kv) for t in range(n_prompt)
                )
            for _ in range(n_append):
                cache.append(layer, rng.standard_normal((n_kv, d), dtype=np.float32),
                             rng.standard_normal((n_kv, d), dtype=np.float32))
            got = cache.memory_report(layer)
            rp = ref_policy(policy)
            if n_prompt == 0:  # an append-only layer holds dense tokens and no window statistics
                want = ref.memory(ref.RefPolicy(key_precision=rp.key_precision, value_precision=rp.value_precision),
                                  d, n_kv, 0, n_append, 0)
            else:
                want = ref.memory(rp, d, n_kv, n_prompt, n_append, kept)
            assert {k: got[k] for k in want} == want, f"layer {layer}"
            assert got["reserved_bytes"] >= got["total_bytes"]
            reports.append(got)
        total = cache.memory_report()
    assert total == {k: sum(r[k] for r in reports) for k in total}
    assert set(total) == set(sparkv.MEMORY_FIELDS)
