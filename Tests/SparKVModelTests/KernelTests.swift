// KernelTests.swift — the CPU kernels of the real-model path (CSparKVModel) against naive
// double-precision references written here, the SIMD paths against the portable one, and
// thread-count invariance. The references quantize and dequantize on their own (ggml block layouts).

import CSparKVModel
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Reference helpers

private func halfBits(_ x: Float) -> UInt16 { Float16(x).bitPattern }
private func halfValue(_ lo: UInt8, _ hi: UInt8) -> Float { Float(Float16(bitPattern: UInt16(lo) | UInt16(hi) << 8)) }

/// A weight matrix in one of the formats, built by the test's own quantizer, with its values as
/// the format defines them (value = d*q + m in float).
private struct Weights {
    var type: svm_type
    var rows: Int
    var cols: Int
    var bytes: [UInt8]
    var values: [Float]  // [rows][cols] dequantized

    var rowBytes: Int { bytes.count / rows }

    init(type: svm_type, rows: Int, cols: Int, seed: UInt64, scale: Float = 0.1) {
        self.type = type
        self.rows = rows
        self.cols = cols
        var rng = TestRng(seed)
        let src = rng.floats(rows * cols, scale: scale)
        var bytes: [UInt8] = []
        var values: [Float] = []
        func put16(_ h: UInt16) { bytes.append(UInt8(h & 0xff)); bytes.append(UInt8(h >> 8)) }
        switch type {
        case SVM_F32:
            for x in src { withUnsafeBytes(of: x.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
            values = src
        case SVM_F16:
            for x in src { put16(halfBits(x)); values.append(Float(Float16(x))) }
        case SVM_Q8_0:
            for b in stride(from: 0, to: src.count, by: 32) {
                let blk = src[b..<b + 32]
                let amax = blk.map { abs($0) }.max()!
                let d = Float(Float16(amax / 127))
                put16(halfBits(d))
                for x in blk {
                    let q = d == 0 ? 0 : Int8(max(-127, min(127, (x / d).rounded())))
                    bytes.append(UInt8(bitPattern: q))
                    values.append(d * Float(q))
                }
            }
        case SVM_Q4_1:
            for b in stride(from: 0, to: src.count, by: 32) {
                let blk = Array(src[b..<b + 32])
                let lo = blk.min()!, hi = blk.max()!
                let d = Float(Float16((hi - lo) / 15)), m = Float(Float16(lo))
                put16(halfBits(d))
                put16(halfBits(m))
                let q = blk.map { d == 0 ? 0 : UInt8(max(0, min(15, (($0 - m) / d).rounded()))) }
                for j in 0..<16 { bytes.append(q[j] | q[j + 16] << 4) }
                var v = [Float](repeating: 0, count: 32)
                for j in 0..<32 { v[j] = d * Float(q[j]) + m }
                values.append(contentsOf: v)
            }
        default:
            fatalError("unsupported test type")
        }
        self.bytes = bytes
        self.values = values
    }

    /// Per block (row, block): (d, m, q[32]) read back from the bytes (quantized types).
    func block(_ r: Int, _ b: Int) -> (d: Float, m: Float, q: [Int]) {
        let base = r * rowBytes
        if type == SVM_Q8_0 {
            let o = base + b * 34
            let q = (0..<32).map { Int(Int8(bitPattern: bytes[o + 2 + $0])) }
            return (halfValue(bytes[o], bytes[o + 1]), 0, q)
        }
        let o = base + b * 20
        var q = [Int](repeating: 0, count: 32)
        for j in 0..<16 {
            q[j] = Int(bytes[o + 4 + j] & 15)
            q[j + 16] = Int(bytes[o + 4 + j] >> 4)
        }
        return (halfValue(bytes[o], bytes[o + 1]), halfValue(bytes[o + 2], bytes[o + 3]), q)
    }
}

/// Q8 activations as the header specifies them (float arithmetic, round to nearest even).
private func quantizeActivations(_ x: ArraySlice<Float>) -> (q: [Int], d: [Float], qsum: [Int]) {
    var q: [Int] = [], d: [Float] = [], qsum: [Int] = []
    let xs = Array(x)
    for b in stride(from: 0, to: xs.count, by: 32) {
        let blk = xs[b..<b + 32]
        let amax = blk.map { abs($0) }.max()!
        let db = amax / 127
        let id: Float = db > 0 ? 1 / db : 0
        var s = 0
        for v in blk {
            let qi = Int((v * id).rounded(.toNearestOrEven))
            q.append(qi)
            s += qi
        }
        d.append(db)
        qsum.append(s)
    }
    return (q, d, qsum)
}

/// The fast path's formula evaluated in double: the per-block terms and the sum of their magnitudes.
private func q8Reference(_ w: Weights, _ x: [Float], n: Int) -> (y: [Double], mag: [Double]) {
    let nb = w.cols / 32
    var y = [Double](repeating: 0, count: n * w.rows), mag = y
    for t in 0..<n {
        let a = quantizeActivations(x[(t * w.cols)..<((t + 1) * w.cols)])
        for r in 0..<w.rows {
            var acc = 0.0, m = 0.0
            for b in 0..<nb {
                let blk = w.block(r, b)
                var isum = 0
                for j in 0..<32 { isum += blk.q[j] * a.q[b * 32 + j] }
                let term = Double(blk.d * a.d[b]) * Double(isum)
                let off = Double(blk.m) * Double(a.d[b] * Float(a.qsum[b]))
                acc += term + off
                m += abs(term) + abs(off)
            }
            y[t * w.rows + r] = acc
            m += 1e-30
            mag[t * w.rows + r] = m
        }
    }
    return (y, mag)
}

/// Exact product of the dequantized weights and X in double, with sum |w x| and the 8-bit
/// activation error bound sum_b (dx_b / 2) sum_{k in b} |w_k|.
private func exactReference(_ w: Weights, _ x: [Float], n: Int) -> (y: [Double], mag: [Double], actBound: [Double]) {
    var y = [Double](repeating: 0, count: n * w.rows), mag = y, bound = y
    for t in 0..<n {
        let xt = x[(t * w.cols)..<((t + 1) * w.cols)]
        let a = quantizeActivations(xt)
        for r in 0..<w.rows {
            var acc = 0.0, m = 0.0, e = 0.0
            for k in 0..<w.cols {
                let p = Double(w.values[r * w.cols + k]) * Double(x[t * w.cols + k])
                acc += p
                m += abs(p)
                e += Double(a.d[k / 32]) / 2 * abs(Double(w.values[r * w.cols + k]))
            }
            y[t * w.rows + r] = acc
            mag[t * w.rows + r] = m + 1e-30
            bound[t * w.rows + r] = e
        }
    }
    return (y, mag, bound)
}



private func matmul(_ w: Weights, _ x: [Float], n: Int, exact: Bool = false) -> (svm_status, [Float]) {
    var y = [Float](repeating: .nan, count: n * w.rows)
    let st = w.bytes.withUnsafeBytes { wb in
        exact ? svm_matmul_exact(wb.baseAddress, w.type, Int32(w.rows), Int32(w.cols), x, Int32(n), &y)
            : svm_matmul(wb.baseAddress, w.type, Int32(w.rows), Int32(w.cols), x, Int32(n), &y)
    }
    return (st, y)
}

private func bitsEqual(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

// MARK: - Tests

/// Shapes that cross the tile edges: rows not a multiple of 4, odd block counts, n around 4 and 64,
/// and the SmolLM2 shapes.
private struct MatmulCase: Sendable, CustomStringConvertible {
    var rows: Int, cols: Int, n: Int
    var description: String { "\(rows)x\(cols) n=\(n)" }
}

private let matmulCases: [MatmulCase] = [
    MatmulCase(rows: 1, cols: 32, n: 1),
    MatmulCase(rows: 7, cols: 96, n: 3),
    MatmulCase(rows: 13, cols: 224, n: 5),
    MatmulCase(rows: 37, cols: 160, n: 17),
    MatmulCase(rows: 8, cols: 64, n: 70),  // few rows, many tokens: threads split the tokens
    MatmulCase(rows: 192, cols: 576, n: 1),
    MatmulCase(rows: 64, cols: 1536, n: 2),
    MatmulCase(rows: 61, cols: 576, n: 9),
]

@Suite("Model kernels", .serialized)
struct KernelTests {
    @Test func blockSizesAndRowBytes() {
        #expect(svm_row_bytes(SVM_Q4_1, 576) == 360)
        #expect(svm_row_bytes(SVM_Q8_0, 576) == 612)
        #expect(svm_row_bytes(SVM_F32, 576) == 2304)
        #expect(svm_row_bytes(SVM_F16, 577) == 1154)
        #expect(svm_row_bytes(SVM_Q4_1, 33) == 0)
        #expect(svm_row_bytes(svm_type(rawValue: 2), 64) == 0)
        #expect(svm_block_size(SVM_Q8_0) == 32 && svm_block_size(SVM_F16) == 1)
        #expect(String(cString: svm_type_name(SVM_Q4_1)) == "q4_1")
    }

    @Test(arguments: [SVM_F32, SVM_F16, SVM_Q4_1, SVM_Q8_0])
    func embedRowDequantizesExactly(type: svm_type) {
        let w = Weights(type: type, rows: 5, cols: 96, seed: 11)
        for r in 0..<w.rows {
            var out = [Float](repeating: .nan, count: w.cols)
            let st = w.bytes.withUnsafeBytes { svm_embed_row($0.baseAddress, type, Int32(r), Int32(w.cols), &out) }
            #expect(st == SVM_OK)
            #expect(bitsEqual(out, Array(w.values[(r * w.cols)..<((r + 1) * w.cols)])), "row \(r)")
        }
    }

    @Test func embedRowReadsNibblesLowThenHigh() {
        // One Q4_1 block: d = 1, m = -8, byte i = (i & 15) | (15 - i) << 4.
        var bytes: [UInt8] = [0x00, 0x3c, 0x00, 0xc8]  // fp16 1.0, fp16 -8.0
        for i in 0..<16 { bytes.append(UInt8(i & 15) | UInt8(15 - i) << 4) }
        var out = [Float](repeating: .nan, count: 32)
        let st = bytes.withUnsafeBytes { svm_embed_row($0.baseAddress, SVM_Q4_1, 0, 32, &out) }
        #expect(st == SVM_OK)
        let want: [Float] = (0..<16).map { Float($0) - 8 } + (0..<16).map { Float(15 - $0) - 8 }
        #expect(out == want)
    }

    @Test(arguments: [SVM_Q4_1, SVM_Q8_0])
    func quantizeRoundTripsWithinHalfAStep(type: svm_type) {
        var rng = TestRng(5)
        let rows = 4, cols = 128
        let src = rng.floats(rows * cols, scale: 3)
        var bytes = [UInt8](repeating: 0, count: rows * svm_row_bytes(type, Int32(cols)))
        #expect(svm_quantize(type, src, Int32(rows), Int32(cols), &bytes) == SVM_OK)
        for r in 0..<rows {
            var out = [Float](repeating: 0, count: cols)
            _ = bytes.withUnsafeBytes { svm_embed_row($0.baseAddress, type, Int32(r), Int32(cols), &out) }
            for b in 0..<(cols / 32) {
                let blk = src[(r * cols + b * 32)..<(r * cols + b * 32 + 32)]
                let step = type == SVM_Q8_0 ? blk.map { abs($0) }.max()! / 127 : (blk.max()! - blk.min()!) / 15
                for j in 0..<32 {
                    let err = abs(out[b * 32 + j] - src[r * cols + b * 32 + j])
                    // half a step, plus the fp16 rounding of d (|q| * d * 2^-11) and of m
                    #expect(err <= step * 0.57 + 1e-3 * abs(src[r * cols + b * 32 + j]) + 1e-6,
                            "row \(r) block \(b) element \(j): error \(err), step \(step)")
                }
            }
        }
    }

    @Test(arguments: [SVM_F32, SVM_F16, SVM_Q4_1, SVM_Q8_0])
    func exactMatmulMatchesDoubleReference(type: svm_type) {
        for c in matmulCases {
            let w = Weights(type: type, rows: c.rows, cols: c.cols, seed: UInt64(c.rows * 1000 + c.cols))
            var rng = TestRng(UInt64(c.n) + 99)
            let x = rng.floats(c.n * c.cols)
            let (st, y) = matmul(w, x, n: c.n, exact: true)
            #expect(st == SVM_OK)
            let ref = exactReference(w, x, n: c.n)
            for i in 0..<y.count {
                #expect(abs(Double(y[i]) - ref.y[i]) <= 2e-6 * ref.mag[i], "\(c) element \(i)")
            }
        }
    }

    @Test(arguments: [SVM_F32, SVM_F16, SVM_Q4_1, SVM_Q8_0])
    func exactMatmulIsBitIdenticalOnEveryPath(type: svm_type) {
        for c in matmulCases + [MatmulCase(rows: 5, cols: 37, n: 3)] where c.cols % Int(svm_block_size(type)) == 0 {
            let w = Weights(type: type, rows: c.rows, cols: c.cols, seed: UInt64(c.cols))
            var rng = TestRng(77)
            let x = rng.floats(c.n * c.cols)
            let results = ISAPath.available.map { path in onPath(path) { matmul(w, x, n: c.n, exact: true).1 } }
            for r in results.dropFirst() { #expect(bitsEqual(r, results[0]), "\(c)") }
        }
    }

    @Test(arguments: [SVM_Q4_1, SVM_Q8_0])
    func quantizedMatmulMatchesItsFormulaOnEveryPath(type: svm_type) {
        for path in ISAPath.available {
            for c in matmulCases {
                let w = Weights(type: type, rows: c.rows, cols: c.cols, seed: UInt64(c.rows * 7 + c.cols))
                var rng = TestRng(UInt64(c.n) * 3 + 1)
                let x = rng.floats(c.n * c.cols, scale: 2)
                let (st, y) = onPath(path) { matmul(w, x, n: c.n) }
                #expect(st == SVM_OK)
                let ref = q8Reference(w, x, n: c.n)
                let exact = exactReference(w, x, n: c.n)
                var worst = 0.0
                for i in 0..<y.count {
                    let err = abs(Double(y[i]) - ref.y[i])
                    worst = max(worst, err / ref.mag[i])
                    // the documented bound against the exact product
                    let bound = exact.actBound[i] + 2e-6 * (exact.mag[i] + ref.mag[i])
                    #expect(abs(Double(y[i]) - exact.y[i]) <= bound, "\(path) \(c) element \(i) vs exact product")
                }
                #expect(worst <= 2e-6, "\(path) \(c): relative error \(worst) against the Q8 formula")
            }
        }
    }

    @Test(arguments: [SVM_Q4_1, SVM_Q8_0])
    func simdPathsMatchPortable(type: svm_type) {
        let c = MatmulCase(rows: 99, cols: 576, n: 11)
        let w = Weights(type: type, rows: c.rows, cols: c.cols, seed: 3)
        var rng = TestRng(4)
        let x = rng.floats(c.n * c.cols)
        let (_, yp) = onPath(.portable) { matmul(w, x, n: c.n) }
        let ref = q8Reference(w, x, n: c.n)
        for path in ISAPath.available where path != .portable {
            let (st, y) = onPath(path) { matmul(w, x, n: c.n) }
            #expect(st == SVM_OK)
            for i in 0..<y.count {
                #expect(abs(y[i] - yp[i]) <= Float(2e-6 * ref.mag[i]), "\(path) element \(i): \(y[i]) vs \(yp[i])")
            }
        }
    }

    @Test(arguments: [SVM_Q4_1, SVM_Q8_0, SVM_F16])
    func matmulIsUnchangedByThreadCount(type: svm_type) {
        for path in ISAPath.available {
            for c in [MatmulCase(rows: 61, cols: 576, n: 9), MatmulCase(rows: 8, cols: 64, n: 70),
                      MatmulCase(rows: 576, cols: 1536, n: 1), MatmulCase(rows: 130, cols: 224, n: 40)] {
                let w = Weights(type: type, rows: c.rows, cols: c.cols, seed: 8)
                var rng = TestRng(9)
                let x = rng.floats(c.n * c.cols)
                let (_, y1) = onPath(path, threads: 1) { matmul(w, x, n: c.n) }
                let (_, y2) = onPath(path, threads: 2) { matmul(w, x, n: c.n) }
                let (_, y3) = onPath(path, threads: 3) { matmul(w, x, n: c.n) }
                #expect(bitsEqual(y1, y2) && bitsEqual(y1, y3), "\(path) \(c)")
                let (_, e1) = onPath(path, threads: 1) { matmul(w, x, n: c.n, exact: true) }
                let (_, e2) = onPath(path, threads: 2) { matmul(w, x, n: c.n, exact: true) }
                #expect(bitsEqual(e1, e2), "exact \(path) \(c)")
            }
        }
    }

    @Test func matmulRejectsBadArgumentsAndLeavesOutputAlone() {
        let w = Weights(type: SVM_Q8_0, rows: 4, cols: 64, seed: 1)
        let x = [Float](repeating: 1, count: 64)
        var y = [Float](repeating: 42, count: 4)
        w.bytes.withUnsafeBytes { wb in
            #expect(svm_matmul(wb.baseAddress, SVM_Q8_0, 4, 48, x, 1, &y) == SVM_ERR_SHAPE)
            #expect(svm_matmul(wb.baseAddress, svm_type(rawValue: 2), 4, 64, x, 1, &y) == SVM_ERR_TYPE)
            #expect(svm_matmul(wb.baseAddress, SVM_Q8_0, 0, 64, x, 1, &y) == SVM_ERR_ARG)
            #expect(svm_matmul(nil, SVM_Q8_0, 4, 64, x, 1, &y) == SVM_ERR_ARG)
            #expect(svm_matmul_exact(wb.baseAddress, SVM_Q8_0, 4, 64, x, -1, &y) == SVM_ERR_ARG)
        }
        #expect(y == [42, 42, 42, 42])
        #expect(String(cString: svm_status_string(SVM_ERR_SHAPE)).contains("multiple"))
    }

    @Test func zeroActivationsGiveZero() {
        for path in ISAPath.available {
            let w = Weights(type: SVM_Q4_1, rows: 9, cols: 64, seed: 2)
            let (_, y) = onPath(path) { matmul(w, [Float](repeating: 0, count: 128), n: 2) }
            #expect(y.allSatisfy { $0 == 0 }, "\(path)")
        }
    }

    @Test func isaSelection() {
        #expect(svm_isa_supported(SVM_ISA_PORTABLE) == 1)
        holdingISA {
            #expect(svm_get_isa() != SVM_ISA_AUTO)
            let old = svm_get_isa()
            #expect(svm_set_isa(SVM_ISA_AUTO) == SVM_OK)
            #expect(svm_get_isa() != SVM_ISA_AUTO)
            #expect(svm_set_isa(svm_isa(rawValue: 9)) == SVM_ERR_UNSUPPORTED)
            _ = svm_set_isa(old)
            let t = svm_get_threads()
            svm_set_threads(3)
            #expect(svm_get_threads() == 3)
            svm_set_threads(t)
        }
        // scratch can be released at any time; the next call allocates again
        svm_release_scratch()
        let w = Weights(type: SVM_Q8_0, rows: 4, cols: 32, seed: 1)
        let (st, y) = matmul(w, [Float](repeating: 1, count: 32), n: 1)
        #expect(st == SVM_OK && y.allSatisfy { $0.isFinite })
    }

    // MARK: Row-wise and element-wise

    @Test func rmsnormMatchesFormula() {
        var rng = TestRng(21)
        let n = 3, dim = 576
        let x = rng.floats(n * dim, scale: 4)
        let weight = rng.floats(dim)
        for useWeight in [true, false] {
            var out = [Float](repeating: .nan, count: n * dim)
            if useWeight { svm_rmsnorm(x, weight, Int32(n), Int32(dim), 1e-5, &out) }
            else { svm_rmsnorm(x, nil, Int32(n), Int32(dim), 1e-5, &out) }
            for i in 0..<n {
                let row = x[(i * dim)..<((i + 1) * dim)]
                let ms = row.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(dim)
                let s = 1 / (ms + 1e-5).squareRoot()
                for j in 0..<dim {
                    let want = Double(x[i * dim + j]) * s * (useWeight ? Double(weight[j]) : 1)
                    #expect(abs(Double(out[i * dim + j]) - want) <= 3e-7 * abs(want) + 1e-12)
                }
            }
        }
        // in place
        var y = x
        svm_rmsnorm(y, weight, Int32(n), Int32(dim), 1e-5, &y)
        var out = [Float](repeating: 0, count: n * dim)
        svm_rmsnorm(x, weight, Int32(n), Int32(dim), 1e-5, &out)
        #expect(bitsEqual(y, out))
    }

    @Test func ropeRotatesAdjacentPairs() {
        var rng = TestRng(31)
        let nTok = 5, heads = 3, hd = 64
        let base: Float = 100_000
        let positions: [Int32] = [0, 1, 17, 1000, 8191]
        let x = rng.floats(nTok * heads * hd)
        var y = x
        #expect(svm_rope_adjacent(&y, Int32(nTok), Int32(heads), Int32(hd), positions, base) == SVM_OK)
        for t in 0..<nTok {
            for h in 0..<heads {
                for i in 0..<(hd / 2) {
                    let theta = Double(positions[t]) * pow(Double(base), -2 * Double(i) / Double(hd))
                    let o = (t * heads + h) * hd + 2 * i
                    let x0 = Double(x[o]), x1 = Double(x[o + 1])
                    let w0 = x0 * cos(theta) - x1 * sin(theta), w1 = x0 * sin(theta) + x1 * cos(theta)
                    // cos and sin are rounded to float: error <= ~1.2e-7 * (|x0| + |x1|) per output
                    let tol = 3e-7 * (abs(x0) + abs(x1)) + 1e-9
                    #expect(abs(Double(y[o]) - w0) <= tol && abs(Double(y[o + 1]) - w1) <= tol,
                            "token \(t) head \(h) pair \(i)")
                }
            }
        }
        // position 0 is the identity; the table form is the same computation
        #expect(bitsEqual(Array(y[0..<(heads * hd)]), Array(x[0..<(heads * hd)])))
        var table = [Float](repeating: 0, count: nTok * hd)
        #expect(svm_rope_table(positions, Int32(nTok), Int32(hd), base, &table) == SVM_OK)
        var z = x
        svm_rope_apply(&z, Int32(nTok), Int32(heads), Int32(hd), table)
        #expect(bitsEqual(y, z))
        #expect(svm_rope_adjacent(&z, 1, 1, 63, positions, base) == SVM_ERR_ARG)
    }

    @Test func swigluMatchesSiluTimesUp() {
        var rng = TestRng(41)
        let n = 40_000  // several thread chunks
        let gate = rng.floats(n, scale: 12), up = rng.floats(n, scale: 3)
        var results: [[Float]] = []
        for path in ISAPath.available {
            var out = [Float](repeating: .nan, count: n)
            onPath(path) { svm_swiglu(gate, up, Int64(n), &out) }
            results.append(out)
        }
        for i in 0..<n {
            let g = Double(gate[i])
            let want = g / (1 + exp(-g)) * Double(up[i])
            #expect(abs(Double(results[0][i]) - want) <= 2e-6 * abs(want) + 1e-30, "element \(i)")
        }
        for r in results.dropFirst() { #expect(bitsEqual(r, results[0]), "SIMD swiglu differs") }
        // thread-invariant and in place
        var inPlace = gate
        onPath(.portable, threads: 1) { svm_swiglu(inPlace, up, Int64(n), &inPlace) }
        #expect(bitsEqual(inPlace, results[0]))
    }

    @Test func addAndSoftmax() {
        var rng = TestRng(51)
        let a = rng.floats(1000), b = rng.floats(1000)
        var out = [Float](repeating: 0, count: 1000)
        svm_add(a, b, 1000, &out)
        #expect(out == zip(a, b).map { $0 + $1 })
        var s = rng.floats(3 * 50, scale: 30)
        let orig = s
        svm_softmax(&s, 3, 50)
        for r in 0..<3 {
            let row = orig[(r * 50)..<((r + 1) * 50)].map(Double.init)
            let mx = row.max()!
            let e = row.map { exp($0 - mx) }
            let sum = e.reduce(0, +)
            for j in 0..<50 { #expect(abs(Double(s[r * 50 + j]) - e[j] / sum) <= 1e-6 * (e[j] / sum) + 1e-9) }
        }
    }

    // MARK: Attention

    private struct AttnCase: Sendable, CustomStringConvertible {
        var nQ: Int, nKV: Int, hq: Int, hkv: Int, d: Int
        var description: String { "nq=\(nQ) nkv=\(nKV) heads \(hq)/\(hkv) d=\(d)" }
    }

    private static let attnCases: [AttnCase] = [
        AttnCase(nQ: 1, nKV: 1, hq: 2, hkv: 1, d: 16),
        AttnCase(nQ: 70, nKV: 70, hq: 9, hkv: 3, d: 64),    // SmolLM2 heads, partial blocks
        AttnCase(nQ: 130, nKV: 130, hq: 4, hkv: 4, d: 32),  // multi-head, several key blocks
        AttnCase(nQ: 33, nKV: 33, hq: 6, hkv: 2, d: 48),    // three 16-lane columns
        AttnCase(nQ: 65, nKV: 65, hq: 3, hkv: 1, d: 40),    // not a multiple of 16: AVX2 kernels
        AttnCase(nQ: 17, nKV: 17, hq: 2, hkv: 2, d: 20),    // not a multiple of 8: portable kernels
        AttnCase(nQ: 20, nKV: 150, hq: 8, hkv: 2, d: 64),   // chunked prefill: queries at the end
    ]

    private static func naiveAttention(_ q: [Float], _ k: [Float], _ v: [Float], _ c: AttnCase, scale: Double)
        -> (out: [Double], vmax: Double)
    {
        var out = [Double](repeating: 0, count: c.nQ * c.hq * c.d)
        let g = c.hq / c.hkv
        var vmax = 0.0
        for x in v { vmax = max(vmax, abs(Double(x))) }
        for i in 0..<c.nQ {
            let pos = c.nKV - c.nQ + i
            for h in 0..<c.hq {
                let kh = h / g
                var s = [Double](repeating: 0, count: pos + 1)
                for j in 0...pos {
                    var dot = 0.0
                    for e in 0..<c.d { dot += Double(q[(i * c.hq + h) * c.d + e]) * Double(k[(j * c.hkv + kh) * c.d + e]) }
                    s[j] = dot * scale
                }
                let mx = s.max()!
                let p = s.map { exp($0 - mx) }
                let sum = p.reduce(0, +)
                for e in 0..<c.d {
                    var acc = 0.0
                    for j in 0...pos { acc += p[j] * Double(v[(j * c.hkv + kh) * c.d + e]) }
                    out[(i * c.hq + h) * c.d + e] = acc / sum
                }
            }
        }
        return (out, vmax)
    }

    private static func attention(_ q: [Float], _ k: [Float], _ v: [Float], _ c: AttnCase, scale: Float)
        -> (svm_status, [Float])
    {
        var out = [Float](repeating: .nan, count: c.nQ * c.hq * c.d)
        let st: svm_status
        if c.nQ == c.nKV {
            st = svm_causal_attention(q, k, v, Int32(c.nQ), Int32(c.hq), Int32(c.hkv), Int32(c.d), scale, &out)
        } else {
            st = svm_attention(q, Int32(c.nQ), k, v, Int32(c.nKV), Int32(c.hq), Int32(c.hkv), Int32(c.d), scale, &out)
        }
        return (st, out)
    }

    @Test func causalAttentionMatchesNaiveReference() {
        for (ci, c) in Self.attnCases.enumerated() {
            var rng = TestRng(UInt64(100 + ci))
            // large query scale so the softmax is peaked and the running max moves between blocks
            let q = rng.floats(c.nQ * c.hq * c.d, scale: 3), k = rng.floats(c.nKV * c.hkv * c.d, scale: 2)
            let v = rng.floats(c.nKV * c.hkv * c.d)
            let scale = 1 / Float(c.d).squareRoot()
            let ref = Self.naiveAttention(q, k, v, c, scale: Double(scale))
            var outs: [[Float]] = []
            for path in ISAPath.available {
                let (st, out) = onPath(path) { Self.attention(q, k, v, c, scale: scale) }
                #expect(st == SVM_OK)
                var worst = 0.0
                for i in 0..<out.count { worst = max(worst, abs(Double(out[i]) - ref.out[i])) }
                #expect(worst <= 2e-5 * ref.vmax, "\(path) \(c): max error \(worst)")
                outs.append(out)
                let (_, one) = onPath(path, threads: 1) { Self.attention(q, k, v, c, scale: scale) }
                let (_, three) = onPath(path, threads: 3) { Self.attention(q, k, v, c, scale: scale) }
                #expect(bitsEqual(one, out) && bitsEqual(three, out), "\(path) \(c): depends on the thread count")
            }
            for o in outs.dropFirst() {
                var d = Float(0)
                for i in 0..<o.count { d = max(d, abs(o[i] - outs[0][i])) }
                #expect(Double(d) <= 2e-5 * ref.vmax, "\(c): SIMD vs portable \(d)")
            }
        }
    }

    @Test func firstQueryCopiesFirstValue() {
        // Causality: the query at position 0 sees only key 0, so its output is v[0] exactly.
        let c = AttnCase(nQ: 40, nKV: 40, hq: 9, hkv: 3, d: 64)
        var rng = TestRng(7)
        let q = rng.floats(c.nQ * c.hq * c.d), k = rng.floats(c.nKV * c.hkv * c.d), v = rng.floats(c.nKV * c.hkv * c.d)
        for path in ISAPath.available {
            let (_, out) = onPath(path) { Self.attention(q, k, v, c, scale: 0.125) }
            for h in 0..<c.hq {
                let kh = h / 3
                for e in 0..<c.d { #expect(out[h * c.d + e] == v[kh * c.d + e], "\(path) head \(h)") }
            }
        }
    }

    @Test func attentionRejectsBadShapes() {
        let x = [Float](repeating: 0, count: 64)
        var out = [Float](repeating: 5, count: 64)
        #expect(svm_causal_attention(x, x, x, 1, 3, 2, 16, 1, &out) == SVM_ERR_ARG)  // 3 % 2 != 0
        #expect(svm_attention(x, 2, x, x, 1, 1, 1, 16, 1, &out) == SVM_ERR_ARG)      // n_q > n_kv
        #expect(out.allSatisfy { $0 == 5 })
    }
}
