import Foundation
import SparKV

/// Exact decode attention in double precision from the original float32 keys and values: the
/// yardstick the demo measures every cache against. Written for clarity, not speed.
///
/// - Parameters:
///   - query: `[queryHeads][headDim]`.
///   - keys, values: `[kvHeads][tokenCount][headDim]`.
///   - scale: softmax scale.
/// - Returns: `[queryHeads][headDim]` as doubles.
func referenceAttention(shape: ModelShape, query: [Float], keys: [Float], values: [Float], tokenCount: Int,
                        scale: Double) -> [Double] {
    let d = shape.headDim, group = shape.queryHeads / shape.kvHeads
    var out = [Double](repeating: 0, count: shape.queryHeads * d)
    var logits = [Double](repeating: 0, count: tokenCount)
    for qh in 0..<shape.queryHeads {
        let kvHead = qh / group
        let q = qh * d
        for t in 0..<tokenCount {
            let k = (kvHead * tokenCount + t) * d
            var dot = 0.0
            for j in 0..<d { dot += Double(query[q + j]) * Double(keys[k + j]) }
            logits[t] = scale * dot
        }
        let peak = logits.max() ?? 0
        var sum = 0.0
        for t in 0..<tokenCount {
            let w = exp(logits[t] - peak)
            logits[t] = w
            sum += w
        }
        for t in 0..<tokenCount {
            let w = logits[t] / sum
            let v = (kvHead * tokenCount + t) * d
            for j in 0..<d { out[q + j] += w * Double(values[v + j]) }
        }
    }
    return out
}

/// Relative L2 error `|approx - exact| / |exact|` of each query head's output.
func relativeErrors(approx: [Float], exact: [Double], heads: Int, headDim: Int) -> [Double] {
    (0..<heads).map { h in
        var diff = 0.0, norm = 0.0
        for j in h * headDim..<(h + 1) * headDim {
            let e = Double(approx[j]) - exact[j]
            diff += e * e
            norm += exact[j] * exact[j]
        }
        return norm > 0 ? (diff / norm).squareRoot() : diff.squareRoot()
    }
}
