"""A plain numpy reference of SparK as SparKV specifies it, written for clarity, not speed.

Everything that the library stores is reproduced bit for bit: sums run in the documented order
(np.cumsum is sequential), roundings go through numpy's float16 (round to nearest even), the
draws use Python's math (the same libm as the C library). Attention is a double-precision softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

MASK64 = (1 << 64) - 1


# ---- storage precisions ----------------------------------------------------------------------


def to_f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16, round to nearest even: upper 16 bits of the float after adding 0x7fff + lsb."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return (bits & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def store(x: np.ndarray, precision: str) -> np.ndarray:
    return {"f32": lambda a: np.asarray(a, dtype=np.float32), "f16": to_f16, "bf16": to_bf16}[precision](x)


def fp16_scalar(x: float) -> float:
    """fp16(Float(x)) read back as a float."""
    return float(np.float32(x).astype(np.float16))


# ---- draws --------------------------------------------------------------------------------------


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniforms(seed: int, layer: int, kv_head: int, token: int, channel: int) -> Tuple[float, float]:
    h = mix64(mix64(mix64(mix64(seed) ^ layer) ^ kv_head) ^ token)
    d1 = mix64(h ^ channel)
    d2 = mix64(d1)
    return ((d1 >> 11) + 0.5) * 2.0**-53, ((d2 >> 11) + 0.5) * 2.0**-53


# ---- compression ---------------------------------------------------------------------------------


@dataclass
class RefPolicy:
    ratio: float = 0.0  # as the float32 the C struct holds
    selection: str = "topk"  # or "cumulative"
    p: float = 0.9
    min_keep: int = 1
    max_keep: int = 0
    recovery: str = "mean"  # none, mean, gaussian, exponential
    sign_bits: bool = True
    key_precision: str = "f16"
    value_precision: str = "f16"
    window: int = 32
    seed: int = 0

    def topk_keep(self, d: int) -> int:
        return d - math.floor(float(np.float32(self.ratio)) * d)

    def prunes(self, d: int) -> bool:
        return self.selection == "cumulative" or self.topk_keep(d) < d

    def n_stats(self, d: int) -> int:
        if not self.prunes(d):
            return 0
        return {"none": 0, "mean": 1, "exponential": 2, "gaussian": 3}[self.recovery]


def window_qnorm(q_window: np.ndarray, group: int, kv_head: int, use: int) -> Tuple[np.ndarray, np.float32]:
    """qn (float32, D) and c (float32) of one KV head from q_window (n_q, n_window, D)."""
    n_window, d = q_window.shape[1], q_window.shape[2]
    acc = np.zeros(d)
    for w in range(n_window - use, n_window):
        total = np.zeros(d)
        for g in range(group):  # heads ascending
            total = total + q_window[kv_head * group + g, w].astype(np.float64)
        bar = total / group
        acc = acc + bar * bar
    qn = np.sqrt(acc).astype(np.float32)
    c = np.float32(np.cumsum(qn.astype(np.float64))[-1] / d)
    return qn, (np.float32(1.0) if c == 0 else c)


def saliency(k: np.ndarray, qn: np.ndarray) -> np.ndarray:
    k64 = k.astype(np.float64)
    return k64 * k64 * qn.astype(np.float64)


def select(s: np.ndarray, policy: RefPolicy) -> np.ndarray:
    """Kept mask (bool, D): ties toward the lower channel index."""
    d = s.shape[0]
    order = np.lexsort((np.arange(d), -s))  # saliency descending, then index ascending
    if policy.selection == "topk":
        keep = policy.topk_keep(d)
    else:
        target = float(np.float32(policy.p)) * float(np.cumsum(s)[-1])
        prefix = np.concatenate([[0.0], np.cumsum(s[order])])
        hits = np.nonzero(prefix >= target)[0]
        keep = int(hits[0]) if hits.size else d
        max_keep = policy.max_keep or d
        keep = min(max(keep, policy.min_keep), max_keep)
    mask = np.zeros(d, dtype=bool)
    mask[order[:keep]] = True
    return mask


def compress_token(
    k: np.ndarray, qn: np.ndarray, c: np.float32, policy: RefPolicy, layer: int, kv_head: int, token: int
) -> Tuple[np.ndarray, np.ndarray]:
    """(kept mask, key as attention sees it) of one prompt token."""
    d = k.shape[0]
    if not policy.prunes(d):
        return np.ones(d, dtype=bool), store(k, policy.key_precision)
    s = saliency(k, qn)
    mask = select(s, policy)
    pruned = s[~mask]
    m = float(np.cumsum(pruned)[-1] / pruned.size) if pruned.size else 0.0
    theta = float(s[mask].min()) if mask.any() else float(pruned.max())
    sd = math.sqrt(float(np.cumsum((pruned - m) ** 2)[-1]) / pruned.size) if pruned.size else 0.0
    c64 = float(c)
    a = fp16_scalar(math.sqrt(m / c64))
    e = fp16_scalar(math.sqrt(theta / c64))
    b = fp16_scalar(math.sqrt(sd / c64))
    with np.errstate(divide="ignore"):
        rq = np.where(qn > 0, np.sqrt(c64 / qn.astype(np.float64)), 0.0).astype(np.float32)

    key = store(k, policy.key_precision).copy()
    for j in np.nonzero(~mask)[0]:
        if policy.recovery == "none":
            mag = np.float32(0.0)
        elif policy.recovery == "mean":
            mag = np.float32(a) * rq[j]
        else:
            u1, u2 = uniforms(policy.seed, layer, kv_head, token, int(j))
            if policy.recovery == "gaussian":
                x = a * a + b * b * math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586476925 * u2)
            else:
                x = -(a * a) * math.log(u1)
            x = min(max(x, 0.0), e * e)
            mag = np.float32(math.sqrt(x)) * rq[j]
        key[j] = -mag if (policy.sign_bits and k[j] < 0) else mag
    return mask, key


def prefill(
    keys: np.ndarray, values: np.ndarray, q_window: np.ndarray, policy: RefPolicy, group: int, layer: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected (keys as seen, masks, stored values, qn, c) of a prompt: keys/values (n_kv, n, D)."""
    n_kv, n, d = keys.shape
    out_k = np.empty_like(keys)
    masks = np.ones((n_kv, n, d), dtype=bool)
    qn_all = np.zeros((n_kv, d), dtype=np.float32)
    c_all = np.ones(n_kv, dtype=np.float32)
    for h in range(n_kv):
        if policy.prunes(d):
            use = min(policy.window, q_window.shape[1])
            qn_all[h], c_all[h] = window_qnorm(q_window, group, h, use)
        for t in range(n):
            masks[h, t], out_k[h, t] = compress_token(keys[h, t], qn_all[h], c_all[h], policy, layer, h, t)
    return out_k, masks, store(values, policy.value_precision), qn_all, c_all


# ---- attention -----------------------------------------------------------------------------------


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, scale: float = 0.0) -> np.ndarray:
    """softmax(scale * q.K^T) V in double; q (n_q, D), keys/values (n_kv, n, D)."""
    n_q, d = q.shape
    n_kv = keys.shape[0]
    group = n_q // n_kv
    scale = scale if scale > 0 else 1.0 / math.sqrt(d)
    out = np.empty((n_q, d))
    for i in range(n_q):
        k = keys[i // group].astype(np.float64)
        v = values[i // group].astype(np.float64)
        s = scale * (k @ q[i].astype(np.float64))
        p = np.exp(s - s.max())
        out[i] = (p @ v) / p.sum()
    return out


def memory(policy: RefPolicy, d: int, n_kv: int, n_prompt: int, n_append: int, kept_total: int) -> dict:
    """The documented memory report of one layer."""
    kb = 4 if policy.key_precision == "f32" else 2
    vb = 4 if policy.value_precision == "f32" else 2
    n = n_prompt + n_append
    if policy.prunes(d):
        key_bytes = kept_total * kb + n_kv * n_append * d * kb
        meta = n_kv * n_prompt * (d // 8 + (d // 8 if policy.sign_bits else 0) + 2 * policy.n_stats(d))
        meta += n_kv * (d * 4 + 4)
    else:
        key_bytes, meta = n_kv * n * d * kb, 0
    value_bytes = n_kv * n * d * vb
    return {
        "n_tokens": n_kv * n,
        "key_bytes": key_bytes,
        "key_meta_bytes": meta,
        "value_bytes": value_bytes,
        "total_bytes": key_bytes + meta + value_bytes,
        "dense_bytes": n_kv * n * d * 4,
    }
