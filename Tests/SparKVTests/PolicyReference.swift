// PolicyReference.swift — a naive, double-precision model of the policy pipeline of sparkv_prefill
// (SnapKV / PyramidKV / StreamingLLM eviction, ThinK key pruning, value pruning, and the memory
// report), written from the header's doc comment for clarity, not speed, and independently of
// csrc/. SparK itself is modelled by Reference.swift (RefMath), which this file reuses for the
// window query norms and attention.
//
// Like Reference.swift, nothing here imports CSparKV or SparKV.

import Foundation

enum PolicyRef {
    // MARK: - Eviction

    /// Rows of KV head `h`'s keys (`[n][D]` floats) in a prompt.
    static func keyRow(_ p: TestPrompt, head h: Int, token t: Int) -> ArraySlice<Float> {
        p.keys[((h * p.n + t) * p.D)..<((h * p.n + t + 1) * p.D)]
    }

    static func valueRow(_ p: TestPrompt, head h: Int, token t: Int) -> ArraySlice<Float> {
        p.values[((h * p.n + t) * p.D)..<((h * p.n + t + 1) * p.D)]
    }

    /// SnapKV's pooled score of every prefix token (`0..<n-u`) of KV head `h`:
    /// 1. each of the last u window rows is the query at prompt position n-u+i; per query head of
    ///    the group, its causal softmax (scale * q.k) over tokens 0...position;
    /// 2. the weights of the prefix tokens averaged over the u queries and the G heads;
    /// 3. average-pooled along the prefix with width `pool`, zero padding, divided by `pool`.
    static func snapScores(_ p: TestPrompt, head h: Int, group G: Int, window: Int, pool: Int,
                           scale: Double) -> [Double] {
        let n = p.n, D = p.D
        let u = min(window, p.nWindow)
        let prefix = n - u
        var mean = [Double](repeating: 0, count: prefix)
        for i in 0..<u {
            let row = p.nWindow - u + i
            let position = n - u + i
            for g in 0..<G {
                let qh = h * G + g
                let q = p.qWindow[((qh * p.nWindow + row) * D)..<((qh * p.nWindow + row + 1) * D)]
                var logits = [Double](repeating: 0, count: position + 1)
                for t in 0...position {
                    var dot = 0.0
                    for (j, k) in keyRow(p, head: h, token: t).enumerated() {
                        dot += Double(q[q.startIndex + j]) * Double(k)
                    }
                    logits[t] = scale * dot
                }
                let top = logits.max()!
                let weights = logits.map { exp($0 - top) }
                let total = weights.reduce(0, +)
                for t in 0..<prefix { mean[t] += weights[t] / total }
            }
        }
        mean = mean.map { $0 / Double(u * G) }
        let half = pool / 2
        var pooled = [Double](repeating: 0, count: prefix)
        for t in 0..<prefix {
            var sum = 0.0
            for d in -half...half where t + d >= 0 && t + d < prefix { sum += mean[t + d] }
            pooled[t] = sum / Double(pool)
        }
        return pooled
    }

    /// Indices of the `count` largest scores, ties toward the lower index, in ascending order.
    static func topIndices(_ scores: [Double], count: Int) -> [Int] {
        let order = scores.indices.sorted { a, b in scores[a] != scores[b] ? scores[a] > scores[b] : a < b }
        return order.prefix(count).sorted()
    }

    /// Prompt tokens SnapKV keeps for KV head `h`: the `budget` best pooled prefix tokens and
    /// the u window tokens, in prompt order.
    static func snapKeep(_ p: TestPrompt, head h: Int, group G: Int, window: Int, budget: Int, pool: Int,
                         scale: Double) -> [Int] {
        let u = min(window, p.nWindow)
        let scores = snapScores(p, head: h, group: G, window: window, pool: pool, scale: scale)
        return topIndices(scores, count: budget) + Array((p.n - u)..<p.n)
    }

    /// PyramidKV's budget of `layer`: last = 2B/(1+ratio), first = ratio*last,
    /// b = round(first + (last-first)*layer/(L-1)) (B when L = 1), clamped to [1, prefix].
    static func pyramidBudget(mean B: Int, ratio: Double, layer: Int, layers L: Int, prefix: Int) -> Int {
        var b = B
        if L > 1 {
            let last = 2 * Double(B) / (1 + ratio)
            let first = ratio * last
            b = Int((first + (last - first) * Double(layer) / Double(L - 1)).rounded(.toNearestOrAwayFromZero))
        }
        return min(max(b, 1), prefix)
    }

    /// Prompt tokens StreamingLLM keeps: the first `sinks` and the last `recent`.
    static func streamingKeep(n: Int, sinks: Int, recent: Int) -> [Int] {
        (0..<n).filter { $0 < sinks || $0 >= n - recent }
    }

    // MARK: - ThinK

    /// ThinK's kept channels of one KV head: the T largest score_j = (qn_j^2 / u) * mean_t(k_tj^2)
    /// over the surviving tokens `rows`, ties toward the lower index.
    static func thinkChannels(rows: [ArraySlice<Float>], qn: [Float], u: Int, keep T: Int) -> [Bool] {
        let D = qn.count
        var score = [Double](repeating: 0, count: D)
        for j in 0..<D {
            var sum = 0.0
            for row in rows {
                let k = Double(row[row.startIndex + j])
                sum += k * k
            }
            let q = Double(qn[j])
            score[j] = (q * q / Double(u)) * (sum / Double(rows.count))
        }
        var mask = [Bool](repeating: false, count: D)
        for j in topIndices(score, count: T) { mask[j] = true }
        return mask
    }

    /// A key as ThinK stores it: kept channels in the key precision, pruned channels 0.
    static func thinkKey(_ row: ArraySlice<Float>, mask: [Bool], precision: RefPrecision) -> [Float] {
        row.enumerated().map { j, k in mask[j] ? precision.round(k) : 0 }
    }

    // MARK: - Value pruning

    /// A value as value pruning stores it: the T_v values of largest |v| (ties toward the lower
    /// index) in the value precision, the others fp16(mean of the pruned values).
    static func prunedValue(_ row: ArraySlice<Float>, keep T: Int, precision: RefPrecision) -> [Float] {
        let v = Array(row)
        let magnitude = v.map { Double(abs($0)) }
        var kept = [Bool](repeating: false, count: v.count)
        for j in topIndices(magnitude, count: T) { kept[j] = true }
        var sum = 0.0, count = 0
        for j in v.indices where !kept[j] {
            sum += Double(v[j])
            count += 1
        }
        let fill = count > 0 ? Float(Float16(Float(sum / Double(count)))) : 0
        return v.indices.map { kept[$0] ? precision.round(v[$0]) : fill }
    }

    // MARK: - Memory

    /// The memory report of one layer, from the header's formulas.
    struct Memory: Equatable, CustomStringConvertible {
        var tokens = 0, keyBytes = 0, keyMetaBytes = 0, valueBytes = 0, valueMetaBytes = 0, totalBytes = 0, denseBytes = 0

        static func + (a: Memory, b: Memory) -> Memory {
            Memory(tokens: a.tokens + b.tokens, keyBytes: a.keyBytes + b.keyBytes,
                   keyMetaBytes: a.keyMetaBytes + b.keyMetaBytes, valueBytes: a.valueBytes + b.valueBytes,
                   valueMetaBytes: a.valueMetaBytes + b.valueMetaBytes, totalBytes: a.totalBytes + b.totalBytes,
                   denseBytes: a.denseBytes + b.denseBytes)
        }

        var description: String {
            "tokens=\(tokens) key=\(keyBytes) keyMeta=\(keyMetaBytes) value=\(valueBytes) valueMeta=\(valueMetaBytes) "
                + "total=\(totalBytes) dense=\(denseBytes)"
        }
    }

    /// How a layer stores prompt keys.
    enum KeyStorage {
        case dense
        /// SparK: the kept channels summed over the stored prompt tokens of every head, and the
        /// per-token metadata bytes (mask, signs, statistics).
        case spark(keptChannels: Int, metaPerToken: Int)
        /// ThinK: T channels per token, one D/8 mask per head.
        case think(keep: Int)
    }

    /// Memory of one layer with `kept` prompt tokens per head (of `prompt` seen) and `appended`
    /// dense tokens, `heads` KV heads of D channels.
    static func memory(prompt: Int, kept: Int, appended: Int, heads H: Int, D: Int, keys: KeyStorage,
                       keyBytes kb: Int, valueBytes vb: Int, valueKeep: Int) -> Memory {
        var m = Memory()
        m.tokens = kept + appended
        switch keys {
        case .dense:
            m.keyBytes = (kept + appended) * H * D * kb
        case .spark(let keptChannels, let metaPerToken):
            m.keyBytes = keptChannels * kb + appended * H * D * kb
            m.keyMetaBytes = kept * H * metaPerToken + H * (D * 4 + 4)
        case .think(let T):
            m.keyBytes = kept * H * T * kb + appended * H * D * kb
            m.keyMetaBytes = H * D / 8
        }
        if valueKeep < D {
            m.valueBytes = kept * H * valueKeep * vb + appended * H * D * vb
            m.valueMetaBytes = kept * H * (D / 8 + 2)
        } else {
            m.valueBytes = (kept + appended) * H * D * vb
        }
        m.totalBytes = m.keyBytes + m.keyMetaBytes + m.valueBytes + m.valueMetaBytes
        m.denseBytes = (prompt + appended) * H * D * 4
        return m
    }
}
