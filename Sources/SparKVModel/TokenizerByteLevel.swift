/// GPT-2's byte-level alphabet: every byte is written as one printable Unicode scalar, so that
/// vocabulary entries and merges are plain strings. Bytes that are printable Latin-1 ("!"..."~",
/// "¡"..."¬", "®"..."ÿ") stand for themselves; the other 68 bytes, in increasing order, take the
/// scalars U+0100, U+0101, ... (so a space, 0x20, is "Ġ" U+0120 and a newline "Ċ" U+010A).
enum ByteLevel {
    /// The scalar that stands for each byte.
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (0x21...0x7e).contains(byte) || (0xa1...0xac).contains(byte) || (0xae...0xff).contains(byte) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// The byte each alphabet scalar stands for (scalars 0..<324; -1 for scalars not in it).
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in scalarForByte.enumerated() { table[Int(scalar)] = Int16(byte) }
        return table
    }()

    /// The alphabet string of `bytes` (what vocabulary entries look like).
    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = String.UnicodeScalarView()
        for b in bytes { out.append(Unicode.Scalar(scalarForByte[Int(b)])!) }
        return String(out)
    }

    /// The bytes of an alphabet string; nil if it holds a scalar outside the alphabet.
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            let v = Int(scalar.value)
            guard v < byteForScalar.count, byteForScalar[v] >= 0 else { return nil }
            out.append(UInt8(byteForScalar[v]))
        }
        return out
    }
}

/// The merge table of a byte-level BPE vocabulary, on token ids: for a pair of adjacent tokens,
/// the rank of their merge (its line in the merges list; lower merges first) and the merged token.
struct BPEMerges: Sendable {
    /// Key: left id << 32 | right id. Value: rank << 32 | merged id.
    private var table: [UInt64: UInt64] = [:]

    /// Builds the table from merge lines "left right". Lines whose parts or result are not in the
    /// vocabulary are skipped (they could never apply).
    init(merges: [String], vocabulary: [String: Int32]) {
        table.reserveCapacity(merges.count)
        for (rank, line) in merges.enumerated() {
            let scalars = line.unicodeScalars
            // Split at the first space after the first scalar (tokens never contain a space:
            // the byte 0x20 is written "Ġ").
            guard !scalars.isEmpty,
                  let split = scalars[scalars.index(after: scalars.startIndex)...].firstIndex(of: " ")
            else { continue }
            let left = String(scalars[..<split])
            let right = String(scalars[scalars.index(after: split)...])
            guard let l = vocabulary[left], let r = vocabulary[right], let m = vocabulary[left + right] else { continue }
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(m)) }
        }
    }

    var count: Int { table.count }

    /// The rank and merged id of the pair, nil if it never merges.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, merged: Int32)? {
        guard let v = table[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))] else { return nil }
        return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
    }

    /// Applies the merges to a word given as its initial tokens (one per byte), lowest rank first;
    /// among equal ranks (the same pair in several places) the leftmost first. Appends the result
    /// to `out`.
    func apply(_ word: [Int32], into out: inout [Int32]) {
        if word.count <= 1 {
            out.append(contentsOf: word)
        } else if word.count <= 48 {
            applyShort(word, into: &out)
        } else {
            applyLong(word, into: &out)
        }
    }

    /// Short words: keep the rank of every adjacent pair and rescan for the minimum (O(n^2) in the
    /// worst case, fastest for the usual few symbols).
    func applyShort(_ word: [Int32], into out: inout [Int32]) {
        var ids = word
        var ranks = [Int32](repeating: .max, count: ids.count - 1)
        var merged = [Int32](repeating: -1, count: ids.count - 1)
        for i in 0..<(ids.count - 1) {
            if let m = lookup(ids[i], ids[i + 1]) { ranks[i] = m.rank; merged[i] = m.merged }
        }
        while !ranks.isEmpty {
            var best = 0
            for i in 1..<ranks.count where ranks[i] < ranks[best] { best = i }
            if ranks[best] == .max { break }
            ids[best] = merged[best]
            ids.remove(at: best + 1)
            ranks.remove(at: best)
            merged.remove(at: best)
            if best > 0 {
                if let m = lookup(ids[best - 1], ids[best]) { ranks[best - 1] = m.rank; merged[best - 1] = m.merged }
                else { ranks[best - 1] = .max; merged[best - 1] = -1 }
            }
            if best < ranks.count {
                if let m = lookup(ids[best], ids[best + 1]) { ranks[best] = m.rank; merged[best] = m.merged }
                else { ranks[best] = .max; merged[best] = -1 }
            }
        }
        out.append(contentsOf: ids)
    }

    /// Long words (long runs of spaces, punctuation or letters): a linked list of symbols and a
    /// min-heap of candidate pairs keyed by (rank, position), stale entries skipped when popped.
    /// O(n log n).
    func applyLong(_ word: [Int32], into out: inout [Int32]) {
        let n = word.count
        var ids = word
        var next = [Int32](unsafeUninitializedCapacity: n) { buf, count in
            for i in 0..<n { buf[i] = i + 1 < n ? Int32(i + 1) : -1 }
            count = n
        }
        var prev = [Int32](unsafeUninitializedCapacity: n) { buf, count in
            for i in 0..<n { buf[i] = Int32(i - 1) }
            count = n
        }
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let m = lookup(ids[i], ids[i + 1]) { heap.push(UInt64(UInt32(m.rank)) << 32 | UInt64(i)) }
        }
        while let entry = heap.pop() {
            let rank = Int32(truncatingIfNeeded: entry >> 32)
            let pos = Int(UInt32(truncatingIfNeeded: entry))
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            // The pair at pos may have changed since the entry was pushed: a rank identifies one
            // pair, so an equal rank now means the entry is still right.
            guard let m = lookup(ids[pos], ids[right]), m.rank == rank else { continue }
            ids[pos] = m.merged
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(pos) }
            if prev[pos] >= 0, let p = lookup(ids[Int(prev[pos])], ids[pos]) {
                heap.push(UInt64(UInt32(p.rank)) << 32 | UInt64(UInt32(prev[pos])))
            }
            if next[pos] >= 0, let p = lookup(ids[pos], ids[Int(next[pos])]) {
                heap.push(UInt64(UInt32(p.rank)) << 32 | UInt64(pos))
            }
        }
        var i = 0
        while i >= 0 {
            out.append(ids[i])
            i = Int(next[i])
        }
    }
}

/// A binary min-heap of UInt64 keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ key: UInt64) {
        items.append(key)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < items.count && items[l] < items[smallest] { smallest = l }
                if r < items.count && items[r] < items[smallest] { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return top
    }
}
