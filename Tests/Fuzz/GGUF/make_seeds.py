#!/usr/bin/env python3
"""Writes the seed inputs of the GGUF fuzz target into corpus/ (committed; rerun to regenerate).

A GGUF v3 writer of its own (stdlib only), independent of the Swift reader it feeds:
  seed-tiny-llama-f32.bin      a valid 1-layer Llama (hidden 8, F32, tied embeddings) with a
                                byte-level tokenizer: passes every check of the loader
  seed-tiny-llama-quant.bin    a valid 2-layer Llama (hidden 32) in Q4_1/Q8_0/F16 with an untied
                                output and SmolLM2's metadata layout
  seed-metadata-types.bin      every metadata type, nested and empty arrays, one tensor per type
and the regression inputs of issue 11 (each crashed, trapped or overflowed before its fix):
  regress-output-norm-8.bin    output_norm [8] in a hidden-32 model: svm_rmsnorm read 32 floats
  regress-attn-norm-4.bin      blk.1.attn_norm [4]: the same through a block's norm
  regress-embd-row-16.bin      token_embd rows of 16 values for hidden 32, tied output: the
                                embedding and output matmul read past each row
  regress-context-2e62.bin     llama.context_length = 2^62: `contextLength * 4` trapped
  regress-long-key-array.bin   a 60000-byte key on a 512-element string array: a message holding
                                the key was built for every element
  regress-zero-dim-row.bin     a tensor [2^40, 0]: no bytes, but dequantizeRow(0) allocated 4 TiB
Inputs the fuzzer finds later go to corpus/ as regress-<what>.bin by hand; this script does not
touch files it does not write.

    python3 Tests/Fuzz/GGUF/make_seeds.py
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# metadata value types
U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64V = range(13)
# ggml tensor types
F32, F16, Q4_1, Q8_0 = 0, 1, 3, 8
FIXED = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32V: "<f", BOOL: "<?",
         U64: "<Q", I64: "<q", F64V: "<d"}


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype, value):
    if vtype in FIXED:
        return struct.pack(FIXED[vtype], value)
    if vtype == STR:
        return gguf_string(value)
    etype, elements = value
    return struct.pack("<IQ", etype, len(elements)) + b"".join(encode_value(etype, e) for e in elements)


def f16(x):
    return struct.pack("<e", x)


def tensor_bytes(ttype, shape, rng, norm=False):
    count = 1
    for d in shape:
        count *= d
    if ttype == F32:
        return b"".join(struct.pack("<f", (1 + 0.1 * (rng.random() - 0.5)) if norm else 0.2 * (rng.random() - 0.5))
                        for _ in range(count))
    if ttype == F16:
        return b"".join(f16(1 + 0.1 * (rng.random() - 0.5)) for _ in range(count))
    assert count % 32 == 0
    out = b""
    for _ in range(count // 32):
        if ttype == Q8_0:
            out += f16(0.002) + bytes(rng.randrange(256) for _ in range(32))
        else:  # Q4_1
            out += f16(0.01) + f16(-0.08) + bytes(rng.randrange(256) for _ in range(16))
    return out


def gguf(metadata, tensors, alignment=32):
    """metadata: [(key, vtype, value)]; tensors: [(name, shape, ttype, data)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, vtype, value in metadata:
        out += gguf_string(key) + struct.pack("<I", vtype) + encode_value(vtype, value)
    offsets, offset = [], 0
    for _, _, _, data in tensors:
        offsets.append(offset)
        offset = (offset + len(data) + alignment - 1) // alignment * alignment
    for (name, shape, ttype, _), off in zip(tensors, offsets):
        out += gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ttype, off)
    out += b"\0" * (-len(out) % alignment)
    start = len(out)
    for (_, _, _, data), off in zip(tensors, offsets):
        out += b"\0" * (start + off - len(out)) + data
    return out


def byte_level_vocab(words):
    """GPT-2's byte alphabet for printable ASCII, plus a few merged words and specials."""
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [3, 3, 3]
    alphabet = [chr(c) for c in range(0x21, 0x7f)] + ["\u0120", "\u010a"]  # Ġ (space), Ċ (newline)
    tokens += alphabet
    types += [1] * len(alphabet)
    merges = []
    for w in words:
        merges.append(" ".join(w[:2]))
        tokens.append(w[:2])
        types.append(1)
    return tokens, types, merges


def llama(hidden, heads, kv_heads, ff, layers, matrix_type, norm_type, untied, seed, extra_meta=(), shape_override=None):
    rng = random.Random(seed)
    tokens, types, merges = byte_level_vocab(["he", "ll", "wo", "or", "ld"])
    vocab = len(tokens)
    head_dim = hidden // heads
    meta = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "tiny"),
        ("llama.block_count", U32, layers),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, hidden),
        ("llama.feed_forward_length", U32, ff),
        ("llama.attention.head_count", U32, heads),
        ("llama.attention.head_count_kv", U32, kv_heads),
        ("llama.rope.freq_base", F32V, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", F32V, 1e-5),
        ("llama.rope.dimension_count", U32, head_dim),
        ("llama.vocab_size", U32, vocab),
        ("general.alignment", U32, 32),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "smollm"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
        ("tokenizer.chat_template", STR,
         "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"),
    ]
    for key, vtype, value in extra_meta:
        meta = [m for m in meta if m[0] != key] + [(key, vtype, value)]
    shape_override = shape_override or {}
    q, kv = heads * head_dim, kv_heads * head_dim

    def matrix(name, cols, rows):
        shape = shape_override.get(name, [cols, rows])
        return (name, shape, matrix_type, tensor_bytes(matrix_type, shape, rng))

    def norm(name):
        shape = shape_override.get(name, [hidden])
        return (name, shape, norm_type, tensor_bytes(norm_type, shape, rng, norm=True))

    tensors = [matrix("token_embd.weight", hidden, vocab), norm("output_norm.weight")]
    if untied:
        tensors.append(matrix("output.weight", hidden, vocab))
    for l in range(layers):
        b = "blk.%d." % l
        tensors += [norm(b + "attn_norm.weight"), matrix(b + "attn_q.weight", hidden, q),
                    matrix(b + "attn_k.weight", hidden, kv), matrix(b + "attn_v.weight", hidden, kv),
                    matrix(b + "attn_output.weight", q, hidden), norm(b + "ffn_norm.weight"),
                    matrix(b + "ffn_gate.weight", hidden, ff), matrix(b + "ffn_up.weight", hidden, ff),
                    matrix(b + "ffn_down.weight", ff, hidden)]
    return gguf(meta, tensors)


def metadata_types():
    rng = random.Random(3)
    meta = [
        ("general.architecture", STR, "llama"),
        ("t.u8", U8, 200), ("t.i8", I8, -100), ("t.u16", U16, 60000), ("t.i16", I16, -30000),
        ("t.u32", U32, 4000000000), ("t.i32", I32, -2000000000), ("t.f32", F32V, 1e-5), ("t.bool", BOOL, True),
        ("t.string", STR, "h\u00e9llo \u2713"), ("t.u64", U64, 1 << 40), ("t.i64", I64, -(1 << 40)),
        ("t.f64", F64V, 0.1),
        ("t.ints", ARR, (I32, [1, -2, 3])), ("t.bools", ARR, (BOOL, [True, False])),
        ("t.strings", ARR, (STR, ["a", "", "<|im_end|>"])),
        ("t.nested", ARR, (ARR, [(STR, ["x", "y"]), (STR, []), (U16, [7, 8])])),
        ("t.empty", ARR, (F32V, [])),
    ]
    tensors = [("f32", [4, 2], F32, tensor_bytes(F32, [4, 2], rng)), ("f16", [4], F16, tensor_bytes(F16, [4], rng)),
               ("q8_0", [32, 2], Q8_0, tensor_bytes(Q8_0, [32, 2], rng)), ("q4_1", [64], Q4_1, tensor_bytes(Q4_1, [64], rng))]
    return gguf(meta, tensors)


def quant_model(shape_override=None, extra_meta=(), tied=False):
    return llama(32, 2, 1, 64, 2, Q4_1, F16, not tied, 2, extra_meta=extra_meta, shape_override=shape_override or {})


def regressions():
    out = {
        "regress-output-norm-8.bin": quant_model({"output_norm.weight": [8]}),
        "regress-attn-norm-4.bin": quant_model({"blk.1.attn_norm.weight": [4]}),
        "regress-embd-row-16.bin": llama(32, 2, 1, 64, 1, F32, F32, False, 4,
                                          shape_override={"token_embd.weight": [16, 104]}),
        "regress-context-2e62.bin": quant_model(extra_meta=[("llama.context_length", U64, 1 << 62)]),
    }
    key = "k" * 60000
    out["regress-long-key-array.bin"] = gguf([(key, ARR, (STR, [""] * 512))], [])
    out["regress-zero-dim-row.bin"] = gguf([("general.architecture", STR, "llama")], [("empty", [1 << 40, 0], F32, b"")])
    return out


def main():
    os.makedirs(CORPUS, exist_ok=True)
    seeds = {
        "seed-tiny-llama-f32.bin": llama(8, 2, 1, 16, 1, F32, F32, False, 1),
        "seed-tiny-llama-quant.bin": llama(32, 2, 1, 64, 2, Q4_1, F16, True, 2),
        "seed-metadata-types.bin": metadata_types(),
    }
    seeds.update(regressions())
    for name, data in seeds.items():
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
