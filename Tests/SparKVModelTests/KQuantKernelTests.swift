// KQuantKernelTests.swift — the Q5_0, Q4_K and Q6_K weight formats of the model kernels
// (CSparKVModel): hand-built blocks that decode to hand-computed values, and the fast matmul on
// every ISA path against double-precision references. The references decode the bit layouts on
// their own, from the format description (ggml's block layouts), never through the C dequantizer.

import CSparKVModel
import Testing

@testable import SparKVModel

// MARK: - Test data and the reference decoder

/// Values per block and bytes per block, from the format description.
private func geometry(_ type: svm_type) -> (values: Int, bytes: Int) {
    switch type {
    case SVM_Q5_0: return (32, 22)
    case SVM_Q4_K: return (256, 144)
    case SVM_Q6_K: return (256, 210)
    default: return (0, 0)
    }
}

private func f16(_ bytes: [UInt8], _ o: Int) -> Double {
    Double(Float16(bitPattern: UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8))
}

/// One weight value as `scale * code + offset` (`code` an integer, the rest exact in double).
private struct Decoded {
    var scale: Double
    var code: Int
    var offset: Double
    var value: Double { scale * Double(code) + offset }
}

/// Decodes one block (the bytes at `o`) from the layout description.
private func decodeBlock(_ type: svm_type, _ b: [UInt8], _ o: Int) -> [Decoded] {
    switch type {
    case SVM_Q5_0:
        // fp16 d | qh: uint32 LE, bit j = bit 4 of element j | qs[16]: element i low, i+16 high nibble
        let d = f16(b, o)
        let qh = (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + 2 + $1]) << (8 * $1) }
        return (0..<32).map { j in
            let nibble = j < 16 ? Int(b[o + 6 + j] & 0x0f) : Int(b[o + 6 + j - 16] >> 4)
            let fifth = Int((qh >> UInt32(j)) & 1)
            return Decoded(scale: d, code: nibble + 16 * fifth - 16, offset: 0)
        }
    case SVM_Q4_K:
        // fp16 d, fp16 dmin | 12 scale bytes | 128 qs
        let d = f16(b, o), dmin = f16(b, o + 2)
        let s = Array(b[(o + 4)..<(o + 16)])
        var out: [Decoded] = []
        for j in 0..<8 {
            let sc: Int, m: Int
            if j < 4 {
                sc = Int(s[j]) % 64
                m = Int(s[j + 4]) % 64
            } else {
                sc = Int(s[j + 4]) % 16 + 16 * (Int(s[j - 4]) / 64)
                m = Int(s[j + 4]) / 16 + 16 * (Int(s[j]) / 64)
            }
            let pair = o + 16 + 32 * (j / 2)
            for l in 0..<32 {
                let q = j % 2 == 0 ? Int(b[pair + l]) % 16 : Int(b[pair + l]) / 16
                out.append(Decoded(scale: d * Double(sc), code: q, offset: -dmin * Double(m)))
            }
        }
        return out
    case SVM_Q6_K:
        // ql[128] | qh[64] | int8 scales[16] | fp16 d
        let d = f16(b, o + 208)
        var out = [Decoded](repeating: Decoded(scale: 0, code: 0, offset: 0), count: 256)
        for h in 0..<2 {
            for k in 0..<4 {
                for l in 0..<32 {
                    let v = 128 * h + 32 * k + l
                    let qlByte = Int(b[o + 64 * h + 32 * (k % 2) + l])
                    let low = k < 2 ? qlByte % 16 : qlByte / 16
                    let high = (Int(b[o + 128 + 32 * h + l]) >> (2 * k)) % 4
                    let scale = Int(Int8(bitPattern: b[o + 192 + v / 16]))
                    out[v] = Decoded(scale: d * Double(scale), code: low + 16 * high - 32, offset: 0)
                }
            }
        }
        return out
    default:
        return []
    }
}

/// A random weight matrix: every byte random except the fp16 scales, which are kept finite and
/// small enough for the products to stay readable.
private struct KWeights {
    var type: svm_type
    var rows: Int
    var cols: Int
    var bytes: [UInt8]
    var decoded: [Decoded]  // [rows][cols]

    var rowBytes: Int { cols / geometry(type).values * geometry(type).bytes }

    init(type: svm_type, rows: Int, cols: Int, seed: UInt64) {
        self.type = type
        self.rows = rows
        self.cols = cols
        var rng = TestRng(seed)
        let g = geometry(type)
        var bytes: [UInt8] = []
        for _ in 0..<(rows * cols / g.values) {
            var blk = (0..<g.bytes).map { _ in rng.byte() }
            func putHalf(_ at: Int, _ h: UInt16) { blk[at] = UInt8(h & 0xff); blk[at + 1] = UInt8(h >> 8) }
            switch type {
            case SVM_Q5_0: putHalf(0, rng.half(0.05))
            case SVM_Q4_K: putHalf(0, rng.half(0.002)); putHalf(2, rng.half(0.002))
            default: putHalf(208, rng.half(0.001))
            }
            bytes += blk
        }
        self.bytes = bytes
        decoded = []
        for blk in 0..<(rows * cols / g.values) { decoded += decodeBlock(type, bytes, blk * g.bytes) }
    }

    /// The first `rows` rows of a real tensor's bytes.
    init(type: svm_type, rows: Int, cols: Int, bytes: [UInt8]) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.bytes = bytes
        let g = geometry(type)
        decoded = []
        for blk in 0..<(rows * cols / g.values) { decoded += decodeBlock(type, bytes, blk * g.bytes) }
    }
}

/// Q8 activations as the header specifies them: per block of 32, dx = amax/127 in float,
/// q = x * (1/dx) rounded to nearest even.
private func quantizeQ8(_ x: ArraySlice<Float>) -> (q: [Int], d: [Float]) {
    var q: [Int] = [], d: [Float] = []
    let xs = Array(x)
    for b in stride(from: 0, to: xs.count, by: 32) {
        let amax = xs[b..<b + 32].map { abs($0) }.max() ?? 0
        let db = amax / 127
        let id: Float = db > 0 ? 1 / db : 0
        for v in xs[b..<b + 32] { q.append(Int((v * id).rounded(.toNearestOrEven))) }
        d.append(db)
    }
    return (q, d)
}

/// References for Y = X . W^T in double:
///  - `q8`: with X replaced by its Q8 activations (the kernel's formula; only float rounding
///    separates the kernel from it), and `q8Mag`, the sum of the magnitudes of its per-16-value
///    scaled terms and per-block offset terms (what the float rounding is relative to);
///  - `exact`: with X as given, `exactMag` = sum |w x|, and `actBound` = sum_b (dx_b / 2) sum |w_k|,
///    the error 8-bit activations may add.
private struct References {
    var q8: [Double] = [], q8Mag: [Double] = [], exact: [Double] = [], exactMag: [Double] = [], actBound: [Double] = []

    init(_ w: KWeights, _ x: [Float], n: Int) {
        for t in 0..<n {
            let xt = x[(t * w.cols)..<((t + 1) * w.cols)]
            let a = quantizeQ8(xt)
            for r in 0..<w.rows {
                let row = w.decoded[(r * w.cols)..<((r + 1) * w.cols)]
                var y = 0.0, mag = 0.0, ex = 0.0, exMag = 0.0, bound = 0.0
                for g in stride(from: 0, to: w.cols, by: 16) {
                    let dx = Double(a.d[g / 32])
                    var term = 0.0, off = 0.0
                    for k in g..<(g + 16) {
                        let dk = row[row.startIndex + k]
                        term += dk.scale * Double(dk.code) * dx * Double(a.q[k])
                        off += dk.offset * dx * Double(a.q[k])
                        let p = dk.value * Double(x[t * w.cols + k])
                        ex += p
                        exMag += abs(p)
                        bound += dx / 2 * abs(dk.value)
                    }
                    y += term + off
                    mag += abs(term) + abs(off)
                }
                q8.append(y)
                q8Mag.append(mag + 1e-30)
                exact.append(ex)
                exactMag.append(exMag + 1e-30)
                actBound.append(bound)
            }
        }
    }
}



private func multiply(_ w: KWeights, _ x: [Float], n: Int) -> (svm_status, [Float]) {
    var y = [Float](repeating: .nan, count: n * w.rows)
    let st = w.bytes.withUnsafeBytes { svm_matmul($0.baseAddress, w.type, Int32(w.rows), Int32(w.cols), x, Int32(n), &y) }
    return (st, y)
}

private func embed(_ bytes: [UInt8], _ type: svm_type, row: Int = 0, cols: Int) -> (svm_status, [Float]) {
    var out = [Float](repeating: .nan, count: cols)
    let st = bytes.withUnsafeBytes { svm_embed_row($0.baseAddress, type, Int32(row), Int32(cols), &out) }
    return (st, out)
}

private struct KCase: Sendable, CustomStringConvertible {
    var rows: Int, cols: Int, n: Int
    var description: String { "\(rows)x\(cols) n=\(n)" }
}

/// Shapes per type: odd row counts (partial tiles), several blocks per row (an odd count of 32-blocks
/// for Q5_0: the AVX-512 pair without a second block), odd token counts, one case with many
/// tokens (n = 131 > the 64-token cache tile, split over threads) and one with many rows.
private func cases(_ type: svm_type) -> [KCase] {
    let k = geometry(type).values
    return [
        KCase(rows: 1, cols: k, n: 1),
        KCase(rows: 7, cols: 5 * k, n: 3),
        KCase(rows: 13, cols: 3 * k, n: 5),
        KCase(rows: 5, cols: 2 * k, n: 131),
        KCase(rows: 67, cols: k == 32 ? 640 : 1536, n: 1),  // Gemma 3 270M's hidden (640) for Q5_0
        KCase(rows: 261, cols: 2 * k, n: 2),                  // many rows: every thread has several tiles
    ]
}

// MARK: - Tests

@Suite("Q5_0 / Q4_K / Q6_K kernels", .serialized)
struct KQuantKernelTests {
    @Test func blockGeometryMatchesGGML() {
        #expect(svm_block_size(SVM_Q5_0) == 32 && svm_row_bytes(SVM_Q5_0, 640) == 20 * 22)
        #expect(svm_block_size(SVM_Q4_K) == 256 && svm_row_bytes(SVM_Q4_K, 1536) == 6 * 144)
        #expect(svm_block_size(SVM_Q6_K) == 256 && svm_row_bytes(SVM_Q6_K, 256) == 210)
        #expect(svm_row_bytes(SVM_Q4_K, 640) == 0 && svm_row_bytes(SVM_Q6_K, 288) == 0)
        #expect(String(cString: svm_type_name(SVM_Q4_K)) == "q4_k")
        #expect(String(cString: svm_type_name(SVM_Q6_K)) == "q6_k")
        #expect(String(cString: svm_type_name(SVM_Q5_0)) == "q5_0")
    }

    /// Q5_0 block: d = 0.5, qh = 0x80000001 (5th bit of elements 0 and 31), byte i = i | (15 - i) << 4.
    @Test func q5_0KnownBitsDecodeToHandValues() {
        var b: [UInt8] = [0x00, 0x38, 0x01, 0x00, 0x00, 0x80]
        for i in 0..<16 { b.append(UInt8(i) | UInt8(15 - i) << 4) }
        // element j < 16: q = j (+16 for j = 0); element 16 + i: q = 15 - i (+16 for i = 15)
        var want = [Float](repeating: 0, count: 32)
        want[0] = 0  // q = 16
        for j in 1..<16 { want[j] = Float(j - 16) * 0.5 }
        for i in 0..<15 { want[16 + i] = Float(15 - i - 16) * 0.5 }
        want[31] = 0  // q = 0 + 16
        #expect(want[1] == -7.5 && want[16] == -0.5 && want[30] == -7.5)
        let (st, out) = embed(b, SVM_Q5_0, cols: 32)
        #expect(st == SVM_OK)
        #expect(out == want)
        #expect(decodeBlock(SVM_Q5_0, b, 0).map { Float($0.value) } == want)
    }

    /// Q4_K super-block: d = 1, dmin = 0.5; sub-block 1: scale 3, min 5; sub-block 2: scale 1, min 0;
    /// sub-block 6: scale 42, min 21 (its top bits in bytes 2 and 6); one nonzero code in each.
    @Test func q4_KKnownBitsDecodeToHandValues() {
        var b = [UInt8](repeating: 0, count: 144)
        b[0] = 0x00; b[1] = 0x3c  // d = 1
        b[2] = 0x00; b[3] = 0x38  // dmin = 0.5
        let s = 4
        b[s + 1] = 3           // scale 1
        b[s + 5] = 5           // min 1
        b[s + 2] = 0x81        // scale 2 = 1; top bits 0b10 of scale 6
        b[s + 6] = 0x40        // min 2 = 0; top bits 0b01 of min 6
        b[s + 10] = 0x5a       // scale 6 low 4 bits 0xa, min 6 low 4 bits 0x5
        let q = 16
        b[q + 0] = 0x70        // sub-block 0 (low nibble) = 0, sub-block 1 (high nibble) = 7
        b[q + 32] = 0x09       // sub-block 2, element 0 = 9
        b[q + 96] = 0x0f       // sub-block 6, element 0 = 15
        var want = [Float](repeating: 0, count: 256)
        for l in 0..<32 { want[32 + l] = -2.5 }   // 3*0 - 0.5*5
        want[32] = 18.5                            // 1*3*7 - 2.5
        want[64] = 9                               // 1*1*9 - 0
        for l in 0..<32 { want[192 + l] = -10.5 }  // 42*0 - 0.5*21
        want[192] = 619.5                          // 42*15 - 10.5
        let (st, out) = embed(b, SVM_Q4_K, cols: 256)
        #expect(st == SVM_OK)
        #expect(out == want)
        #expect(decodeBlock(SVM_Q4_K, b, 0).map { Float($0.value) } == want)
    }

    /// Q6_K super-block: d = 0.25, scales[0] = 2, scales[5] = -3, scales[15] = 127, codes set at
    /// values 0 (q = 53), 80 (q = 26) and 255 (q = 63); every other code is 0 (value -32 * scale).
    @Test func q6_KKnownBitsDecodeToHandValues() {
        var b = [UInt8](repeating: 0, count: 210)
        b[208] = 0x00; b[209] = 0x34  // d = 0.25
        b[192 + 0] = 2
        b[192 + 5] = UInt8(bitPattern: -3)
        b[192 + 15] = 127
        b[0] = 0x05; b[128 + 0] = 0x03     // value 0: low 5 (ql[0] low), top 3 (qh[0] bits 0-1) -> 53
        b[16] = 0xa0; b[128 + 16] = 0x10   // value 80 = 64 + 16: ql[16] high 10, qh[16] bits 4-5 = 1 -> 26
        b[127] = 0xf0; b[128 + 63] = 0xc0  // value 255 = 128 + 96 + 31: ql[127] high 15, qh[63] bits 6-7 = 3 -> 63
        var want = [Float](repeating: 0, count: 256)
        for v in 0..<16 { want[v] = -16 }       // -32 * 2 * 0.25
        for v in 80..<96 { want[v] = 24 }       // -32 * -3 * 0.25
        for v in 240..<256 { want[v] = -1016 }  // -32 * 127 * 0.25
        want[0] = 10.5      // (53 - 32) * 2 * 0.25
        want[80] = 4.5      // (26 - 32) * -3 * 0.25
        want[255] = 984.25  // (63 - 32) * 127 * 0.25
        let (st, out) = embed(b, SVM_Q6_K, cols: 256)
        #expect(st == SVM_OK)
        #expect(out == want)
        #expect(decodeBlock(SVM_Q6_K, b, 0).map { Float($0.value) } == want)
    }

    /// The C dequantizer (embedding lookups) against the test's decoder on random blocks, row by row.
    @Test(arguments: [SVM_Q5_0, SVM_Q4_K, SVM_Q6_K])
    func embedRowMatchesReferenceDecoder(type: svm_type) {
        let w = KWeights(type: type, rows: 3, cols: 2 * geometry(type).values, seed: 21)
        for r in 0..<w.rows {
            let (st, out) = embed(w.bytes, type, row: r, cols: w.cols)
            #expect(st == SVM_OK)
            for k in 0..<w.cols {
                let want = w.decoded[r * w.cols + k].value
                // the C value is computed in float: (d*sc)*q - dmin*m, two or three roundings
                #expect(abs(Double(out[k]) - want) <= 3e-7 * (abs(want) + 1e-3), "row \(r) element \(k)")
            }
        }
    }

    /// The fast product on every path against the Q8-activation formula (tight: only float rounding,
    /// relative to the magnitude of the summed terms) and against the exact product (looser: the
    /// documented activation bound sum_b dx_b/2 sum |w_k|, plus rounding).
    @Test(arguments: [SVM_Q5_0, SVM_Q4_K, SVM_Q6_K])
    func matmulMatchesReferencesOnEveryPath(type: svm_type) {
        for path in ISAPath.available {
            for c in cases(type) {
                let w = KWeights(type: type, rows: c.rows, cols: c.cols, seed: UInt64(c.rows * 31 + c.n))
                var rng = TestRng(UInt64(c.cols + c.n))
                let x = rng.floats(c.n * c.cols, scale: 2)
                let (st, y) = onPath(path) { multiply(w, x, n: c.n) }
                #expect(st == SVM_OK)
                let ref = References(w, x, n: c.n)
                var worst = 0.0, failures = 0
                for i in 0..<y.count {
                    worst = max(worst, abs(Double(y[i]) - ref.q8[i]) / ref.q8Mag[i])
                    let bound = ref.actBound[i] + 2e-6 * (ref.exactMag[i] + ref.q8Mag[i])
                    if !(abs(Double(y[i]) - ref.exact[i]) <= bound) { failures += 1 }
                }
                // float rounding of <= 50 block terms, each within a few ulps of its magnitude
                #expect(worst <= 4e-6, "\(path) \(c): relative error \(worst) against the Q8 formula")
                #expect(failures == 0, "\(path) \(c): \(failures) elements outside the activation bound")
            }
        }
    }

    /// The activation bound must be much tighter than the values, or the looser test proves little.
    @Test func activationBoundIsSmallAgainstTheProduct() {
        let w = KWeights(type: SVM_Q4_K, rows: 8, cols: 512, seed: 3)
        var rng = TestRng(4)
        let x = rng.floats(512, scale: 2)
        let ref = References(w, x, n: 1)
        for i in 0..<8 { #expect(ref.actBound[i] < 0.05 * ref.exactMag[i]) }
    }

    @Test(arguments: [SVM_Q5_0, SVM_Q4_K, SVM_Q6_K])
    func matmulIsUnchangedByThreadCount(type: svm_type) {
        let c = KCase(rows: 45, cols: 2 * geometry(type).values * (type == SVM_Q5_0 ? 5 : 1), n: 37)
        let w = KWeights(type: type, rows: c.rows, cols: c.cols, seed: 8)
        var rng = TestRng(9)
        let x = rng.floats(c.n * c.cols)
        for path in ISAPath.available {
            let (_, y1) = onPath(path, threads: 1) { multiply(w, x, n: c.n) }
            let (_, y3) = onPath(path, threads: 3) { multiply(w, x, n: c.n) }
            #expect(y1.map(\.bitPattern) == y3.map(\.bitPattern), "\(path)")
        }
    }

    /// The exact path (dequantize, then float dots) on the new types, against the exact reference.
    @Test(arguments: [SVM_Q5_0, SVM_Q4_K, SVM_Q6_K])
    func exactMatmulMatchesDoubleReference(type: svm_type) {
        let c = KCase(rows: 9, cols: 2 * geometry(type).values, n: 3)
        let w = KWeights(type: type, rows: c.rows, cols: c.cols, seed: 12)
        var rng = TestRng(13)
        let x = rng.floats(c.n * c.cols)
        var y = [Float](repeating: .nan, count: c.n * c.rows)
        let st = w.bytes.withUnsafeBytes {
            svm_matmul_exact($0.baseAddress, type, Int32(c.rows), Int32(c.cols), x, Int32(c.n), &y)
        }
        #expect(st == SVM_OK)
        let ref = References(w, x, n: c.n)
        for i in 0..<y.count { #expect(abs(Double(y[i]) - ref.exact[i]) <= 2e-6 * ref.exactMag[i], "element \(i)") }
    }

    /// svm_quantize's plain quantizers (used by benchmarks): the round trip stays within about half
    /// a step of the block's scale.
    @Test(arguments: [SVM_Q5_0, SVM_Q4_K, SVM_Q6_K])
    func quantizeRoundTripsCloseToTheInput(type: svm_type) {
        var rng = TestRng(5)
        let rows = 3, cols = 512
        let src = rng.floats(rows * cols, scale: 3)
        var bytes = [UInt8](repeating: 0, count: rows * svm_row_bytes(type, Int32(cols)))
        #expect(svm_quantize(type, src, Int32(rows), Int32(cols), &bytes) == SVM_OK)
        // steps: Q5_0 amax/16 per 32 (a whole step where ggml clamps q = 32 to 31); Q4_K range/15 per 32 (<= 6/15) plus the 6-bit rounding of
        // scale and min (each <= max/126); Q6_K amax/32 per 16 plus the int8 rounding of the scale
        let tol: Float = type == SVM_Q5_0 ? 3.0 / 16 * 1.01 : type == SVM_Q4_K ? 0.2 + 0.1 : 3.0 / 32 * 0.51 + 0.05
        for r in 0..<rows {
            let (_, out) = embed(bytes, type, row: r, cols: cols)
            for k in 0..<cols {
                #expect(abs(out[k] - src[r * cols + k]) <= tol, "row \(r) element \(k)")
            }
        }
    }

    @Test func kQuantShapesAreRejected() {
        let w = KWeights(type: SVM_Q4_K, rows: 2, cols: 256, seed: 1)
        let x = [Float](repeating: 1, count: 288)
        var y = [Float](repeating: 42, count: 2)
        w.bytes.withUnsafeBytes { wb in
            #expect(svm_matmul(wb.baseAddress, SVM_Q4_K, 2, 288, x, 1, &y) == SVM_ERR_SHAPE)
            #expect(svm_matmul(wb.baseAddress, SVM_Q6_K, 2, 32, x, 1, &y) == SVM_ERR_SHAPE)
            #expect(svm_embed_row(wb.baseAddress, SVM_Q4_K, 0, 128, &y) == SVM_ERR_SHAPE)
            #expect(svm_matmul(wb.baseAddress, svm_type(rawValue: 13), 2, 256, x, 1, &y) == SVM_ERR_TYPE)  // Q5_K
        }
        #expect(y == [42, 42])
    }

    /// GGUF's Swift side: the new types are dequantizable, agree with the test's decoder and give
    /// the C dequantizer's floats bit for bit; the loader's table accepts them; an unsupported K-quant is still refused
    /// with its name.
    @Test(arguments: [(SVM_Q5_0, GGUFTensorType.q5_0), (SVM_Q4_K, .q4_K), (SVM_Q6_K, .q6_K)])
    func ggufTypesDequantizeLikeTheReference(type: svm_type, ggml: GGUFTensorType) throws {
        #expect(ggml.isDequantizable && LlamaConfig.matrixTypes.contains(ggml))
        #expect(ggml.blockLength == Int(svm_block_size(type)))
        #expect(ggml.byteCount(values: 512) == Int(svm_row_bytes(type, 512)))
        let w = KWeights(type: type, rows: 2, cols: 512, seed: 17)
        var out = [Float](repeating: .nan, count: 1024)
        try w.bytes.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { dst in
                guard let s = src.baseAddress, let d = dst.baseAddress else { return }
                try ggml.dequantize(s, count: 1024, into: d)
            }
        }
        for k in 0..<1024 {
            let want = w.decoded[k].value
            #expect(abs(Double(out[k]) - want) <= 3e-7 * (abs(want) + 1e-3), "element \(k)")
        }
        // the Swift reader and the C kernels' dequantizer compute the same floats
        for r in 0..<2 {
            let (st, c) = embed(w.bytes, type, row: r, cols: 512)
            #expect(st == SVM_OK)
            #expect(c.map(\.bitPattern) == out[(512 * r)..<(512 * (r + 1))].map(\.bitPattern), "row \(r)")
        }
        #expect(!GGUFTensorType.q5_K.isDequantizable && svm_type(ggml: .q5_K) == nil)
    }

    /// A model whose matrices are Q5_0, Q4_K and Q6_K loads and runs (the loader passes the type
    /// to the kernels); zero blocks give zero weights, so the logits are finite.
    @Test func aModelWithKQuantMatricesLoadsAndRuns() throws {
        var tiny = TinyLlama()
        tiny.hidden = 256
        tiny.heads = 2
        tiny.feedForward = 512
        tiny.typeOverride["blk.0.ffn_down.weight"] = .q4_K
        tiny.typeOverride["blk.0.ffn_up.weight"] = .q6_K
        tiny.typeOverride["blk.1.attn_q.weight"] = .q5_0
        tiny.typeOverride["token_embd.weight"] = .q6_K
        let model = try tiny.model()
        let state = try model.prefill(tokens: [1, 2, 3])
        #expect(state.lastLogits.count == 32 && state.lastLogits.allSatisfy(\.isFinite))
    }

    /// Real tensors: the first 48 rows of one Q4_K and one Q6_K matrix of Qwen2.5-Coder-1.5B and one
    /// Q5_0 matrix of Gemma 3 270M (the fetched files; the test fails when they are missing), on every
    /// ISA path against the same double-precision references as the random blocks.
    @Test(arguments: [(KnownModel.qwen25Coder1_5B, GGUFTensorType.q4_K, SVM_Q4_K),
                      (.qwen25Coder1_5B, .q6_K, SVM_Q6_K), (.gemma3_270M, .q5_0, SVM_Q5_0)])
    func matmulMatchesReferencesOnRealTensors(model: KnownModel, ggml: GGUFTensorType, type: svm_type) throws {
        let file = try KnownModelFixture.requireFile(model)
        let tensor = try #require(file.tensors.first { $0.type == ggml && $0.shape.count == 2 && $0.shape[1] >= 48 },
                                  "\(model.rawValue) has no 2-D \(ggml) tensor")
        let cols = tensor.rowLength, rows = 48
        let rowBytes = cols / geometry(type).values * geometry(type).bytes
        let bytes = [UInt8](UnsafeRawBufferPointer(start: tensor.data, count: rows * rowBytes))
        let w = KWeights(type: type, rows: rows, cols: cols, bytes: bytes)
        var rng = TestRng(17)
        let n = 3
        let x = rng.floats(n * cols, scale: 2)
        let ref = References(w, x, n: n)
        for path in ISAPath.available {
            let (st, y) = onPath(path) { multiply(w, x, n: n) }
            #expect(st == SVM_OK)
            var worst = 0.0, failures = 0
            for i in 0..<y.count {
                worst = max(worst, abs(Double(y[i]) - ref.q8[i]) / ref.q8Mag[i])
                let bound = ref.actBound[i] + 2e-6 * (ref.exactMag[i] + ref.q8Mag[i])
                if !(abs(Double(y[i]) - ref.exact[i]) <= bound) { failures += 1 }
            }
            #expect(worst <= 4e-6, "\(path) \(tensor.name): relative error \(worst) against the Q8 formula")
            #expect(failures == 0, "\(path) \(tensor.name): \(failures) elements outside the activation bound")
        }
    }
}
