"""The policy pipeline against the numpy reference: token eviction (StreamingLLM, SnapKV, PyramidKV),
ThinK channel pruning and value pruning; kept token sets, stored state, attention, memory report,
and the errors of the new policy fields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import reference as ref
import sparkv
from helpers import bits, ref_policy
from sparkv import KVCache, Policy, Shape, Status

F32 = dict(key_precision="f32", value_precision="f32")


@dataclass
class Case:
    name: str
    n_layers: int
    n_q: int
    n_kv: int
    d: int
    n_prompt: int
    n_window: int
    n_append: int
    policy: Policy
    zero_rows: bool = False  # SnapKV ties: keys of rows t % 4 != 0 are zero
    dup_channels: bool = False  # ThinK ties: channel 2m+1 repeats channel 2m (keys and window queries)
    tie_values: bool = False  # value-pruning ties: value row 5 has magnitudes in three tie groups


CASES = [
    Case("streaming-f32", 2, 4, 2, 64, 120, 8, 3, Policy.streaming(4, 30, **F32)),
    Case("streaming-no-sinks", 1, 2, 1, 32, 50, 4, 1, Policy.streaming(0, 7)),
    Case("streaming-covers-prompt", 1, 2, 2, 32, 40, 4, 2, Policy.streaming(10, 35)),
    Case("streaming-spark-gaussian", 2, 4, 2, 64, 90, 8, 2,
         Policy.spark(0.6, recovery="gaussian", seed=77, eviction="streaming", sink_tokens=3, recent_tokens=40)),
    Case("snapkv-f32", 2, 8, 2, 64, 200, 16, 3, Policy.snapkv(40, window=12, threads=2, **F32)),
    Case("snapkv-pool7-scale", 1, 4, 4, 32, 90, 6, 1, Policy.snapkv(9, pool_kernel=7, attention_scale=0.3, **F32)),
    Case("snapkv-ties-pool1", 1, 2, 2, 32, 80, 4, 1, Policy.snapkv(30, pool_kernel=1, **F32), zero_rows=True),
    Case("snapkv-keeps-all", 1, 2, 1, 32, 40, 8, 1, Policy.snapkv(32, pool_kernel=3)),
    Case("snap-spark", 2, 4, 2, 64, 150, 10, 2, Policy.snap_spark(50, 0.75, pool_kernel=3)),
    Case("pyramidkv-4-layers", 4, 4, 2, 32, 100, 8, 1, Policy.pyramidkv(20, ratio=3.0, **F32)),
    Case("pyramidkv-clamped", 4, 2, 1, 32, 64, 8, 0, Policy.pyramidkv(40, ratio=3.0)),
    Case("think-0.5", 2, 4, 2, 64, 150, 16, 2, Policy.think(0.5, window=10)),
    Case("think-ties-bf16", 1, 4, 2, 64, 60, 8, 1, Policy.think(0.55, key_precision="bf16"), dup_channels=True),
    Case("values-0.5", 1, 4, 2, 64, 80, 0, 2, Policy.dense(value_prune_ratio=0.5), tie_values=True),
    Case("values-bf16-spark", 2, 4, 2, 64, 70, 8, 1,
         Policy.spark(0.8, value_prune_ratio=0.75, value_precision="bf16"), tie_values=True),
    Case("values-f32-d8", 1, 2, 1, 8, 30, 0, 1, Policy.dense(value_prune_ratio=0.3, value_precision="f32")),
    Case("snapkv-think-values", 2, 8, 2, 64, 160, 12, 2,
         Policy.think(0.6, eviction="snapkv", evict_budget=48, value_prune_ratio=0.5, threads=2), tie_values=True),
]


def make_data(rng: np.random.Generator, case: Case):
    n, d = case.n_prompt, case.d
    keys = rng.standard_normal((case.n_kv, n, d), dtype=np.float32)
    keys[:, :, 5 % d :: 16] *= 4.0  # outlier channels
    values = rng.standard_normal((case.n_kv, n, d), dtype=np.float32)
    q_window = rng.standard_normal((case.n_q, max(case.n_window, 1), d), dtype=np.float32)
    if case.zero_rows:
        keys[:, np.arange(n) % 4 != 0] = 0.0
    if case.dup_channels:
        keys[:, :, 1::2] = keys[:, :, 0::2]
        q_window[:, :, 1::2] = q_window[:, :, 0::2]
    if case.tie_values and n > 5:
        j = np.arange(d)
        values[:, 5] = np.where(j % 2 == 1, -0.25, 0.25) * (1 + j % 3)
    return keys, values, (q_window if case.n_window else None)


class Built:
    """A cache filled for one case (every layer), and what the reference expects of it."""

    def __init__(self, case: Case, seed: int):
        self.case, self.policy = case, ref_policy(case.policy)
        rng = np.random.default_rng(seed)
        self.rng = rng
        c = case
        self.cache = KVCache(Shape(c.n_layers, c.n_q, c.n_kv, c.d, c.n_prompt + c.n_append), c.policy)
        self.layers = []
        for layer in range(c.n_layers):
            keys, values, qw = make_data(rng, c)
            add_k = rng.standard_normal((c.n_append, c.n_kv, c.d), dtype=np.float32) * 1.5
            add_v = rng.standard_normal((c.n_append, c.n_kv, c.d), dtype=np.float32)
            self.cache.prefill(layer, keys, values, qw)
            for t in range(c.n_append):
                self.cache.append(layer, add_k[t], add_v[t])
            exp = ref.pipeline(keys, values, qw, self.policy, c.n_q // c.n_kv, layer, c.n_layers)
            pol = self.policy
            all_keys = np.concatenate([exp.keys, ref.store(add_k.transpose(1, 0, 2), pol.key_precision)], axis=1)
            all_values = np.concatenate([exp.values, ref.store(add_v.transpose(1, 0, 2), pol.value_precision)], axis=1)
            all_masks = np.concatenate([exp.masks, np.ones((c.n_kv, c.n_append, c.d), dtype=bool)], axis=1)
            self.layers.append(dict(keys=keys, values=values, add_k=add_k, add_v=add_v, exp=exp,
                                    all_keys=all_keys, all_values=all_values, all_masks=all_masks))

    def stored(self, what, layer, h):
        fn = {"value": self.cache.value, "key": self.cache.recovered_key, "mask": self.cache.kept_mask}[what]
        return np.stack([fn(layer, h, t) for t in range(self.cache.tokens(layer))])


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def built(request):
    b = Built(request.param, seed=1000 + CASES.index(request.param))
    yield b
    b.cache.close()


def test_token_counts(built):
    c = built.case
    for layer, data in enumerate(built.layers):
        assert built.cache.tokens(layer) == data["exp"].kept + c.n_append, f"layer {layer}"


def test_kept_tokens_match_reference_by_stored_values(built):
    """Values are random, so each stored value identifies the prompt row it came from."""
    if built.policy.prunes_values(built.case.d):
        pytest.skip("value pruning rewrites stored values (checked in test_stored_values_match_reference)")
    for layer, data in enumerate(built.layers):
        exp = data["exp"]
        for h in range(built.case.n_kv):
            originals = ref.store(data["values"][h], built.policy.value_precision)
            stored = built.stored("value", layer, h)[: exp.kept]
            got = [int(np.nonzero((bits(originals) == bits(v)).all(axis=1))[0][0]) if
                   (bits(originals) == bits(v)).all(axis=1).any() else -1 for v in stored]
            assert got == list(exp.rows[h]), f"layer {layer} head {h}"


def test_kept_masks_match_reference(built):
    for layer, data in enumerate(built.layers):
        for h in range(built.case.n_kv):
            got = built.stored("mask", layer, h)
            bad = np.nonzero((got != data["all_masks"][h]).any(axis=1))[0]
            assert bad.size == 0, f"layer {layer} head {h}: tokens {bad[:10]} differ"


def test_think_keeps_one_channel_set_per_head(built):
    if built.policy.key_mode(built.case.d) != "think":
        pytest.skip("ThinK only")
    keep = sparkv.topk_keep(built.case.policy.key_prune_ratio, built.case.d)
    for layer, data in enumerate(built.layers):
        for h in range(built.case.n_kv):
            masks = built.stored("mask", layer, h)[: data["exp"].kept]
            assert (masks == masks[0]).all() and masks[0].sum() == keep
            keys = built.stored("key", layer, h)[: data["exp"].kept]
            assert not keys[:, ~masks[0]].any()  # pruned channels are 0


def test_recovered_keys_match_reference_bitwise(built):
    for layer, data in enumerate(built.layers):
        for h in range(built.case.n_kv):
            got, want = built.stored("key", layer, h), data["all_keys"][h]
            diff = np.argwhere(bits(got) != bits(want))
            assert diff.size == 0, (
                f"layer {layer} head {h}: {len(diff)} entries differ, first token {diff[0][0]} channel "
                f"{diff[0][1]}: got {got[tuple(diff[0])]!r}, want {want[tuple(diff[0])]!r}"
            )


def test_stored_values_match_reference(built):
    for layer, data in enumerate(built.layers):
        for h in range(built.case.n_kv):
            got, want = built.stored("value", layer, h), data["all_values"][h]
            diff = np.argwhere(bits(got) != bits(want))
            assert diff.size == 0, (
                f"layer {layer} head {h}: {len(diff)} entries differ, first token {diff[0][0]} channel "
                f"{diff[0][1]}: got {got[tuple(diff[0])]!r}, want {want[tuple(diff[0])]!r}"
            )


def test_attend_matches_reference_with_every_kernel(built):
    c = built.case
    for layer, data in enumerate(built.layers):
        q = built.rng.standard_normal((c.n_q, c.d), dtype=np.float32)
        want = ref.attention(q, data["all_keys"], data["all_values"], float(np.float32(c.policy.attention_scale)))
        for kernel in (sparkv.Kernel.PORTABLE, sparkv.Kernel.AVX2, sparkv.Kernel.AVX512):
            if sparkv.kernel_supported(kernel):
                built.cache.set_kernel(kernel)
                got = built.cache.attend(layer, q)
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"layer {layer} {kernel.name}")
    built.cache.set_kernel("auto")


def test_attend_over_evicted_cache_is_dense_attention_over_the_kept_rows(built):
    """Independent of the eviction reference: the kept rows are read back from the cache."""
    c, pol = built.case, built.policy
    if pol.eviction == "none" or pol.key_mode(c.d) != "dense" or pol.prunes_values(c.d) or \
            pol.key_precision != "f32" or pol.value_precision != "f32":
        pytest.skip("exact storage (f32, no channel pruning) with eviction only")
    for layer, data in enumerate(built.layers):
        kept = data["exp"].kept
        keys, values = [], []
        for h in range(c.n_kv):
            stored = built.stored("value", layer, h)[:kept]
            rows = [int(np.nonzero((bits(data["values"][h]) == bits(v)).all(axis=1))[0][0]) for v in stored]
            keys.append(np.concatenate([data["keys"][h, rows], data["add_k"][:, h]]))
            values.append(np.concatenate([data["values"][h, rows], data["add_v"][:, h]]))
        q = built.rng.standard_normal((c.n_q, c.d), dtype=np.float32)
        want = ref.attention(q, np.stack(keys), np.stack(values), float(np.float32(c.policy.attention_scale)))
        np.testing.assert_allclose(built.cache.attend(layer, q), want, rtol=1e-4, atol=1e-5)


def test_memory_report_matches_formula(built):
    c, pol = built.case, built.policy
    total = {}
    for layer, data in enumerate(built.layers):
        exp = data["exp"]
        kept_total = int(exp.masks.sum())
        want = ref.memory(pol, c.d, c.n_kv, c.n_prompt, c.n_append, kept_total, n_kept=exp.kept)
        got = built.cache.memory_report(layer)
        assert {k: got[k] for k in want} == want, f"layer {layer}"
        assert got["reserved_bytes"] >= got["total_bytes"]
        for k in want:
            total[k] = total.get(k, 0) + want[k]
    got = built.cache.memory_report()
    assert {k: got[k] for k in total} == total


def test_pyramid_budgets_fall_linearly_over_the_layers():
    """PyramidKV: b_l = round(first + (last - first) * l / (L - 1)), last = 2B / (1 + ratio),
    first = ratio * last, clamped to [1, n - u]."""
    rng = np.random.default_rng(5)
    n, w, d = 100, 8, 32
    with KVCache(Shape(4, 2, 1, d, n), Policy.pyramidkv(20, ratio=3.0)) as cache:
        for layer in range(4):
            cache.prefill(layer, rng.standard_normal((1, n, d), dtype=np.float32),
                          rng.standard_normal((1, n, d), dtype=np.float32),
                          rng.standard_normal((2, w, d), dtype=np.float32))
        assert [cache.tokens(layer) - w for layer in range(4)] == [30, 23, 17, 10]
        assert cache.memory_report()["n_tokens"] == 30 + 23 + 17 + 10 + 4 * w
        assert cache.memory_report()["dense_bytes"] == 4 * n * d * 4


# ---- errors of the new fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        Policy.snapkv(0),
        Policy.snapkv(8, pool_kernel=4),
        Policy.snapkv(8, pool_kernel=0),
        Policy.pyramidkv(0),
        Policy.pyramidkv(8, pool_kernel=2),
        Policy.pyramidkv(8, ratio=0.5),
        Policy.pyramidkv(8, ratio=float("nan")),
        Policy.think(0.5, selection="cumulative"),
        Policy.think(0.5, recovery="mean"),
        Policy.think(0.5, recovery="gaussian"),
        Policy.think(0.5, recovery="mean", sign_bits=True),
        Policy.think(0.5, sign_bits=True),
        Policy(key_pruning="think", key_prune_ratio=0.5),  # default MEAN recovery with signs
        Policy(value_prune_ratio=1.0),
        Policy(value_prune_ratio=-0.1),
        Policy(value_prune_ratio=float("nan")),
        Policy(value_prune_ratio=float("inf")),
        Policy.snap_spark(8, 0.5, pool_kernel=6),
    ],
    ids=lambda p: repr(p)[:60],
)
def test_invalid_new_fields_raise_invalid_policy(policy):
    with pytest.raises(sparkv.InvalidPolicyError) as info:
        KVCache(Shape(1, 1, 1, 64, 8), policy)
    assert info.value.status == Status.INVALID_POLICY and info.value.message
    with pytest.raises(sparkv.InvalidPolicyError):
        policy.validate(64)


@pytest.mark.parametrize(
    "fields, error",
    [
        (dict(evict_budget=-1), ValueError),
        (dict(pool_kernel=2**32), ValueError),
        (dict(sink_tokens=-4), ValueError),
        (dict(recent_tokens=1.5), TypeError),
        (dict(value_prune_ratio="0.5"), TypeError),
        (dict(pyramid_ratio=None), TypeError),
    ],
)
def test_unrepresentable_new_fields(fields, error):
    with pytest.raises(error):
        KVCache(Shape(1, 1, 1, 64, 8), Policy(**fields))


def test_unknown_eviction_and_key_pruning_are_value_errors():
    with pytest.raises(ValueError, match="eviction"):
        Policy(eviction="lru")
    with pytest.raises(ValueError, match="eviction"):
        Policy(eviction=4)
    with pytest.raises(ValueError, match="key_pruning"):
        Policy(key_pruning="spark2")


def _state(cache, layers):
    q = np.linspace(-1, 1, 4 * 32, dtype=np.float32).reshape(4, 32)
    return (cache.memory_report(), [cache.memory_report(layer) for layer in range(layers)],
            [cache.tokens(layer) for layer in range(layers)], cache.attend(0, q).tobytes())


@pytest.mark.parametrize("policy", [Policy.snapkv(60, window=4), Policy.pyramidkv(60, window=4)],
                         ids=["snapkv", "pyramidkv"])
def test_budget_larger_than_prompt_minus_window_fails_at_prefill(rng, policy):
    n_kv, d = 2, 32
    with KVCache(Shape(2, 4, n_kv, d, 128), policy) as cache:
        def prompt(n, w):
            return (rng.standard_normal((n_kv, n, d), dtype=np.float32),
                    rng.standard_normal((n_kv, n, d), dtype=np.float32),
                    rng.standard_normal((4, w, d), dtype=np.float32))

        cache.prefill(0, *prompt(100, 8))
        before = _state(cache, 2)
        for n, w in ((63, 8), (40, 8), (61, 2)):  # n - min(4, w) < 60
            with pytest.raises(sparkv.InvalidPolicyError) as info:
                cache.prefill(1, *prompt(n, w))
            assert info.value.status == Status.INVALID_POLICY
        with pytest.raises(sparkv.SparKVError, match="q_window") as info:
            cache.prefill(1, *prompt(64, 8)[:2])  # SnapKV scores need the window queries
        assert info.value.status == Status.NULL_POINTER
        assert _state(cache, 2) == before
        cache.prefill(1, *prompt(64, 8))  # exactly the budget
        assert cache.tokens(1) == 64 if policy.eviction == sparkv.Eviction.SNAPKV else cache.tokens(1) == 2 * 60 // 5 + 4


def test_streaming_with_dense_keys_needs_no_window_queries(rng):
    with KVCache(Shape(1, 2, 1, 32, 64), Policy.streaming(2, 5)) as cache:
        cache.prefill(0, rng.standard_normal((1, 50, 32), dtype=np.float32),
                      rng.standard_normal((1, 50, 32), dtype=np.float32))
        assert cache.tokens(0) == 7
        m = cache.memory_report(0)
        assert m["n_tokens"] == 7 and m["dense_bytes"] == 50 * 32 * 4


@pytest.mark.parametrize("policy", [
    Policy.think(0.5, eviction="snapkv", evict_budget=300, value_prune_ratio=0.5),
    Policy.spark(0.75, recovery="gaussian", eviction="pyramidkv", evict_budget=280),
], ids=["snapkv-think-values", "pyramidkv-gaussian"])
def test_pipeline_is_unchanged_by_thread_count(rng, policy):
    n, d = 700, 64
    keys = rng.standard_normal((2, n, d), dtype=np.float32)
    values = rng.standard_normal((2, n, d), dtype=np.float32)
    qw = rng.standard_normal((4, 16, d), dtype=np.float32)
    q = rng.standard_normal((4, d), dtype=np.float32)
    states = []
    for threads in (1, 2):
        with KVCache(Shape(2, 4, 2, d, n), policy.replace(threads=threads)) as cache:
            assert cache.threads == threads
            cache.set_kernel("portable")
            cache.prefill(1, keys, values, qw)
            stored = [np.stack([cache.value(1, h, t) for t in range(cache.tokens(1))]) for h in range(2)]
            keys_seen = [np.stack([cache.recovered_key(1, h, t) for t in range(cache.tokens(1))]) for h in range(2)]
            states.append((cache.tokens(1), [bits(s).tobytes() for s in stored + keys_seen],
                           bits(cache.attend(1, q)).tobytes()))
    assert states[0] == states[1]
