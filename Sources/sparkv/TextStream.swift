import SparKVModel

/// Turns generated tokens into text as they are decoded, for streaming: each ``push(_:)`` returns
/// only text that is final. Two kinds of text are held back until the next tokens settle them: the
/// bytes of an unfinished UTF-8 character (one character can span several byte-level tokens), and
/// an ending that could be the start of a stop string (it must not be printed if the stop follows).
struct TextStream {
    let tokenizer: Tokenizer
    /// Generation ends at the first of these in the decoded text; it is not part of the output.
    let stops: [[UInt8]]
    /// The tokens pushed so far.
    private(set) var tokens: [Int] = []
    /// The UTF-8 of the whole text so far, and how much of it was handed out.
    private var bytes: [UInt8] = []
    private var emitted = 0
    /// Where a stop string begins, once one has been seen.
    private(set) var stopOffset: Int?

    init(tokenizer: Tokenizer, stops: [String]) {
        self.tokenizer = tokenizer
        self.stops = stops.filter { !$0.isEmpty }.map { Array($0.utf8) }
    }

    /// True once the text contains a stop string.
    var stopped: Bool { stopOffset != nil }

    /// The output: the decoded text up to the first stop string, without the bytes of a character
    /// the token limit cut short (they would decode as U+FFFD).
    var text: String { String(decoding: bytes[..<finalEnd], as: UTF8.self) }

    /// End of the output in ``bytes``.
    private var finalEnd: Int { stopOffset ?? (bytes.count - Self.unfinishedCharacterBytes(bytes)) }

    /// Adds a generated token; returns the text it made final (possibly empty).
    mutating func push(_ token: Int) -> String {
        guard !stopped else { return "" }
        tokens.append(token)
        // Whole-sequence decode: a token's bytes alone may be half a character.
        bytes = (try? tokenizer.decodeBytes(tokens, skipSpecial: true)) ?? bytes
        var end = bytes.count - Self.unfinishedCharacterBytes(bytes)
        for stop in stops {
            if let r = bytes[emitted...].firstRange(of: stop), r.lowerBound < (stopOffset ?? .max) { stopOffset = r.lowerBound }
        }
        if let stopOffset { end = stopOffset } else { end -= heldStopPrefix(end: end) }
        return take(upTo: max(end, emitted))
    }

    /// The rest of the text once generation has ended: what was held back for a stop string that
    /// did not come (an unfinished character is dropped).
    mutating func finish() -> String { take(upTo: max(finalEnd, emitted)) }

    private mutating func take(upTo end: Int) -> String {
        defer { emitted = end }
        return String(decoding: bytes[emitted..<end], as: UTF8.self)
    }

    /// Length of the longest ending of `bytes[emitted..<end]` that begins some stop string.
    private func heldStopPrefix(end: Int) -> Int {
        var held = 0
        for stop in stops {
            for k in stride(from: min(stop.count - 1, end - emitted), to: held, by: -1)
            where bytes[(end - k)..<end].elementsEqual(stop[..<k]) {
                held = k
                break
            }
        }
        return held
    }

    /// Bytes at the end of `bytes` that start a UTF-8 character without finishing it.
    static func unfinishedCharacterBytes(_ bytes: [UInt8]) -> Int {
        for i in stride(from: bytes.count - 1, through: max(0, bytes.count - 4), by: -1) {
            let b = bytes[i]
            if b & 0xC0 == 0x80 { continue }   // continuation byte: keep looking for the lead
            let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
            let have = bytes.count - i
            return have < need ? have : 0
        }
        return 0
    }
}
