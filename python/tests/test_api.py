"""The binding's surface: versions, strings, mirrors of the C structs, kernels, draws, threads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

import reference as ref
import sparkv
from helpers import bits, make_prompt
from sparkv import KVCache, Policy, Shape

HEADER = Path(__file__).resolve().parents[2] / "include" / "sparkv.h"


def test_versions_agree():
    major, minor, patch = sparkv.version_info()
    assert sparkv.version() == f"{major}.{minor}.{patch}"
    assert sparkv.__version__ == sparkv.version()
    if HEADER.exists():
        text = HEADER.read_text()
        macro = {k: int(re.search(rf"#define SPARKV_VERSION_{k} (\d+)", text).group(1)) for k in ("MAJOR", "MINOR", "PATCH")}
        assert (macro["MAJOR"], macro["MINOR"], macro["PATCH"]) == (major, minor, patch)


def test_library_is_the_one_asked_for():
    import os

    env = os.environ.get("SPARKV_LIBRARY")
    if not env:
        pytest.skip("SPARKV_LIBRARY not set")
    assert sparkv._lib.candidates() == [env]
    assert sparkv.library_path() == env


def test_status_strings_are_distinct_sentences():
    strings = [sparkv.status_string(s) for s in sparkv.Status]
    assert all(strings) and len(set(strings)) == len(strings)
    assert sparkv.status_string(999)


def test_error_classes_cover_every_status():
    for status in sparkv.Status:
        if status == sparkv.Status.OK:
            continue
        err = sparkv.errors.error_for(status, "detail")
        assert isinstance(err, sparkv.SparKVError) and type(err) is not sparkv.SparKVError
        assert err.status == status and str(err) == "detail"
    unknown = sparkv.errors.error_for(99, "x")
    assert type(unknown) is sparkv.SparKVError and unknown.status == 99


def test_topk_keep_matches_reference():
    for r in (0.0, 0.001, 0.1, 0.3, 0.33, 0.5, 0.75, 0.8, 0.9, 0.99):
        for d in range(8, 257, 8):
            assert sparkv.topk_keep(r, d) == ref.RefPolicy(ratio=float(np.float32(r))).topk_keep(d)


def test_draw_standard_follows_the_published_draw():
    for seed in (0, 1, 2**64 - 1):
        for args in ((0, 0, 0, 0), (1, 2, 3, 4), (31, 7, 100000, 255)):
            for rec in ("gaussian", "exponential"):
                got = sparkv.draw_standard(seed, *args, rec)
                assert np.float32(got).tobytes() == ref.draw_standard(seed, *args, rec).tobytes()
            assert sparkv.draw_standard(seed, *args, "mean") == 0.0


def test_draw_tables_keep_the_documented_moments():
    """Equal-probability bins holding their conditional means: the mean is the distribution's, the
    variance 0.9961 (normal) / 0.9831 (exponential), as sparkv.h says; the hash fills every bin
    about equally."""
    z = np.array(ref.NORMAL_POINTS, dtype=np.float64)
    e = np.array(ref.SQRT_EXPONENTIAL_POINTS, dtype=np.float64) ** 2
    assert z.sum() == 0.0 and abs(e.mean() - 1.0) < 1e-6
    assert abs(z.var() - 0.99609) < 1e-4 and abs(e.var() - 0.98314) < 1e-4
    counts = np.bincount([ref.draw_bin(5, 0, 1, t, j) for t in range(64) for j in range(128)], minlength=64)
    expect = 64 * 128 / 64
    assert ((counts - expect) ** 2 / expect).sum() < 130.0  # chi-square, 63 dof, far in the tail


def test_defaults_mirror_the_c_defaults():
    lib = sparkv._lib.load()
    assert Shape.from_c(lib.sparkv_default_shape()) == Shape()
    c_default = Policy.from_c(lib.sparkv_default_policy())
    assert c_default == dataclasses.replace(Policy(), cumulative_p=float(np.float32(0.9)))
    assert Policy.dense() == Policy()


def test_presets_set_the_pipeline_fields():
    assert Policy.snapkv(256) == Policy(eviction="snapkv", evict_budget=256, pool_kernel=5)
    assert Policy.snapkv(64, pool_kernel=7, window=16).pool_kernel == 7
    assert Policy.pyramidkv(128, ratio=3.0) == Policy(eviction="pyramidkv", evict_budget=128, pyramid_ratio=3.0)
    assert Policy.streaming(4, 60) == Policy(eviction="streaming", sink_tokens=4, recent_tokens=60)
    assert Policy.think(0.5) == Policy(key_pruning="think", key_prune_ratio=0.5, recovery="none", sign_bits=False)
    assert Policy.snap_spark(200, 0.8) == Policy.spark(0.8, eviction="snapkv", evict_budget=200)
    assert Policy.snap_spark(200, 0.8, recovery="gaussian", pool_kernel=3).recovery is sparkv.Recovery.GAUSSIAN
    assert Policy.think(0.5, value_prune_ratio=0.25).value_prune_ratio == 0.25
    for preset in (Policy.snapkv(8), Policy.pyramidkv(8), Policy.streaming(1, 2), Policy.think(0.5),
                   Policy.snap_spark(8, 0.5), Policy.dense(value_prune_ratio=0.5)):
        assert preset.validate(64) is preset


def test_policy_and_shape_round_trip_through_the_cache():
    shape = Shape(n_layers=3, n_q_heads=8, n_kv_heads=4, head_dim=64, capacity=100)
    policy = Policy.cumulative(0.75, min_keep=3, max_keep=60, recovery="gaussian", sign_bits=False,
                               key_precision="bf16", value_precision="f32", window=7, seed=2**63 + 5,
                               threads=1, attention_scale=0.125, eviction="pyramidkv", evict_budget=33,
                               pool_kernel=7, pyramid_ratio=2.5, sink_tokens=9, recent_tokens=101,
                               value_prune_ratio=0.375)
    with KVCache(shape, policy) as cache:
        assert cache.shape == shape
        got = cache.policy
        assert got == dataclasses.replace(policy, cumulative_p=float(np.float32(0.75)))
        assert cache.kernel != sparkv.Kernel.AUTO
        assert cache.threads == 1
    think = Policy.think(0.3, eviction="streaming", value_prune_ratio=0.5, threads=2)
    with KVCache(shape, think) as cache:
        assert cache.policy == think.replace(key_prune_ratio=float(np.float32(0.3)),
                                             cumulative_p=float(np.float32(0.9)))
        assert cache.threads == 2
    with KVCache(shape, Policy()) as cache:
        assert cache.threads >= 1  # OpenMP's default
    assert shape.group == 2


def test_enum_fields_accept_names_members_and_values():
    a = Policy(recovery="Gaussian", key_precision=sparkv.Precision.BF16, selection=1)
    assert a.recovery is sparkv.Recovery.GAUSSIAN and a.key_precision is sparkv.Precision.BF16
    assert a.selection is sparkv.Selection.CUMULATIVE
    b = Policy(eviction="SnapKV", key_pruning=1)
    assert b.eviction is sparkv.Eviction.SNAPKV and b.key_pruning is sparkv.KeyPruning.THINK
    assert Policy.spark(0.8).replace(window=16).window == 16


def test_kernels(rng):
    assert sparkv.kernel_supported("portable") and sparkv.kernel_supported(sparkv.Kernel.AUTO)
    with KVCache(Shape(1, 2, 1, 32, 50), Policy.spark(0.5)) as cache:
        keys, values, qw = make_prompt(rng, 2, 1, 50, 8, 32)
        cache.prefill(0, keys, values, qw)
        for kernel in sparkv.Kernel:
            if sparkv.kernel_supported(kernel):
                cache.set_kernel(kernel.name.lower())
                assert cache.kernel == (kernel if kernel != sparkv.Kernel.AUTO else cache.kernel)
                assert cache.kernel != sparkv.Kernel.AUTO


@pytest.mark.parametrize("recovery", ["mean", "gaussian"])
def test_attend_is_unchanged_by_thread_count(rng, recovery):
    n, d = 1100, 64  # five pages: several chunks per head
    keys, values, qw = make_prompt(rng, 4, 1, n, 16, d)
    q = rng.standard_normal((4, d), dtype=np.float32)
    appended = rng.standard_normal((10, 2, 1, d), dtype=np.float32)
    outs = []
    for threads in (1, 2):
        with KVCache(Shape(1, 4, 1, d, n + 10), Policy.spark(0.75, recovery=recovery, threads=threads)) as cache:
            cache.set_kernel("portable")
            cache.prefill(0, keys, values, qw)
            for k, v in appended:
                cache.append(0, k, v)
            outs.append(cache.attend(0, q))
    assert np.array_equal(bits(outs[0]), bits(outs[1]))


def test_dense_tokens_report_every_channel_kept(rng):
    with KVCache(Shape(1, 1, 1, 16, 4), Policy.dense(key_precision="f32")) as cache:
        k = rng.standard_normal((1, 16), dtype=np.float32)
        cache.append(0, k, k)
        assert cache.kept_mask(0, 0, 0).all()
        assert np.array_equal(cache.recovered_key(0, 0, 0), k[0])
        qn, c = cache.qnorm(0, 0)
        assert not qn.any() and c == 1.0


def test_caches_in_threads_are_independent(rng):
    import threading

    shape = Shape(1, 4, 2, 64, 300)
    keys, values, qw = make_prompt(rng, 4, 2, 300, 16, 64)
    q = rng.standard_normal((4, 64), dtype=np.float32)
    with KVCache(shape, Policy.spark(0.8, threads=1)) as c0:
        c0.prefill(0, keys, values, qw)
        want = c0.attend(0, q)
        results = []

        def work():
            with KVCache(shape, Policy.spark(0.8, threads=1)) as c:
                c.prefill(0, keys, values, qw)
                results.append(c.attend(0, q))
                results.append(c0.attend(0, q))  # a shared cache: the binding serialises calls

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 8 and all(np.array_equal(r, want) for r in results)


def test_binding_refuses_a_library_whose_structs_differ(monkeypatch):
    """The ctypes mirrors must have the library's sizes; a mismatch fails loudly at load time."""
    import ctypes

    _lib = sparkv._lib
    lib = ctypes.CDLL(sparkv.library_path())
    _lib._declare(lib)
    _lib._check(lib, "this library")  # the mirrors match
    assert lib.sparkv_default_policy().struct_size == ctypes.sizeof(_lib.CPolicy)
    assert lib.sparkv_default_shape().struct_size == ctypes.sizeof(_lib.CShape)
    assert _lib.new_memory().struct_size == ctypes.sizeof(_lib.CMemory)

    class LongerPolicy(ctypes.Structure):
        # 8 bytes: a 4-byte field could hide in the tail padding (the struct holds a uint64).
        _fields_ = _lib.CPolicy._fields_ + [("future_field", ctypes.c_uint64)]

    monkeypatch.setattr(_lib, "CPolicy", LongerPolicy)
    with pytest.raises(sparkv.LibraryNotFoundError, match="struct sizes differ"):
        _lib._check(lib, "this library")
    monkeypatch.undo()

    def shorter_memory():
        m = _lib.CMemory()
        m.struct_size = ctypes.sizeof(_lib.CMemory) - 8  # as a binding with one field less would send
        return m

    monkeypatch.setattr(_lib, "new_memory", shorter_memory)
    with pytest.raises(sparkv.LibraryNotFoundError, match="sparkv_memory differs"):
        _lib._check(lib, "this library")
