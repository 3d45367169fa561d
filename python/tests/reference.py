"""A plain numpy reference of SparK as SparKV specifies it, written for clarity, not speed.

Everything that the library stores is reproduced bit for bit: sums run in the documented order
(np.cumsum is sequential), roundings go through numpy's float16 (round to nearest even), int8 /
int4 storage follows sparkv.h's description of sparkv_precision (symmetric, fp16 scales; written
from the header, not from csrc/), the draws' 64-point tables come from statistics.NormalDist and
math by the formulas of sparkv_draw_standard, and recovery repeats its float32 operations in numpy.
Attention is a double-precision softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import List, Tuple

import numpy as np

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


# ---- storage precisions ----------------------------------------------------------------------


def to_f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16, round to nearest even: upper 16 bits of the float after adding 0x7fff + lsb."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return (bits & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


QUANT_MAX = {"i8": 127, "i4": 7}


def quantize_run(x: np.ndarray, qmax: int) -> np.ndarray:
    """Values sharing one fp16 scale, as read back (sparkv.h, sparkv_precision): a = max|x|,
    scale = fp16(a / Q) from the float quotient, s = scale as a float, q = 0 if s == 0 else
    clamp(rint(x / s), -Q, Q) with float division and ties to even; read back as the float product
    s * q. A quotient that would round to Inf (>= 65520) is the library's SPARKV_ERR_RANGE: ValueError."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    quotient = np.float32(np.max(np.abs(x))) / np.float32(qmax)
    if quotient >= 65520:
        raise ValueError(f"max |x| / Q = {quotient} has no fp16 scale (SPARKV_ERR_RANGE)")
    s = np.float32(np.float16(quotient))
    if s == 0:
        return np.zeros_like(x)
    q = np.clip(np.rint(x / s), -qmax, qmax).astype(np.float32)
    return (s * q).astype(np.float32)


def quantize_rows(x: np.ndarray, qmax: int, group: int) -> np.ndarray:
    """Rows stored whole: one scale per `group` consecutive channels of the last axis."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    flat, res = x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1])
    for r in range(flat.shape[0]):
        for j in range(0, flat.shape[1], group):
            res[r, j : j + group] = quantize_run(flat[r, j : j + group], qmax)
    return out


def store(x: np.ndarray, precision: str, group: int = 32) -> np.ndarray:
    """Values as stored and read back; i8/i4 rows stored whole, one scale per `group` channels."""
    if precision in QUANT_MAX:
        return quantize_rows(x, QUANT_MAX[precision], group)
    return {"f32": lambda a: np.asarray(a, dtype=np.float32), "f16": to_f16, "bf16": to_bf16}[precision](x)


def store_kept(x: np.ndarray, mask: np.ndarray, precision: str) -> np.ndarray:
    """A row whose kept entries (mask) are stored, the kept values of an i8/i4 row sharing one scale;
    the other entries are left as they are (the caller fills them)."""
    x = np.asarray(x, dtype=np.float32)
    out = x.copy()
    if precision in QUANT_MAX:
        out[mask] = quantize_run(x[mask], QUANT_MAX[precision])
    else:
        out[mask] = store(x[mask], precision)
    return out


def fp16_scalar(x: float) -> float:
    """fp16(Float(x)) read back as a float."""
    return float(np.float32(x).astype(np.float16))


# ---- draws --------------------------------------------------------------------------------------


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


DRAW_BINS = 64


def draw_bin(seed: int, layer: int, kv_head: int, token: int, channel: int) -> int:
    """The bin of a recovery draw, as sparkv.h documents it: the token hash, then fmix32 of the
    counter 16 * (j // 80) + j % 16, whose 6-bit field (j // 16) % 5 (from the top) is the bin."""
    h = mix64(mix64(mix64(mix64(seed) ^ layer) ^ kv_head) ^ token)
    lane, block = channel % 16, channel // 16
    x = (((h & MASK32) ^ (h >> 32)) + (16 * (block // 5) + lane) * 0x9E3779B9) & MASK32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK32
    x ^= x >> 16
    return (x >> (26 - 6 * (block % 5))) & 63


def _normal_points() -> List[np.float32]:
    nd = NormalDist()
    edges = [-math.inf] + [nd.inv_cdf(i / DRAW_BINS) for i in range(1, DRAW_BINS)] + [math.inf]
    pdf = lambda x: 0.0 if math.isinf(x) else nd.pdf(x)  # noqa: E731
    return [np.float32(DRAW_BINS * (pdf(edges[i]) - pdf(edges[i + 1]))) for i in range(DRAW_BINS)]


def _sqrt_exponential_points() -> List[np.float32]:
    a = [-math.log1p(-i / DRAW_BINS) for i in range(DRAW_BINS)]
    out = []
    for i in range(DRAW_BINS):
        upper = (a[i + 1] + 1.0) * (DRAW_BINS - i - 1) if i + 1 < DRAW_BINS else 0.0
        out.append(np.float32(math.sqrt((a[i] + 1.0) * (DRAW_BINS - i) - upper)))
    return out


NORMAL_POINTS = _normal_points()
SQRT_EXPONENTIAL_POINTS = _sqrt_exponential_points()


def draw_standard(seed: int, layer: int, kv_head: int, token: int, channel: int, recovery: str) -> np.float32:
    table = {"gaussian": NORMAL_POINTS, "exponential": SQRT_EXPONENTIAL_POINTS}.get(recovery)
    return table[draw_bin(seed, layer, kv_head, token, channel)] if table else np.float32(0.0)


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
    attention_scale: float = 0.0
    eviction: str = "none"  # snapkv, pyramidkv, streaming
    evict_budget: int = 512
    pool_kernel: int = 5
    pyramid_ratio: float = 4.0
    sink_tokens: int = 4
    recent_tokens: int = 508
    key_pruning: str = "spark"  # or "think"
    value_ratio: float = 0.0
    quant_group: int = 32  # channels per fp16 scale of i8/i4 rows stored whole

    def topk_keep(self, d: int) -> int:
        return d - math.floor(float(np.float32(self.ratio)) * d)

    def value_keep(self, d: int) -> int:
        return d - math.floor(float(np.float32(self.value_ratio)) * d)

    def prunes(self, d: int) -> bool:
        return self.selection == "cumulative" or self.topk_keep(d) < d

    def key_mode(self, d: int) -> str:
        """"dense", "spark" or "think"."""
        if not self.prunes(d):
            return "dense"
        return self.key_pruning

    def prunes_values(self, d: int) -> bool:
        return self.value_keep(d) < d

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
        return np.ones(d, dtype=bool), store(k, policy.key_precision, policy.quant_group)
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
    # sparkv.h: recovery floors qn_j at c / SPARKV_RECOVERY_QN_FLOOR (16)
    rq = np.sqrt(c64 / np.maximum(qn.astype(np.float64), c64 / 16.0)).astype(np.float32)

    key = store_kept(k, mask, policy.key_precision)  # statistics above come from the float key
    for j in np.nonzero(~mask)[0]:
        if policy.recovery == "none":
            mag = np.float32(0.0)
        elif policy.recovery == "mean":
            mag = np.float32(a) * rq[j]
        else:
            # sparkv.h's float32 sequence, one rounding per operation
            z = draw_standard(policy.seed, layer, kv_head, token, int(j), policy.recovery)
            fa, fe = np.float32(a), np.float32(e)
            if policy.recovery == "gaussian":
                fb = np.float32(b)
                x = fa * fa + (fb * fb) * z
                r = np.sqrt(min(max(x, np.float32(0.0)), fe * fe))
            else:
                r = min(fa * z, fe)
            mag = np.float32(r * rq[j])
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
    return out_k, masks, store(values, policy.value_precision, policy.quant_group), qn_all, c_all


# ---- the policy pipeline: eviction, key pruning, value pruning -------------------------------------


def layer_budget(policy: RefPolicy, layer: int, n_layers: int, n_prefix: int) -> int:
    """Prompt tokens SnapKV / PyramidKV keep besides the window in one layer."""
    b = float(policy.evict_budget)
    if policy.eviction == "pyramidkv" and n_layers > 1:
        ratio = float(np.float32(policy.pyramid_ratio))
        last = 2.0 * policy.evict_budget / (1.0 + ratio)
        first = ratio * last
        x = first + (last - first) * layer / (n_layers - 1)
        b = math.floor(x + 0.5)  # C round(): half away from zero (x > 0)
    return int(min(max(b, 1), n_prefix))


def snapkv_scores(keys_h: np.ndarray, q_window: np.ndarray, group: int, kv_head: int, use: int, scale: float,
                  pool_kernel: int) -> np.ndarray:
    """Pooled SnapKV score of each of the n - use prefix tokens of one KV head (double)."""
    n, d = keys_h.shape
    n_window = q_window.shape[1]
    scale = scale if scale > 0 else 1.0 / math.sqrt(d)
    prefix = n - use
    k64 = keys_h.astype(np.float64)
    acc = np.zeros(prefix)
    for w in range(use):
        pos = prefix + w  # the prompt position of this window query
        for g in range(group):
            q = q_window[kv_head * group + g, n_window - use + w].astype(np.float64)
            logits = scale * (k64[: pos + 1] @ q)
            p = np.exp(logits - logits.max())
            acc += (p / p.sum())[:prefix]
    acc /= use * group
    half = pool_kernel // 2
    padded = np.concatenate([np.zeros(half), acc, np.zeros(half)])
    return np.array([padded[t : t + pool_kernel].sum() for t in range(prefix)]) / pool_kernel


def surviving_rows(policy: RefPolicy, keys_h: np.ndarray, q_window, group: int, kv_head: int, layer: int,
                   n_layers: int) -> np.ndarray:
    """Prompt rows of one KV head that survive eviction, ascending."""
    n = keys_h.shape[0]
    if policy.eviction == "streaming":
        t = np.arange(n)
        return t[(t < policy.sink_tokens) | (t + policy.recent_tokens >= n)]
    if policy.eviction not in ("snapkv", "pyramidkv"):
        return np.arange(n)
    use = min(policy.window, q_window.shape[1])
    prefix = n - use
    budget = layer_budget(policy, layer, n_layers, prefix)
    pooled = snapkv_scores(keys_h, q_window, group, kv_head, use, policy.attention_scale, policy.pool_kernel)
    order = np.lexsort((np.arange(prefix), -pooled))  # score descending, then index ascending
    return np.sort(np.concatenate([order[:budget], np.arange(prefix, n)]))


def think_mask(kept_keys: np.ndarray, qn: np.ndarray, use: int, keep: int) -> np.ndarray:
    """ThinK's channel set of one KV head over its surviving keys (kept, D): bool (D,)."""
    d = kept_keys.shape[1]
    k64 = kept_keys.astype(np.float64)
    q64 = qn.astype(np.float64)
    score = (q64 * q64 / use) * ((k64 * k64).sum(axis=0) / kept_keys.shape[0])
    order = np.lexsort((np.arange(d), -score))
    mask = np.zeros(d, dtype=bool)
    mask[order[:keep]] = True
    return mask


def value_row(v: np.ndarray, policy: RefPolicy) -> np.ndarray:
    """A prompt value as stored: without value pruning, v in value_precision; with it, the T_v
    largest |v| (ties: lower index) in value_precision and fp16(mean of the others) elsewhere."""
    d = v.shape[0]
    keep = policy.value_keep(d)
    if keep >= d:
        return store(v, policy.value_precision, policy.quant_group)
    order = np.lexsort((np.arange(d), -np.abs(v.astype(np.float64))))
    kept = np.zeros(d, dtype=bool)
    kept[order[:keep]] = True
    fill = fp16_scalar(float(np.cumsum(v[~kept].astype(np.float64))[-1]) / (d - keep))
    return np.where(kept, store_kept(v, kept, policy.value_precision), np.float32(fill)).astype(np.float32)


@dataclass
class Expected:
    """What one layer holds after prefill: per KV head the surviving rows and, for every stored
    prompt token, the kept mask, the key as attention sees it and the stored value."""

    rows: list
    masks: np.ndarray  # (n_kv, kept, D) bool
    keys: np.ndarray  # (n_kv, kept, D) float32
    values: np.ndarray  # (n_kv, kept, D) float32
    qn: np.ndarray
    c: np.ndarray

    @property
    def kept(self) -> int:
        return self.masks.shape[1]


def pipeline(keys: np.ndarray, values: np.ndarray, q_window, policy: RefPolicy, group: int, layer: int,
             n_layers: int = 1) -> Expected:
    """The whole prefill pipeline of one layer: keys/values (n_kv, n, D)."""
    n_kv, n, d = keys.shape
    mode = policy.key_mode(d)
    rows = [surviving_rows(policy, keys[h], q_window, group, h, layer, n_layers) for h in range(n_kv)]
    kept = len(rows[0])
    assert all(len(r) == kept for r in rows)
    masks = np.ones((n_kv, kept, d), dtype=bool)
    out_k = np.zeros((n_kv, kept, d), dtype=np.float32)
    out_v = np.zeros((n_kv, kept, d), dtype=np.float32)
    qn_all = np.zeros((n_kv, d), dtype=np.float32)
    c_all = np.ones(n_kv, dtype=np.float32)
    for h in range(n_kv):
        survivors = keys[h, rows[h]]
        if mode != "dense":
            use = min(policy.window, q_window.shape[1])
            qn_all[h], c_all[h] = window_qnorm(q_window, group, h, use)
        if mode == "think":
            mask = think_mask(survivors, qn_all[h], use, policy.topk_keep(d))
            masks[h] = mask
            for i in range(kept):
                out_k[h, i] = np.where(mask, store_kept(survivors[i], mask, policy.key_precision), np.float32(0.0))
        else:
            for i in range(kept):  # survivors are renumbered 0..kept-1 (the draws hash that index)
                masks[h, i], out_k[h, i] = compress_token(survivors[i], qn_all[h], c_all[h], policy, layer, h, i)
        for i in range(kept):
            out_v[h, i] = value_row(values[h, rows[h][i]], policy)
    return Expected(rows, masks, out_k, out_v, qn_all, c_all)


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


def memory(policy: RefPolicy, d: int, n_kv: int, n_prompt: int, n_append: int, kept_total: int,
           n_kept=None) -> dict:
    """The documented memory report of one layer: n_prompt prompt tokens seen, n_kept of them kept
    per KV head (default: all), n_append appended; kept_total = kept key channels summed over the
    stored prompt tokens and heads (SparK)."""
    kb = 4 if policy.key_precision == "f32" else 2
    vb = 4 if policy.value_precision == "f32" else 2
    nk = n_prompt if n_kept is None else n_kept
    n = nk + n_append
    nb = d // 8
    mode = policy.key_mode(d)
    if mode == "spark":
        key_bytes = kept_total * kb + n_kv * n_append * d * kb
        meta = n_kv * nk * (nb + (nb if policy.sign_bits else 0) + 2 * policy.n_stats(d))
        meta += n_kv * (d * 4 + 4)
    elif mode == "think":
        key_bytes = n_kv * nk * policy.topk_keep(d) * kb + n_kv * n_append * d * kb
        meta = n_kv * nb
    else:
        key_bytes, meta = n_kv * n * d * kb, 0
    if policy.prunes_values(d):
        value_bytes = n_kv * nk * policy.value_keep(d) * vb + n_kv * n_append * d * vb
        value_meta = n_kv * nk * (nb + 2)
    else:
        value_bytes, value_meta = n_kv * n * d * vb, 0
    return {
        "n_tokens": n,
        "key_bytes": key_bytes,
        "key_meta_bytes": meta,
        "value_bytes": value_bytes,
        "value_meta_bytes": value_meta,
        "total_bytes": key_bytes + meta + value_bytes + value_meta,
        "dense_bytes": (n_prompt + n_append) * n_kv * d * 4,
    }
