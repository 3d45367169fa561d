#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_api.c into Tests/Fuzz/api/corpus/seed-*.

Each seed encodes a meaningful call sequence in the byte program fuzz_api.c decodes; the
encoder below mirrors the decoder's tables (keep them in sync when either changes). Crash
reproducers found by the fuzzer are kept next to the seeds as crash-* / regress-* files.

    python3 Tests/Fuzz/api/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# ---- tables of fuzz_api.c (same order) ----
GROUPS = [1, 2, 4, 3, 5, 8, 17, 1]
HEAD_DIMS = [128, 64, 8, 16, 32, 256, 24, 136, 96, 248]
CAPACITIES = [1024, 64, 300, 600, 16, 256, 1, 257, 4096, 520]
POLICY_FIELDS = [  # (name, table); None = one raw byte
    ("key_prune_ratio", [0.0, 0.8, 0.5, 0.25, 0.9, 0.97, 0.125, 0.75, 1.0, -0.1, "nan"]),
    ("selection", [0, 0, 0, 1]),
    ("cumulative_p", [0.9, 0.5, 1.0, 0.99, 0.1, 0.0]),
    ("cumulative_min_keep", [1, 0, 4, 8, 300]),
    ("cumulative_max_keep", [0, 8, 16, 4]),
    ("recovery", [1, 0, 2, 3, 4]),
    ("sign_bits", [1, 0, 0, 2]),
    ("key_precision", [1, 0, 2, 3, 4, 3, 4, 5]),
    ("value_precision", [1, 0, 2, 3, 4, 3, 4, 5]),
    ("window", [32, 1, 4, 8, 16, 64, 0]),
    ("seed", None),
    ("threads", [1, 2, 0, 1, 2, 3, -1]),
    ("attention_scale", [0.0, 0.125, 1.0, 1e-3, 10.0, -1.0, "inf"]),
    ("eviction", [0, 0, 1, 2, 3, 4]),
    ("evict_budget", [8, 1, 32, 100, 300, 512, 0]),
    ("pool_kernel", [5, 1, 3, 7, 0, 2, 31]),
    ("pyramid_ratio", [4.0, 1.0, 2.0, 1e6, 0.5, "nan"]),
    ("sink_tokens", [4, 0, 1, 16]),
    ("recent_tokens", [508, 8, 32, 0, 200]),
    ("key_pruning", [0, 0, 1, 2]),
    ("value_prune_ratio", [0.0, 0.0, 0.5, 0.25, 0.75, 1.0]),
    ("quant_group", [32, 8, 16, 64, 128, 0, 12]),
]
F32, F16, BF16, I8, I4 = 0, 1, 2, 3, 4
NONE, MEAN, GAUSSIAN, EXPONENTIAL = 0, 1, 2, 3
SNAPKV, PYRAMIDKV, STREAMING = 1, 2, 3
SCALES = [1.0, 0.01, 100.0, 1e4, 3e4, 7e4, 1e-20, 1e20]
SPECIALS = ["nan", "inf", "-inf", 65504.0, 65505.0, 65519.0, 65520.0, 7e4, -7e4, 1e5, 1e20, -1e20, 3.4e38,
            -3.4e38, 1e-45, -0.0, 0.0, 6e-8, 1e-30, 3.0, -3.0, 1e-4, 255.0]
OP = dict(prefill=0, append=2, attend=3, memory=5, inspect_key=6, inspect_value=7, inspect_qnorm=8,
          set_kernel=9, validate=10, queries=11, null_handle=11 | 0x80, free=12)


def idx(table, value):
    return table.index(value)


def shape(n_layers=1, n_kv=1, group=1, head_dim=128, capacity=1024):
    return bytes([0, n_layers - 1, n_kv - 1, idx(GROUPS, group), idx(HEAD_DIMS, head_dim),
                  idx(CAPACITIES, capacity)])


def policy(fixup=True, **fields):
    out = bytearray([16 if fixup else 0])
    for name, table in POLICY_FIELDS:
        if table is None:
            out.append(fields.get(name, 0) & 0xFF)
        else:
            default = table[0]
            out.append(idx(table, fields.get(name, default)))
    return bytes(out)


def tensor(scale=1.0, pattern=0, seed=1, patches=(), query=False, cancel=False, outlier=False, near=False,
           some_channels=False):
    """patches: [(index, special value)]."""
    assert len(patches) < 8
    m = idx(SCALES, scale) | (pattern << 3) | (len(patches) << 5)
    out = bytearray([m]) + struct.pack("<H", seed)
    if query:
        out.append((1 if cancel else 0) | (2 if outlier else 0) | (4 if some_channels else 0) | (8 if near else 0))
    for i, v in patches:
        out += struct.pack("<I", i) + bytes([idx(SPECIALS, v)])
    return bytes(out)


def op_prefill(layer=0, n=512, window=32, k=None, v=None, q=None):
    out = bytearray([OP["prefill"], layer])
    if n == 256:
        out.append(3)
    elif n == 512:
        out.append(4)
    elif 1 <= n <= 64:
        out += bytes([1, n - 1])
    elif 200 <= n <= 455:
        out += bytes([2, n - 200])
    else:
        raise ValueError(n)
    if window == min(n, 32):
        out.append(0)
    elif window == min(n, 8):
        out.append(3)
    else:
        out += bytes([1, (window - 1) % n])
    out.append(0)  # no NULL arguments
    out += k or tensor(seed=11)
    out += v or tensor(seed=12)
    out += q or tensor(seed=13, query=True)
    return bytes(out)


def op_append(layer=0, reps=1, k=None, v=None):
    return bytes([OP["append"], layer, (reps - 1) << 4]) + (k or tensor(seed=21)) + (v or tensor(seed=22))


def op_attend(layer=0, q=None):
    return bytes([OP["attend"], layer, 0]) + (q or tensor(seed=31, query=True))


def op_memory(all_layers=True):
    return bytes([OP["memory"], 3 if all_layers else 0]) + (b"" if all_layers else b"\x00")


def op_inspect(kind, layer=0, head=0, last=True):
    return bytes([OP[kind], layer, (head & 3) | ((1 if last else 0) << 2)]) + (b"" if last else b"\x00\x00")


def op_set_kernel(kernel):  # 0 auto, 1 portable, 2 avx2, 3 avx512
    return bytes([OP["set_kernel"], kernel])


def seed(name, *parts):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(b"".join(parts))


def attend_all_kernels(layer=0):
    out = b""
    for k in (1, 2, 3):
        out += op_set_kernel(k) + op_attend(layer)
    return out


def main():
    # SparK r = 0.8, MEAN recovery with sign bits, f16: the paper's default, every kernel.
    seed("spark-r08-mean-f16", shape(n_kv=2, group=2, head_dim=128, capacity=1024), policy(key_prune_ratio=0.8),
         b"\x01", op_prefill(n=512), op_append(reps=3), attend_all_kernels(), op_memory(),
         op_inspect("inspect_key"), op_inspect("inspect_qnorm"))
    # ThinK r = 0.8, f16 keys, f32 / i8 / i4 values (the SIMD over-read of issue 11, defect 1).
    for vp, tag in ((F32, "f32"), (I8, "i8"), (I4, "i4")):
        seed("think-r08-v" + tag, shape(n_kv=1, group=2, head_dim=128, capacity=1024),
             policy(key_prune_ratio=0.8, key_pruning=1, recovery=NONE, sign_bits=0, value_precision=vp),
             b"\x01", op_prefill(n=300, window=32), attend_all_kernels(), op_append(), attend_all_kernels())
    # Quantized storage: i8 keys / i4 values and i4 keys / i8 values, SparK GAUSSIAN, groups of 16.
    seed("spark-i8-i4-gauss", shape(n_kv=2, group=3, head_dim=64, capacity=600),
         policy(key_prune_ratio=0.5, recovery=GAUSSIAN, key_precision=I8, value_precision=I4, quant_group=16),
         b"\x01", op_prefill(n=257 + 43 if False else 300, window=16), op_append(reps=2), attend_all_kernels(),
         op_inspect("inspect_value"))
    seed("dense-i4-i8", shape(n_kv=1, group=4, head_dim=32, capacity=300),
         policy(key_precision=I4, value_precision=I8, quant_group=8), b"\x00",
         op_prefill(n=40, window=8), op_append(reps=5), attend_all_kernels())
    # Value pruning (r_v = 0.5) with SparK EXPONENTIAL, bf16 keys.
    seed("value-pruning", shape(n_kv=2, group=1, head_dim=64, capacity=600),
         policy(key_prune_ratio=0.25, recovery=EXPONENTIAL, key_precision=BF16, value_prune_ratio=0.5),
         b"\x01", op_prefill(n=256), attend_all_kernels(), op_inspect("inspect_value"))
    # SnapKV eviction (budget 100, pool 5) then SparK; PyramidKV over 3 layers; StreamingLLM.
    seed("snapkv", shape(n_kv=2, group=2, head_dim=64, capacity=600), policy(key_prune_ratio=0.5, eviction=SNAPKV,
         evict_budget=100), b"\x01", op_prefill(n=300, window=32), attend_all_kernels(), op_memory())
    seed("pyramidkv", shape(n_layers=3, n_kv=1, group=4, head_dim=32, capacity=600),
         policy(eviction=PYRAMIDKV, evict_budget=32), b"\x00",
         op_prefill(layer=0, n=200, window=32), op_prefill(layer=2, n=200, window=32), attend_all_kernels(2),
         op_memory(False))
    seed("streaming", shape(n_kv=1, group=1, head_dim=16, capacity=600),
         policy(eviction=STREAMING, sink_tokens=4, recent_tokens=32), b"\x01", op_prefill(n=256), op_append(),
         attend_all_kernels())
    # The same with f32 values, so the harness can match every survivor to its prompt row.
    seed("snapkv-f32-values", shape(n_kv=2, group=2, head_dim=32, capacity=600),
         policy(key_prune_ratio=0.5, eviction=SNAPKV, evict_budget=32, value_precision=F32), b"\x00",
         op_prefill(n=300, window=16), attend_all_kernels())
    seed("streaming-f32-values", shape(n_kv=2, group=1, head_dim=16, capacity=600),
         policy(eviction=STREAMING, sink_tokens=16, recent_tokens=200, value_precision=F32), b"\x00",
         op_prefill(n=256), op_append(), attend_all_kernels())
    # Finite values beyond f16 (7e4 in a dense f16 cache), a q.k overflow (1e20), tiny GQA window norms.
    seed("f16-overflow-7e4", shape(n_kv=1, group=1, head_dim=16, capacity=64), policy(), b"\x00",
         op_prefill(n=16, window=8, k=tensor(seed=3, patches=[(5, 7e4)])), attend_all_kernels())
    seed("qk-overflow-1e20", shape(n_kv=1, group=1, head_dim=8, capacity=16), policy(key_precision=F32), b"\x00",
         op_prefill(n=4, window=4, k=tensor(scale=1e20, pattern=2, seed=4)),
         op_attend(q=tensor(scale=1e20, pattern=2, seed=5, query=True)))
    seed("spark-cancel-window", shape(n_kv=1, group=2, head_dim=32, capacity=64), policy(key_prune_ratio=0.5),
         b"\x00", op_prefill(n=64, window=8, q=tensor(seed=6, query=True, cancel=True)), attend_all_kernels(),
         op_inspect("inspect_key"))
    # Nearly cancelling window queries (head 1 = -1.0001 * head 0 in channels 3 mod 8): tiny qn_j in those
    # channels, the unbounded recovery of issue 11 (defect 3) without the floor.
    seed("spark-near-cancel-window", shape(n_kv=1, group=2, head_dim=32, capacity=64), policy(key_prune_ratio=0.5),
         b"\x00", op_prefill(n=64, window=8, q=tensor(seed=6, query=True, cancel=True, near=True, some_channels=True)),
         attend_all_kernels(), op_inspect("inspect_key"))
    # Errors: NaN keys, prefill twice, NULL handles, a bad kernel, a policy with NaN.
    seed("errors", shape(n_kv=1, group=1, head_dim=8, capacity=16), policy(), b"\x00",
         op_prefill(n=8, window=8, k=tensor(seed=7, patches=[(3, "nan")])), op_prefill(n=8, window=8),
         op_prefill(n=8, window=8), op_attend(layer=1), op_set_kernel(7) + b"\x09\x00\x00\x00",
         bytes([OP["null_handle"], 2]), bytes([OP["validate"]]) + policy(key_prune_ratio="nan") + b"\x00\x00",
         op_memory(), bytes([OP["free"]]),
         shape(), policy(threads=-1), b"\x00")


if __name__ == "__main__":
    main()
