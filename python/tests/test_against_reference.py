"""The library against the numpy reference: stored state bit for bit, attention within float error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import reference as ref
import sparkv
from helpers import bits, make_prompt, ref_policy
from sparkv import Policy, Shape

LAYER = 1  # the draws hash the layer index: use a non-zero one


@dataclass
class Scenario:
    name: str
    n_q: int
    n_kv: int
    d: int
    n_prompt: int
    n_window: int
    n_append: int
    policy: Policy


SCENARIOS = [
    Scenario("dense-f32", 6, 2, 64, 300, 0, 5, Policy.dense(key_precision="f32", value_precision="f32", threads=2)),
    Scenario("dense-f16-scale", 4, 4, 128, 270, 4, 3, Policy.dense(attention_scale=0.07)),
    Scenario("dense-bf16", 8, 1, 32, 40, 0, 2, Policy.dense(key_precision="bf16", value_precision="f32")),
    Scenario("topk-keeps-all", 4, 2, 64, 30, 8, 1, Policy.spark(0.001)),
    Scenario("topk-0.8-mean", 8, 2, 128, 300, 24, 3, Policy.spark(0.8, window=16, threads=2)),
    Scenario("topk-0.5-none", 2, 2, 64, 50, 50, 2,
             Policy.spark(0.5, recovery="none", sign_bits=False, key_precision="f32", value_precision="bf16")),
    Scenario("topk-0.6-gaussian", 4, 2, 64, 280, 12, 2, Policy.spark(0.6, recovery="gaussian", seed=12345, window=8)),
    Scenario("topk-0.7-exponential", 6, 3, 64, 70, 10, 2,
             Policy.spark(0.7, recovery="exponential", sign_bits=False, seed=9, key_precision="bf16")),
    Scenario("cumulative-0.8", 4, 2, 64, 100, 10, 2, Policy.cumulative(0.8, min_keep=2, max_keep=40)),
    Scenario("cumulative-keep0-gaussian", 2, 1, 32, 40, 5, 1, Policy.cumulative(0.95, min_keep=0, recovery="gaussian")),
    Scenario("head-dim-8", 2, 1, 8, 20, 4, 1, Policy.spark(0.5)),
    Scenario("head-dim-256", 4, 2, 256, 260, 32, 2, Policy.spark(0.9)),
]


class Built:
    """A cache filled for one scenario, and what the reference expects of it."""

    def __init__(self, sc: Scenario, seed: int):
        rng = np.random.default_rng(seed)
        policy = ref_policy(sc.policy)
        n = sc.n_prompt + sc.n_append
        self.sc, self.policy = sc, policy
        self.cache = sparkv.KVCache(Shape(2, sc.n_q, sc.n_kv, sc.d, n), sc.policy)
        keys, values, q_window = make_prompt(rng, sc.n_q, sc.n_kv, sc.n_prompt, sc.n_window, sc.d)
        self.cache.prefill(LAYER, keys, values, q_window)
        ek, masks, ev, self.qn, self.c = ref.prefill(keys, values, q_window, policy, sc.n_q // sc.n_kv, LAYER)
        self.kept_total = int(masks.sum())
        add_k = rng.standard_normal((sc.n_append, sc.n_kv, sc.d), dtype=np.float32) * 2
        add_v = rng.standard_normal((sc.n_append, sc.n_kv, sc.d), dtype=np.float32)
        for t in range(sc.n_append):
            self.cache.append(LAYER, add_k[t], add_v[t])
        self.keys = np.concatenate([ek, ref.store(add_k.transpose(1, 0, 2), policy.key_precision)], axis=1)
        self.values = np.concatenate([ev, ref.store(add_v.transpose(1, 0, 2), policy.value_precision)], axis=1)
        self.masks = np.concatenate([masks, np.ones((sc.n_kv, sc.n_append, sc.d), dtype=bool)], axis=1)
        self.n = n
        self.rng = rng


@pytest.fixture(scope="module", params=SCENARIOS, ids=[s.name for s in SCENARIOS])
def built(request):
    b = Built(request.param, seed=SCENARIOS.index(request.param) + 1)
    yield b
    b.cache.close()


def test_token_counts(built):
    assert built.cache.tokens(LAYER) == built.n
    assert built.cache.tokens(0) == 0


def test_window_query_norms_match_reference(built):
    for h in range(built.sc.n_kv):
        qn, c = built.cache.qnorm(LAYER, h)
        assert np.array_equal(bits(qn), bits(built.qn[h]))
        assert np.float32(c) == built.c[h]


def test_kept_masks_match_reference(built):
    for h in range(built.sc.n_kv):
        got = np.stack([built.cache.kept_mask(LAYER, h, t) for t in range(built.n)])
        mismatched = np.nonzero((got != built.masks[h]).any(axis=1))[0]
        assert mismatched.size == 0, f"head {h}: tokens {mismatched[:10]} differ"


def test_topk_keeps_exactly_t_channels(built):
    if built.policy.selection != "topk" or not built.policy.prunes(built.sc.d):
        pytest.skip("TOPK with pruning only")
    t_keep = sparkv.topk_keep(built.sc.policy.key_prune_ratio, built.sc.d)
    assert t_keep == built.policy.topk_keep(built.sc.d)
    prompt = built.masks[:, : built.sc.n_prompt]
    assert (prompt.sum(axis=2) == t_keep).all()


def test_recovered_keys_match_reference_bitwise(built):
    for h in range(built.sc.n_kv):
        got = np.stack([built.cache.recovered_key(LAYER, h, t) for t in range(built.n)])
        diff = np.argwhere(bits(got) != bits(built.keys[h]))
        assert diff.size == 0, (
            f"head {h}: {len(diff)} entries differ, first token {diff[0][0]} channel {diff[0][1]}: "
            f"got {got[tuple(diff[0])]!r}, want {built.keys[h][tuple(diff[0])]!r}"
        )


def test_stored_values_match_reference(built):
    for h in range(built.sc.n_kv):
        got = np.stack([built.cache.value(LAYER, h, t) for t in range(built.n)])
        assert np.array_equal(bits(got), bits(built.values[h]))


def test_attend_matches_reference_with_every_kernel(built):
    sc = built.sc
    for trial in range(2):
        q = built.rng.standard_normal((sc.n_q, sc.d), dtype=np.float32) * (1 + trial)
        want = ref.attention(q, built.keys, built.values, sc.policy.attention_scale)
        portable = None
        for kernel in (sparkv.Kernel.PORTABLE, sparkv.Kernel.AVX2, sparkv.Kernel.AVX512):
            if not sparkv.kernel_supported(kernel):
                continue
            built.cache.set_kernel(kernel)
            assert built.cache.kernel == kernel
            got = built.cache.attend(LAYER, q)
            assert got.dtype == np.float32 and got.shape == (sc.n_q, sc.d)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{kernel.name} vs reference")
            if portable is None:
                portable = got
            else:
                np.testing.assert_allclose(got, portable, rtol=1e-4, atol=1e-5, err_msg=f"{kernel.name} vs portable")
            assert np.array_equal(built.cache.attend(LAYER, q), got)  # deterministic
    built.cache.set_kernel("auto")


def test_memory_report_matches_formula(built):
    sc = built.sc
    got = built.cache.memory_report(LAYER)
    want = ref.memory(built.policy, sc.d, sc.n_kv, sc.n_prompt, sc.n_append, built.kept_total)
    assert {k: got[k] for k in want} == want
    assert got["reserved_bytes"] >= got["total_bytes"]
    assert built.cache.memory_report() == got  # the other layer is empty
    empty = built.cache.memory_report(0)
    assert empty["n_tokens"] == 0 and empty["total_bytes"] == 0


def test_attend_out_parameter_is_written(built):
    sc = built.sc
    q = built.rng.standard_normal((sc.n_q, sc.d), dtype=np.float32)
    out = np.full((sc.n_q, sc.d), np.nan, dtype=np.float32)
    result = built.cache.attend(LAYER, q, out=out)
    assert result is out
    assert np.array_equal(out, built.cache.attend(LAYER, q))
