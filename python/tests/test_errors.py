"""Wrong inputs: Python-side validation (TypeError / ValueError before C is called) and C errors
(SparKVError subclasses with the status and the library's message), each leaving the cache as it was."""

from __future__ import annotations

import numpy as np
import pytest

import sparkv
from helpers import observable_state
from sparkv import KVCache, Policy, Shape, Status

N_Q, N_KV, D, N = 4, 2, 64, 40
SHAPE = Shape(n_layers=3, n_q_heads=N_Q, n_kv_heads=N_KV, head_dim=D, capacity=64)


def f32(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


@pytest.fixture
def cache(rng):
    """Layer 0: a pruned 40-token prompt + 1 appended token; layers 1 and 2 empty."""
    c = KVCache(SHAPE, Policy.spark(0.5, window=8))
    c.prefill(0, f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, 10, D))
    c.append(0, f32(rng, N_KV, D), f32(rng, N_KV, D))
    yield c
    c.close()


def state(cache):
    """Everything observable, to check that failures change nothing."""
    return observable_state(cache, N)


# ---- Python-side validation ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.dtype(">f4")])
def test_wrong_dtype_is_a_type_error_naming_float32(cache, rng, dtype):
    before = state(cache)
    k = f32(rng, N_KV, D).astype(dtype)
    v = f32(rng, N_KV, D)
    with pytest.raises(TypeError, match="float32"):
        cache.append(1, k, v)
    with pytest.raises(TypeError, match="dtype float32"):
        cache.attend(0, f32(rng, N_Q, D).astype(dtype))
    with pytest.raises(TypeError, match="keys"):
        cache.prefill(1, f32(rng, N_KV, N, D).astype(dtype), f32(rng, N_KV, N, D), f32(rng, N_Q, 4, D))
    assert state(cache) == before


def test_non_arrays_are_type_errors(cache, rng):
    with pytest.raises(TypeError, match="numpy.ndarray"):
        cache.attend(0, [[0.0] * D] * N_Q)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        cache.append(1, f32(rng, N_KV, D), None)
    with pytest.raises(TypeError):
        cache.attend("0", f32(rng, N_Q, D))
    with pytest.raises(TypeError):
        cache.attend(1.0, f32(rng, N_Q, D))


def test_non_contiguous_is_a_value_error(cache, rng):
    before = state(cache)
    keys = f32(rng, N_KV, D, N).transpose(0, 2, 1)  # right shape, wrong layout
    assert keys.shape == (N_KV, N, D) and not keys.flags.c_contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        cache.prefill(1, keys, f32(rng, N_KV, N, D), f32(rng, N_Q, 4, D))
    q = f32(rng, N_Q, 2 * D)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        cache.attend(0, q)
    with pytest.raises(ValueError, match="C-contiguous"):
        cache.append(1, np.asfortranarray(f32(rng, N_KV, D)), f32(rng, N_KV, D))
    assert state(cache) == before


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c, r: c.prefill(1, f32(r, N_KV + 1, N, D), f32(r, N_KV + 1, N, D), f32(r, N_Q, 4, D)),
         r"keys must have shape \(n_kv_heads=2, n_tokens=\*, head_dim=64\), got \(3, 40, 64\)"),
        (lambda c, r: c.prefill(1, f32(r, N_KV, N, D), f32(r, N_KV, N - 1, D), f32(r, N_Q, 4, D)),
         r"values must have shape \(n_kv_heads=2, n_tokens=40, head_dim=64\), got \(2, 39, 64\)"),
        (lambda c, r: c.prefill(1, f32(r, N_KV, N, D), f32(r, N_KV, N, D), f32(r, N_Q, 4, D + 8)),
         r"q_window must have shape \(n_q_heads=4, n_window=\*, head_dim=64\), got \(4, 4, 72\)"),
        (lambda c, r: c.prefill(1, f32(r, N_KV * N * D), f32(r, N_KV, N, D), f32(r, N_Q, 4, D)),
         r"keys must have shape .* got \(5120,\)"),
        (lambda c, r: c.append(1, f32(r, N_KV, 1, D), f32(r, N_KV, D)),
         r"k must have shape \(n_kv_heads=2, head_dim=64\), got \(2, 1, 64\)"),
        (lambda c, r: c.append(1, f32(r, N_KV, D), f32(r, D)), r"v must have shape .* got \(64,\)"),
        (lambda c, r: c.attend(0, f32(r, N_KV, D)), r"q must have shape \(n_q_heads=4, head_dim=64\), got \(2, 64\)"),
        (lambda c, r: c.attend(0, f32(r, N_Q, D), out=f32(r, N_Q, D - 1)), r"out must have shape"),
    ],
)
def test_wrong_shape_is_a_value_error_naming_expected_and_got(cache, rng, call, message):
    before = state(cache)
    with pytest.raises(ValueError, match=message):
        call(cache, rng)
    assert state(cache) == before


def test_attend_out_may_not_alias_q(cache, rng):
    q = f32(rng, N_Q, D)
    with pytest.raises(ValueError, match="overlap"):
        cache.attend(0, q, out=q)


# ---- C errors -----------------------------------------------------------------------------------


def test_nan_and_inf_raise_non_finite_with_the_c_message(cache, rng):
    before = state(cache)
    keys, values, qw = f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, 4, D)
    keys[1, 17, 5] = np.nan
    with pytest.raises(sparkv.NonFiniteError) as info:
        cache.prefill(1, keys, values, qw)
    err = info.value
    assert isinstance(err, sparkv.SparKVError)
    assert err.status == Status.NON_FINITE
    assert "NaN" in str(err) and err.message == str(err)
    keys[1, 17, 5] = 0.0
    values[0, 0, 0] = np.inf
    with pytest.raises(sparkv.NonFiniteError, match="Inf"):
        cache.prefill(1, keys, values, qw)
    q = f32(rng, N_Q, D)
    q[3, 63] = -np.inf
    with pytest.raises(sparkv.NonFiniteError, match="Inf"):
        cache.attend(0, q)
    k = f32(rng, N_KV, D)
    k[0, 0] = np.nan
    with pytest.raises(sparkv.NonFiniteError, match="NaN"):
        cache.append(0, k, f32(rng, N_KV, D))
    assert state(cache) == before
    values[0, 0, 0] = 1.0
    cache.prefill(1, keys, values, qw)  # the layer was left empty by the failures
    assert cache.tokens(1) == N


@pytest.mark.parametrize("layer", [3, 2**32 - 1, 2**32, -1])
def test_layer_out_of_range(cache, rng, layer):
    before = state(cache)
    for call in (
        lambda: cache.prefill(layer, f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, 4, D)),
        lambda: cache.append(layer, f32(rng, N_KV, D), f32(rng, N_KV, D)),
        lambda: cache.attend(layer, f32(rng, N_Q, D)),
        lambda: cache.memory_report(layer),
        lambda: cache.tokens(layer),
        lambda: cache.recovered_key(layer, 0, 0),
        lambda: cache.kept_mask(layer, 0, 0),
        lambda: cache.value(layer, 0, 0),
        lambda: cache.qnorm(layer, 0),
    ):
        with pytest.raises(sparkv.LayerError, match="layer") as info:
            call()
        assert info.value.status == Status.LAYER
    assert state(cache) == before


def test_prefill_twice_is_a_state_error(cache, rng):
    before = state(cache)
    with pytest.raises(sparkv.StateError, match="prefill") as info:
        cache.prefill(0, f32(rng, N_KV, N, D), f32(rng, N_KV, N, D), f32(rng, N_Q, 4, D))
    assert info.value.status == Status.STATE
    assert state(cache) == before


def test_window_errors(cache, rng):
    before = state(cache)
    keys, values = f32(rng, N_KV, 8, D), f32(rng, N_KV, 8, D)
    with pytest.raises(sparkv.WindowError):
        cache.prefill(1, keys, values, f32(rng, N_Q, 9, D))  # longer than the prompt
    with pytest.raises(sparkv.WindowError):
        cache.prefill(1, keys, values, f32(rng, N_Q, 0, D))  # empty window
    with pytest.raises(sparkv.SparKVError, match="q_window"):
        cache.prefill(1, keys, values, None)  # the policy prunes: window queries are required
    assert state(cache) == before


def test_empty_prompt_is_an_invalid_shape(cache, rng):
    with pytest.raises(sparkv.InvalidShapeError):
        cache.prefill(1, f32(rng, N_KV, 0, D), f32(rng, N_KV, 0, D), f32(rng, N_Q, 0, D))


def test_attend_on_an_empty_layer(cache, rng):
    before = state(cache)
    with pytest.raises(sparkv.EmptyLayerError) as info:
        cache.attend(2, f32(rng, N_Q, D))
    assert info.value.status == Status.EMPTY
    assert state(cache) == before


def test_capacity_exceeded(rng):
    with KVCache(Shape(1, 2, 1, 16, 5), Policy.dense()) as cache:
        with pytest.raises(sparkv.CapacityError):
            cache.prefill(0, f32(rng, 1, 6, 16), f32(rng, 1, 6, 16))
        cache.prefill(0, f32(rng, 1, 4, 16), f32(rng, 1, 4, 16))
        cache.append(0, f32(rng, 1, 16), f32(rng, 1, 16))
        with pytest.raises(sparkv.CapacityError, match="capacity"):
            cache.append(0, f32(rng, 1, 16), f32(rng, 1, 16))
        assert cache.tokens(0) == 5


def test_inspect_index_errors(cache):
    with pytest.raises(sparkv.IndexOutOfRangeError):
        cache.recovered_key(0, N_KV, 0)
    with pytest.raises(sparkv.IndexOutOfRangeError):
        cache.kept_mask(0, 0, N + 1)
    with pytest.raises(sparkv.IndexOutOfRangeError):
        cache.value(0, 0, -1)
    with pytest.raises(sparkv.IndexOutOfRangeError):
        cache.qnorm(0, -1)
    with pytest.raises(sparkv.IndexOutOfRangeError):
        cache.recovered_key(1, 0, 0)  # empty layer


@pytest.mark.parametrize(
    "shape, error",
    [
        (Shape(0, 1, 1, 64, 8), sparkv.InvalidShapeError),
        (Shape(1, 1, 1, 64, 0), sparkv.InvalidShapeError),
        (Shape(1, 1, 0, 64, 8), sparkv.InvalidShapeError),
        (Shape(1, 1, 1, 60, 8), sparkv.HeadDimError),
        (Shape(1, 1, 1, 264, 8), sparkv.HeadDimError),
        (Shape(1, 3, 2, 64, 8), sparkv.GQAError),
    ],
)
def test_bad_shapes(shape, error):
    with pytest.raises(error) as info:
        KVCache(shape, Policy.dense())
    assert info.value.message


@pytest.mark.parametrize(
    "policy",
    [
        Policy.spark(1.0),
        Policy.spark(-0.1),
        Policy.spark(float("nan")),
        Policy.spark(0.5, recovery="none", sign_bits=True),  # sign bits need a recovery mode
        Policy.cumulative(0.0),
        Policy.cumulative(1.5),
        Policy.cumulative(0.9, min_keep=10, max_keep=5),
        Policy.cumulative(0.9, max_keep=65),
        Policy.dense(window=0),
        Policy.dense(threads=-1),
        Policy.dense(attention_scale=-1.0),
        Policy.dense(attention_scale=float("inf")),
    ],
)
def test_invalid_policies_raise_invalid_policy(policy):
    with pytest.raises(sparkv.InvalidPolicyError) as info:
        KVCache(Shape(1, 1, 1, 64, 8), policy)
    assert info.value.status == Status.INVALID_POLICY and info.value.message
    with pytest.raises(sparkv.InvalidPolicyError):
        policy.validate(64)


def test_policy_validate(rng):
    assert Policy.spark(0.8).validate(128) == Policy.spark(0.8)
    with pytest.raises(sparkv.HeadDimError):
        Policy.spark(0.8).validate(100)
    with pytest.raises(sparkv.HeadDimError):
        Policy.spark(0.8).validate(-8)


@pytest.mark.parametrize(
    "fields, error",
    [
        (dict(window=-1), ValueError),
        (dict(seed=2**64), ValueError),
        (dict(cumulative_min_keep=-1), ValueError),
        (dict(threads=2**31), ValueError),
        (dict(window=1.5), TypeError),
        (dict(key_prune_ratio="0.5"), TypeError),
    ],
)
def test_unrepresentable_policy_fields(fields, error):
    with pytest.raises(error):
        KVCache(Shape(1, 1, 1, 64, 8), Policy(**fields))


def test_unknown_enum_names_are_value_errors():
    with pytest.raises(ValueError, match="recovery"):
        Policy.spark(0.5, recovery="median")
    with pytest.raises(ValueError, match="key_precision"):
        Policy(key_precision="fp8")
    with pytest.raises(ValueError, match="kernel"):
        sparkv.kernel_supported("neon")


def test_unsupported_kernel(cache):
    missing = [k for k in (sparkv.Kernel.AVX2, sparkv.Kernel.AVX512) if not sparkv.kernel_supported(k)]
    if not missing:
        pytest.skip("this CPU supports every kernel")
    before = cache.kernel
    with pytest.raises(sparkv.UnsupportedError):
        cache.set_kernel(missing[0])
    assert cache.kernel == before


def test_closed_cache(rng):
    cache = KVCache(Shape(1, 1, 1, 8, 4), Policy.dense())
    cache.close()
    cache.close()  # idempotent
    assert cache.closed
    with pytest.raises(ValueError, match="closed"):
        cache.attend(0, f32(rng, 1, 8))
    with pytest.raises(ValueError, match="closed"):
        cache.memory_report()
    assert "closed" in repr(cache)


def test_context_manager_closes(rng):
    with KVCache(Shape(1, 1, 1, 8, 4), Policy.dense()) as cache:
        cache.append(0, f32(rng, 1, 8), f32(rng, 1, 8))
        assert cache.tokens(0) == 1
    assert cache.closed
    with pytest.raises(ValueError):
        cache.tokens(0)


def test_constructor_argument_types():
    with pytest.raises(TypeError):
        KVCache((1, 1, 1, 8, 4), Policy.dense())
    with pytest.raises(TypeError):
        KVCache(Shape(1, 1, 1, 8, 4), {"key_prune_ratio": 0.5})


# ---- every C status ------------------------------------------------------------------------------


def test_every_c_status_has_its_own_error_class():
    lib = sparkv._lib.load()
    generic = lib.sparkv_status_string(999).decode()
    known = [s for s in range(0, 64) if lib.sparkv_status_string(s).decode() != generic]
    assert known == list(range(len(known))) and len(known) >= 18
    assert [int(s) for s in Status] == known
    for status in known[1:]:
        err = sparkv.errors.error_for(status, "detail")
        assert type(err) is not sparkv.SparKVError and isinstance(err, sparkv.SparKVError), Status(status)
        assert err.status == status and err.message == "detail"



# ---- integers the C parameters cannot hold ------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: sparkv.topk_keep(0.5, -8),  # was 2147483644: -8 wrapped to 2**32 - 8
        lambda: sparkv.topk_keep(0.5, 2**32 + 8),  # was 4: wrapped to 8
        lambda: sparkv.draw_standard(-1, 0, 0, 0, 0, "gaussian"),  # was the draw of seed 2**64 - 1
        lambda: sparkv.draw_standard(2**64, 0, 0, 0, 0, "gaussian"),
        lambda: sparkv.draw_standard(0, 2**32, 0, 0, 0, "gaussian"),  # was layer 0's draw
        lambda: sparkv.draw_standard(0, 0, -1, 0, 0, "gaussian"),
        lambda: sparkv.draw_standard(0, 0, 0, 2**64, 0, "gaussian"),
        lambda: sparkv.draw_standard(0, 0, 0, 0, 2**32, "gaussian"),
        lambda: sparkv.status_string(2**32),  # was "success": wrapped to 0
        lambda: sparkv.status_string(-(2**31) - 1),
    ],
)
def test_integers_beyond_the_c_parameter_are_value_errors(call):
    """ctypes masks a Python int to the C parameter's width: an out-of-range argument silently became
    another (valid) one."""
    with pytest.raises(ValueError, match="does not fit"):
        call()


def test_non_integers_are_type_errors():
    with pytest.raises(TypeError):
        sparkv.topk_keep(0.5, 8.0)
    with pytest.raises(TypeError):
        sparkv.draw_standard(0, 0, 0, "1", 0, "gaussian")
    with pytest.raises(TypeError):
        sparkv.status_string(True)


def test_edge_integers_still_work():
    assert sparkv.topk_keep(0.5, 2**32 - 1) == 2**31  # 2**32 - 1 - floor(0.5 * (2**32 - 1))
    assert sparkv.topk_keep(0.5, 0) == 0
    z = sparkv.draw_standard(2**64 - 1, 2**32 - 1, 2**32 - 1, 2**64 - 1, 2**32 - 1, "gaussian")
    assert abs(z) < 2.52
    assert sparkv.status_string(2**31 - 1) == sparkv.status_string(999)  # unknown code: the generic sentence
