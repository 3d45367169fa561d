import CSparKVModel

/// The keys and values a sliding-window layer (Gemma 3: 5 of every 6 layers) can still attend to:
/// the last `window` positions, in a ring, dense. Older positions are overwritten: the layer never
/// holds a token it can no longer see. Such layers stay out of the SparKV cache (their cost is
/// bounded by the window, whatever the policy).
///
/// Slots are token-major `[window][kvHeads][headDim]`, position p in slot p % window. Attention
/// ignores the order of its keys (RoPE is already in them), so the ring needs no reordering.
struct SlidingWindowKV {
    let window: Int
    let kvHeads: Int
    let headDim: Int
    private var keys: [Float]
    private var values: [Float]
    /// Positions held: min(positions seen, window).
    private(set) var count = 0

    init(window: Int, kvHeads: Int, headDim: Int) {
        self.window = window
        self.kvHeads = kvHeads
        self.headDim = headDim
        keys = .init(repeating: 0, count: window * kvHeads * headDim)
        values = .init(repeating: 0, count: window * kvHeads * headDim)
    }

    /// Bytes held (float32 keys and values of the positions held).
    var bytes: Int { 2 * count * kvHeads * headDim * MemoryLayout<Float>.size }

    /// Stores the key and value `[kvHeads][headDim]` of `position`, dropping the one `window`
    /// positions before it.
    mutating func append(position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let width = kvHeads * headDim, slot = position % window
        keys.withUnsafeMutableBufferPointer { (k: inout UnsafeMutableBufferPointer<Float>) in
            (k.baseAddress! + slot * width).update(from: key, count: width)
        }
        values.withUnsafeMutableBufferPointer { (v: inout UnsafeMutableBufferPointer<Float>) in
            (v.baseAddress! + slot * width).update(from: value, count: width)
        }
        count = min(count + 1, window)
    }

    /// Loads the last `window` of `n` prefilled positions from head-major `[kvHeads][n][headDim]`
    /// keys and values (a ``PromptState`` layer).
    mutating func load(keys k: [Float], values v: [Float], tokens n: Int) {
        var row = [Float](repeating: 0, count: kvHeads * headDim)
        var valueRow = row
        for t in max(0, n - window)..<n {
            for hd in 0..<kvHeads {
                let from = (hd * n + t) * headDim
                row.replaceSubrange(hd * headDim..<(hd + 1) * headDim, with: k[from..<from + headDim])
                valueRow.replaceSubrange(hd * headDim..<(hd + 1) * headDim, with: v[from..<from + headDim])
            }
            append(position: t, key: row, value: valueRow)
        }
    }

    /// `out[queryHeads][headDim]` = attention of one query `[queryHeads][headDim]` over the
    /// positions held.
    func attend(query: UnsafePointer<Float>, queryHeads: Int, scale: Float, into out: UnsafeMutablePointer<Float>) throws {
        try svmCheck(svm_attention(query, 1, keys, values, Int32(count), Int32(queryHeads), Int32(kvHeads),
                                   Int32(headDim), scale, out), "sliding-window attention")
    }
}

/// Causal attention of `n` tokens where each query sees only the last `window` positions (itself
/// included): one query at a time over its window (`svm_attention` aligns its queries with the
/// last keys). q `[n][queryHeads][d]`, k/v `[n][kvHeads][d]`, out like q.
func slidingWindowAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, tokens n: Int,
                            queryHeads: Int, kvHeads: Int, headDim d: Int, window: Int, scale: Float,
                            out: UnsafeMutablePointer<Float>) throws {
    let qw = queryHeads * d, kw = kvHeads * d
    for t in 0..<n {
        let first = max(0, t - window + 1)
        try svmCheck(svm_attention(q + t * qw, 1, k + first * kw, v + first * kw, Int32(t - first + 1),
                                   Int32(queryHeads), Int32(kvHeads), Int32(d), scale, out + t * qw),
                     "sliding-window attention")
    }
}
