"""The memory planner predicts the memory report of caches really built, and answers its searches
with sizes that fit (one more does not)."""

import numpy as np
import pytest

import sparkv
from sparkv import KVCache, Policy, Shape

SHAPE = Shape(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=64, capacity=800)
POLICIES = {
    "dense": lambda: Policy(),
    "spark": lambda: Policy.spark(0.8),
    "think-i8": lambda: Policy.think(0.5, value_precision="i8"),
    "snapkv": lambda: Policy.snapkv(200),
    "vprune": lambda: Policy(value_prune_ratio=0.5),
}


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("prompt, appended", [(0, 3), (255, 0), (257, 10), (600, 100)])
def test_plan_equals_the_report_of_a_built_cache(rng, name, prompt, appended):
    policy = POLICIES[name]()
    cache = KVCache(SHAPE, policy)
    k = rng.standard_normal((2, max(prompt, 1), 64), dtype=np.float32)
    q = rng.standard_normal((4, min(max(prompt, 1), 32), 64), dtype=np.float32)
    try:
        for layer in range(3):
            if prompt:
                cache.prefill(layer, k, k, q)
            for _ in range(appended):
                cache.append(layer, np.ascontiguousarray(k[:, 0]), np.ascontiguousarray(k[:, 0]))
    except sparkv.InvalidPolicyError:
        with pytest.raises(sparkv.InvalidPolicyError):
            sparkv.plan_memory(SHAPE, policy, prompt, appended)
        return
    assert sparkv.plan_memory(SHAPE, policy, prompt, appended) == cache.memory_report()


def test_searches_return_the_last_size_that_fits():
    policy = Policy.spark(0.8)
    budget = 2_000_000
    n = sparkv.plan_max_prompt(SHAPE, policy, budget, batch=2, appended_tokens=5)
    assert 2 * sparkv.plan_memory(SHAPE, policy, n, 5)["reserved_bytes"] <= budget
    assert 2 * sparkv.plan_memory(SHAPE, policy, n + 1, 5)["reserved_bytes"] > budget
    b = sparkv.plan_max_batch(SHAPE, policy, budget, 300)
    per = sparkv.plan_memory(SHAPE, policy, 300)["reserved_bytes"]
    assert b * per <= budget < (b + 1) * per


def test_planner_errors():
    with pytest.raises(sparkv.CapacityError):
        sparkv.plan_memory(SHAPE, Policy(), 800, 1)
    with pytest.raises(ValueError):
        sparkv.plan_memory(SHAPE, Policy(), -1)
    with pytest.raises(ValueError, match="cache_type"):
        sparkv.llama_cpp_bytes(SHAPE, "q5_k", 10)
    # llama.cpp q8_0: 128 values per row = 4 blocks of 34 bytes, K and V, 3 layers
    assert sparkv.llama_cpp_bytes(SHAPE, "q8_0", 10) == 4 * 34 * 2 * 3 * 10
