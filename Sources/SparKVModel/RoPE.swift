import CSparKVModel

extension ModelArchitecture.RoPEStyle {
    /// Rotates the heads of `x[n][heads][headDim]` in place by their token's position: channel
    /// pair `p_i` by `position · base^(-2i/headDim)`, where `p_i` is `(2i, 2i+1)` for
    /// ``adjacentPairs`` and `(i, i + headDim/2)` for ``halfSplit``. Both styles share the kernel's
    /// cos/sin table, so they differ only in which channels a pair joins.
    func rotate(_ x: UnsafeMutablePointer<Float>, tokens n: Int, heads: Int, headDim d: Int,
                positions: UnsafePointer<Int32>, base: Float) throws {
        switch self {
        case .adjacentPairs:
            try svmCheck(svm_rope_adjacent(x, Int32(n), Int32(heads), Int32(d), positions, base), "rope")
        case .halfSplit:
            var table = [Float](repeating: 0, count: n * d)
            try svmCheck(svm_rope_table(positions, Int32(n), Int32(d), base, &table), "rope table")
            let half = d / 2
            table.withUnsafeBufferPointer { cs in
                for t in 0..<n {
                    let row = cs.baseAddress! + t * d   // row[2i] = cos, row[2i+1] = sin of angle i
                    for hd in 0..<heads {
                        let xh = x + (t * heads + hd) * d
                        for i in 0..<half {
                            let c = row[2 * i], s = row[2 * i + 1]
                            let x0 = xh[i], x1 = xh[i + half]
                            xh[i] = x0 * c - x1 * s
                            xh[i + half] = x0 * s + x1 * c
                        }
                    }
                }
            }
        }
    }
}
