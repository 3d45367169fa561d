"""Test data and the bridge from sparkv.Policy to the reference's RefPolicy."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

import sparkv
from reference import RefPolicy


def ref_policy(policy: sparkv.Policy) -> RefPolicy:
    return RefPolicy(
        ratio=float(np.float32(policy.key_prune_ratio)),
        selection=policy.selection.name.lower(),
        p=float(np.float32(policy.cumulative_p)),
        min_keep=policy.cumulative_min_keep,
        max_keep=policy.cumulative_max_keep,
        recovery=policy.recovery.name.lower(),
        sign_bits=bool(policy.sign_bits),
        key_precision=policy.key_precision.name.lower(),
        value_precision=policy.value_precision.name.lower(),
        window=policy.window,
        seed=policy.seed,
        attention_scale=float(np.float32(policy.attention_scale)),
        eviction=policy.eviction.name.lower(),
        evict_budget=policy.evict_budget,
        pool_kernel=policy.pool_kernel,
        pyramid_ratio=float(np.float32(policy.pyramid_ratio)),
        sink_tokens=policy.sink_tokens,
        recent_tokens=policy.recent_tokens,
        key_pruning=policy.key_pruning.name.lower(),
        value_ratio=float(np.float32(policy.value_prune_ratio)),
        quant_group=policy.quant_group,
    )


def make_prompt(
    rng: np.random.Generator, n_q: int, n_kv: int, n: int, n_window: int, d: int
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Keys with outlier channels and tie cases (all-equal, all-zero, equal magnitudes, tie groups),
    values, and window queries with one all-zero channel (qn = 0) when n_window > 0."""
    keys = rng.standard_normal((n_kv, n, d), dtype=np.float32)
    keys[:, :, 5 % d :: 16] *= 5.0
    values = rng.standard_normal((n_kv, n, d), dtype=np.float32)
    if n > 4:
        j = np.arange(d)
        keys[:, 1] = 0.5
        keys[:, 2] = 0.0
        keys[:, 3] = np.where(j % 2 == 1, -0.25, 0.25)
        keys[:, 4] = 0.5 * (j % 4) - 0.75
    q_window = None
    if n_window:
        q_window = rng.standard_normal((n_q, n_window, d), dtype=np.float32)
        q_window[:, :, 3] = 0.0
    return keys, values, q_window


def bits(a: np.ndarray) -> np.ndarray:
    """float32 bit patterns, for exact comparisons that also tell -0.0 from 0.0."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def observable_state(cache: sparkv.KVCache, n_prompt: int):
    """Everything a test can observe of a cache whose layer 0 holds a pruned n_prompt-token prompt
    and one appended token: failed calls must leave it unchanged."""
    shape = cache.shape
    q = np.linspace(-1, 1, shape.n_q_heads * shape.head_dim, dtype=np.float32).reshape(
        shape.n_q_heads, shape.head_dim)
    return (
        cache.memory_report(),
        [cache.memory_report(layer) for layer in range(shape.n_layers)],
        [cache.tokens(layer) for layer in range(shape.n_layers)],
        cache.attend(0, q).tobytes(),
        cache.recovered_key(0, 1, n_prompt).tobytes(),
        cache.recovered_key(0, 0, 3).tobytes(),
        cache.value(0, 0, 3).tobytes(),
    )
