"""Quantized storage (Precision.I8 / I4, Policy.quant_group) through the Python binding: the policy
fields and presets, the C round trip, stored values read back through inspection within half a
scale of the inputs, the memory report against the header's formulas with fp16 scales, and invalid
quant_group values."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import reference as ref
import sparkv
from helpers import ref_policy
from sparkv import InvalidPolicyError, KVCache, Policy, Precision, Shape, _lib

D = 128
SHAPE = Shape(n_layers=2, n_q_heads=4, n_kv_heads=2, head_dim=D, capacity=64)
N, W, APPENDS = 40, 8, 3


# ---- the documented format (sparkv.h, sparkv_precision) ------------------------------------------


def scale_of(amax: float, qmax: int) -> float:
    """fp16(amax / Q) with the float quotient (below 65520: larger runs are a RANGE error)."""
    q = np.float32(amax) / np.float32(qmax)
    assert q < 65520, "no fp16 scale: the library refuses such a run"
    return float(np.float16(q))


def bound(x: np.ndarray, amax: float, qmax: int) -> np.ndarray:
    """|x - s q| <= s/2, plus the clamp of a value pushed past the grid by fp16's rounding of s."""
    s = scale_of(amax, qmax)
    return s / 2 * (1 + 2.0**-20) + np.maximum(0.0, np.abs(x) - qmax * s)


def check_runs(stored: np.ndarray, inputs: np.ndarray, runs, qmax: int, what: str) -> None:
    for run in runs:
        run = np.asarray(run)
        if run.size == 0:
            continue
        x = inputs[run].astype(np.float64)
        amax = float(np.max(np.abs(inputs[run])))
        err = np.abs(stored[run].astype(np.float64) - x)
        limit = bound(x, amax, qmax)
        bad = np.nonzero(err > limit)[0]
        assert bad.size == 0, f"{what}: channels {run[bad][:5]} err {err[bad][:5]} > {limit[bad][:5]}"


def rb(p: Precision, n: int) -> int:
    return {Precision.F32: 4 * n, Precision.F16: 2 * n, Precision.BF16: 2 * n, Precision.I8: n}.get(p, (n + 1) // 2)


def sc(p: Precision, k: int) -> int:
    return 2 * k if p in (Precision.I8, Precision.I4) else 0


def n_stats(policy: Policy) -> int:
    return {"NONE": 0, "MEAN": 1, "EXPONENTIAL": 2, "GAUSSIAN": 3}[policy.recovery.name]


def predicted(policy: Policy, prompt_tokens: int, appends: int) -> dict:
    """The memory report of SHAPE after prefill of every layer and `appends` appended tokens (no
    eviction, TOPK), from the formulas in sparkv.h."""
    kp, vp, g = policy.key_precision, policy.value_precision, policy.quant_group
    t_k = sparkv.topk_keep(policy.key_prune_ratio, D)
    t_v = sparkv.topk_keep(policy.value_prune_ratio, D)
    prunes = t_k < D
    think = policy.key_pruning == sparkv.KeyPruning.THINK
    if not prunes:
        key, key_meta, head_meta = rb(kp, D), sc(kp, D // g), 0
    elif think:
        key, key_meta, head_meta = rb(kp, t_k), sc(kp, 1), D // 8
    else:
        key = rb(kp, t_k)
        key_meta = D // 8 * (2 if policy.sign_bits else 1) + 2 * n_stats(policy) + sc(kp, 1)
        head_meta = D * 4 + 4
    if t_v < D:
        value, value_meta = rb(vp, t_v), D // 8 + 2 + sc(vp, 1)
    else:
        value, value_meta = rb(vp, D), sc(vp, D // g)
    heads = SHAPE.n_layers * SHAPE.n_kv_heads
    m = dict(
        n_tokens=SHAPE.n_layers * (prompt_tokens + appends),
        key_bytes=heads * (prompt_tokens * key + appends * rb(kp, D)),
        key_meta_bytes=heads * (prompt_tokens * key_meta + appends * sc(kp, D // g) + head_meta),
        value_bytes=heads * (prompt_tokens * value + appends * rb(vp, D)),
        value_meta_bytes=heads * (prompt_tokens * value_meta + appends * sc(vp, D // g)),
        dense_bytes=heads * (prompt_tokens + appends) * D * 4,
    )
    m["total_bytes"] = m["key_bytes"] + m["key_meta_bytes"] + m["value_bytes"] + m["value_meta_bytes"]
    return m


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    total = N + APPENDS
    keys = rng.standard_normal((SHAPE.n_layers, SHAPE.n_kv_heads, total, D), dtype=np.float32)
    keys[..., 5::16] *= 8.0  # outlier channels
    keys[..., 7, :] = 0.0  # an all-zero token (scale 0)
    values = rng.standard_normal((SHAPE.n_layers, SHAPE.n_kv_heads, total, D), dtype=np.float32)
    values[..., 9, 3] = 40.0  # one outlier value
    q = rng.standard_normal((SHAPE.n_layers, SHAPE.n_q_heads, W, D), dtype=np.float32)
    return keys, values, q


def filled(policy: Policy, seed: int = 1):
    keys, values, q = make_data(seed)
    cache = KVCache(SHAPE, policy)
    for layer in range(SHAPE.n_layers):
        cache.prefill(
            layer,
            np.ascontiguousarray(keys[layer, :, :N]),
            np.ascontiguousarray(values[layer, :, :N]),
            np.ascontiguousarray(q[layer]),
        )
        for t in range(N, N + APPENDS):
            cache.append(layer, np.ascontiguousarray(keys[layer, :, t]), np.ascontiguousarray(values[layer, :, t]))
    return cache, keys, values


POLICIES = [
    Policy.quantized("i8", "i8"),
    Policy.quantized("i4", "i4", group=64),
    Policy.quantized("i8", "f16", group=8),
    Policy.spark(0.8).with_precision("i8", "i8"),
    Policy.spark(0.8).with_precision("i4", "i4", group=16),
    Policy.spark(0.5, recovery="gaussian").with_precision("i4", "i8"),
    Policy.think(0.5).with_precision("i8", "i4", group=128),
    Policy.spark(0.75, value_prune_ratio=0.5).with_precision("i8", "i4"),
    Policy.dense(value_prune_ratio=0.25).with_precision(values="i8"),
]


# ---- policy fields -----------------------------------------------------------------------------


def test_precision_members_and_helpers():
    assert Precision.I8 == 3 and Precision.I4 == 4
    assert Policy(key_precision="i8", value_precision="I4").value_precision is Precision.I4
    assert Precision.I8.is_quantized and Precision.I4.is_quantized and not Precision.BF16.is_quantized
    assert (Precision.I8.quant_max, Precision.I4.quant_max, Precision.F16.quant_max) == (127, 7, 0)
    assert [p.row_bytes(13) for p in Precision] == [52, 26, 26, 13, 7]
    assert [p.scale_bytes(4) for p in Precision] == [0, 0, 0, 8, 8]


def test_quant_group_field_and_presets():
    assert Policy().quant_group == 32
    assert _lib.load().sparkv_default_policy().quant_group == 32
    q = Policy.quantized("i8", "i4")
    assert (q.key_precision, q.value_precision, q.quant_group) == (Precision.I8, Precision.I4, 32)
    assert q.key_prune_ratio == 0 and q.is_quantized and not Policy().is_quantized
    p = Policy.snap_spark(512, 0.8).with_precision("i8", "i4", group=64)
    assert p == Policy.snap_spark(512, 0.8, key_precision="i8", value_precision="i4", quant_group=64)
    assert Policy.spark(0.8).with_precision(values="i8").key_precision is Precision.F16
    assert Policy(quant_group=16).replace(quant_group=64).quant_group == 64


def test_struct_matches_the_library():
    lib = _lib.load()
    assert lib.sparkv_default_policy().struct_size == ctypes.sizeof(_lib.CPolicy)
    assert ("quant_group", ctypes.c_uint32) in _lib.CPolicy._fields_
    assert _lib.CPolicy._fields_[-1] == ("decode_recent", ctypes.c_uint32)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.key_precision.name}-{p.value_precision.name}")
def test_c_round_trip(policy):
    c = policy.to_c()
    assert c.quant_group == policy.quant_group
    assert c.key_precision == int(policy.key_precision) and c.value_precision == int(policy.value_precision)
    back = Policy.from_c(c)
    assert back.quant_group == policy.quant_group
    assert back.key_precision is policy.key_precision and back.value_precision is policy.value_precision
    policy.validate(D)
    with KVCache(SHAPE, policy) as cache:
        got = cache.policy
        assert (got.quant_group, got.key_precision, got.value_precision) == (
            policy.quant_group,
            policy.key_precision,
            policy.value_precision,
        )


# ---- invalid quant_group -----------------------------------------------------------------------


@pytest.mark.parametrize("group,head_dim", [(12, 128), (48, 128), (0, 128), (256, 128), (24, 64), (4, 8)])
@pytest.mark.parametrize("precisions", [("i8", "f16"), ("f16", "i4"), ("i4", "i8")])
def test_invalid_quant_group_raises(group, head_dim, precisions):
    policy = Policy.quantized(*precisions, group=group)
    with pytest.raises(InvalidPolicyError):
        policy.validate(head_dim)
    shape = Shape(n_layers=1, n_q_heads=2, n_kv_heads=1, head_dim=head_dim, capacity=8)
    with pytest.raises(InvalidPolicyError):
        KVCache(shape, policy)
    Policy(quant_group=group).validate(head_dim)  # ignored when nothing is quantized


def test_quant_group_out_of_c_range_is_a_value_error():
    with pytest.raises(ValueError):
        Policy.quantized("i8", "i8", group=-8).to_c()
    with pytest.raises(TypeError):
        Policy.quantized("i8", "i8", group=8.0).to_c()


@pytest.mark.parametrize("group,head_dim", [(8, 8), (8, 128), (64, 128), (128, 128), (24, 48)])
def test_fitting_quant_groups_are_valid(group, head_dim):
    Policy.quantized("i4", "i8", group=group).validate(head_dim)


# ---- stored values within half a scale ---------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.key_precision.name}-{p.value_precision.name}")
def test_stored_values_within_half_a_scale(policy):
    cache, keys, values = filled(policy)
    g = policy.quant_group
    groups = [np.arange(i, i + g) for i in range(0, D, g)]
    kq, vq = policy.key_precision.quant_max, policy.value_precision.quant_max
    prunes = sparkv.topk_keep(policy.key_prune_ratio, D) < D
    t_v = sparkv.topk_keep(policy.value_prune_ratio, D)
    with cache:
        for layer in range(SHAPE.n_layers):
            for h in range(SHAPE.n_kv_heads):
                for t in range(N + APPENDS):
                    k, v = keys[layer, h, t], values[layer, h, t]
                    appended = t >= N
                    what = f"layer {layer} head {h} token {t}"
                    key = cache.recovered_key(layer, h, t)
                    mask = cache.kept_mask(layer, h, t)
                    if kq == 0:
                        pass  # float keys: covered by the reference tests
                    elif appended or not prunes:
                        assert mask.all()
                        check_runs(key, k, groups, kq, "key of " + what)
                    else:
                        kept = np.nonzero(mask)[0]
                        assert kept.size == sparkv.topk_keep(policy.key_prune_ratio, D)
                        check_runs(key, k, [kept], kq, "kept key of " + what)
                    value = cache.value(layer, h, t)
                    if vq == 0:
                        assert np.array_equal(value, v.astype(np.float16).astype(np.float32))
                    elif not appended and t_v < D:
                        order = sorted(range(D), key=lambda j: (-abs(float(v[j])), j))
                        check_runs(value, v, [np.array(order[:t_v])], vq, "kept value of " + what)
                    else:
                        check_runs(value, v, groups, vq, "value of " + what)


def test_zero_token_reads_back_zero():
    cache, _, _ = filled(Policy.quantized("i4", "i8"))
    with cache:
        assert not cache.recovered_key(0, 0, 7).any()


# ---- memory report -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.key_precision.name}-{p.value_precision.name}")
def test_memory_report_counts_scales(policy):
    cache, _, _ = filled(policy)
    with cache:
        report = cache.memory_report()
    want = predicted(policy, N, APPENDS)
    assert {k: report[k] for k in want} == want
    assert report["reserved_bytes"] >= report["total_bytes"]


def test_header_example_bytes_per_token():
    # D = 128, SparK r = 0.8, MEAN with signs: K int8 62, int4 49, f16 86 bytes per token; V int8 136, int4 72.
    for kp, expected in [("i8", 62), ("i4", 49), ("f16", 86)]:
        m = predicted(Policy.spark(0.8, key_precision=kp), 1, 0)
        assert (m["key_bytes"] + m["key_meta_bytes"] - SHAPE.n_layers * SHAPE.n_kv_heads * (D * 4 + 4)) == (
            expected * SHAPE.n_layers * SHAPE.n_kv_heads
        )
    for vp, expected in [("i8", 136), ("i4", 72)]:
        m = predicted(Policy.quantized("f16", vp), 1, 0)
        assert m["value_bytes"] + m["value_meta_bytes"] == expected * SHAPE.n_layers * SHAPE.n_kv_heads


def test_spark_int8_memory_matches_the_formula_exactly():
    policy = Policy.spark(0.8).with_precision("i8", "i8")
    cache, _, _ = filled(policy)
    with cache:
        per_layer = [cache.memory_report(layer) for layer in range(SHAPE.n_layers)]
        total = cache.memory_report()
    heads = SHAPE.n_kv_heads
    for m in per_layer:
        assert m["key_bytes"] == heads * (N * 26 + APPENDS * 128)
        assert m["key_meta_bytes"] == heads * (N * (16 + 16 + 2 + 2) + APPENDS * 8 + D * 4 + 4)
        assert m["value_bytes"] == heads * (N + APPENDS) * 128
        assert m["value_meta_bytes"] == heads * (N + APPENDS) * 8
    assert total["total_bytes"] == sum(m["total_bytes"] for m in per_layer)


def reference_attention(policy: Policy, seed: int, layer: int, q: np.ndarray) -> np.ndarray:
    """The float64 reference of attend(layer, q) over filled(policy, seed): the prompt through the
    reference pipeline (SparK from the float keys, kept values quantized as sparkv.h documents),
    the appended tokens stored whole with one scale per quant_group channels."""
    keys, values, q_window = make_data(seed)
    rp = ref_policy(policy)
    group = SHAPE.n_q_heads // SHAPE.n_kv_heads
    exp = ref.pipeline(keys[layer, :, :N], values[layer, :, :N], q_window[layer], rp, group, layer, SHAPE.n_layers)
    all_k = np.concatenate([exp.keys, ref.store(keys[layer, :, N:], rp.key_precision, rp.quant_group)], axis=1)
    all_v = np.concatenate([exp.values, ref.store(values[layer, :, N:], rp.value_precision, rp.quant_group)], axis=1)
    return ref.attention(q, all_k, all_v)


@pytest.mark.parametrize(
    "policy",
    [
        Policy.spark(0.8).with_precision("i8", "i8"),
        Policy.quantized("i8", "i8"),
        Policy.quantized("i4", "i8", group=16),
        Policy.spark(0.5, recovery="none").with_precision("i4", "i4", group=64),
        Policy.think(0.5, value_prune_ratio=0.5).with_precision("i8", "i4"),
    ],
    ids=lambda p: f"{p.key_prune_ratio}-{p.key_pruning.name}-{p.key_precision.name}-{p.value_precision.name}"
    f"-g{p.quant_group}-v{p.value_prune_ratio}",
)
def test_quantized_attention_matches_the_reference(policy):
    """Attention over an int8/int4 cache, every kernel, against the independent float64 reference
    (tests/reference.py), not against another library path. The tolerance is float rounding (1e-5 of
    the output scale); the reference of the same cache in f16 lies well outside it, so a quantizer
    that stored f16 (or any other grid) would fail."""
    q = np.random.default_rng(9).standard_normal((SHAPE.n_q_heads, D), dtype=np.float32)
    cache, _, _ = filled(policy, seed=4)
    with cache:
        for layer in range(SHAPE.n_layers):
            want = reference_attention(policy, 4, layer, q)
            scale = float(np.max(np.abs(want)))
            tol = 1e-5 * scale
            for kernel in [k for k in sparkv.Kernel if k != sparkv.Kernel.AUTO and sparkv.kernel_supported(k)]:
                cache.set_kernel(kernel)
                err = float(np.max(np.abs(cache.attend(layer, q) - want)))
                assert err <= tol, f"layer {layer} {kernel.name}: max |attend - reference| {err:.3g} > {tol:.3g}"
            f16 = reference_attention(policy.with_precision("f16", "f16"), 4, layer, q)
            assert float(np.max(np.abs(f16 - want))) > 20 * tol, "the tolerance cannot tell int from f16 storage"


def test_reference_quantizer_follows_the_header():
    """The reference's own quantizer on hand-checked runs (sparkv.h): scale fp16(amax/Q), ties to
    even, a zero run, the largest scale (65504)."""
    run = np.array([1.27, -0.635, 0.0, 0.005, -1.0], dtype=np.float32)
    s = np.float32(np.float16(np.float32(1.27) / np.float32(127)))
    want = s * np.clip(np.rint(run / s), -127, 127)
    assert np.array_equal(ref.quantize_run(run, 127), want.astype(np.float32))
    assert np.abs(ref.quantize_run(run, 127) - run).max() <= s / 2
    assert np.array_equal(ref.quantize_run(np.array([7.0, 3.5, -0.5, 2.5], np.float32), 7), [7.0, 4.0, -0.0, 2.0])
    assert not ref.quantize_run(np.zeros(8, np.float32), 7).any()
    top = ref.quantize_run(np.array([7 * 65500.0, -7 * 65500.0, 1.0], np.float32), 7)  # a / Q just below 65520
    assert np.array_equal(top, [7 * 65504.0, -7 * 65504.0, 0.0])
    with pytest.raises(ValueError, match="RANGE"):
        ref.quantize_run(np.array([127 * 65520.0], np.float32), 127)
    rows = ref.store(np.arange(16, dtype=np.float32).reshape(1, 16), "i8", group=8)
    assert np.array_equal(rows[0, :8], ref.quantize_run(np.arange(8, dtype=np.float32), 127))
    assert np.array_equal(rows[0, 8:], ref.quantize_run(np.arange(8, 16, dtype=np.float32), 127))


@pytest.mark.parametrize("precision, qmax", [("i8", 127), ("i4", 7)])
@pytest.mark.parametrize("what", ["keys", "values"])
def test_values_beyond_the_scale_range_are_refused(precision, qmax, what):
    """sparkv.h: a run whose scale fp16(amax / Q) would round to Inf (amax / Q >= 65520) is
    SPARKV_ERR_RANGE (status 16) and nothing is stored; just below, it reads back as the reference."""
    rng = np.random.default_rng(3)
    kv = {"keys": rng.standard_normal((1, 4, 16), dtype=np.float32),
          "values": rng.standard_normal((1, 4, 16), dtype=np.float32)}
    with KVCache(Shape(1, 2, 1, 16, 8), Policy.quantized(precision, precision, group=8)) as cache:
        kv[what][0, 1, 3] = -qmax * 65520.0
        with pytest.raises(sparkv.SparKVError) as info:
            cache.prefill(0, kv["keys"], kv["values"])
        assert int(info.value.status) == 16 and cache.tokens(0) == 0
        kv[what][0, 1, 3] = -qmax * 65500.0
        cache.prefill(0, kv["keys"], kv["values"])
        got = (cache.recovered_key if what == "keys" else cache.value)(0, 0, 1)
        assert np.array_equal(got, ref.store(kv[what][0, 1], precision, 8))
        assert got[3] == -qmax * 65504.0
