// The compact string form of a policy: a short label for tables and benchmark output, and the
// syntax of the CLIs' `--policy` option. `description` writes it, `init(parsing:)` reads it, and
// the two round-trip exactly (floats are written in their shortest exact form).

extension CompressionPolicy: CustomStringConvertible, LosslessStringConvertible {
    /// The grammar of the compact form, for `--help` texts.
    ///
    /// ```swift
    /// print(CompressionPolicy.compactGrammar)
    /// ```
    public static let compactGrammar = """
        POLICY := TERM ("+" TERM)*     any order, each kind once; case, spaces ignored
        TERM   := NAME "(" ARG ("," ARG)* ")"  |  NAME (":" ARG)*
                  (snapkv(512,3) and snapkv:512:3 are the same term)
        Stages (prefill runs eviction, then key pruning, then value pruning):
          dense                 nothing evicted or pruned (default; options only)
          snapkv(B[,K])         SnapKV: keep the window and the B prompt tokens
                                before it with the most window attention; K =
                                pooling width, odd (defaults: B 512, K 5)
          pyramidkv(B[,R[,K]])  PyramidKV: SnapKV with per-layer budgets falling
                                linearly, mean B, first/last ratio R >= 1
                                (defaults: B 512, R 4, K 5)
          streaming(S,R)        StreamingLLM: keep the first S and the last R
                                prompt tokens (default 4,508)
          spark(R[,REC][,SIGNS][,cum=P][,min=N][,max=N])
                                SparK: prune a fraction R in [0,1) of the key
                                channels of each token; REC = none, mean
                                (default), gaussian, exponential; SIGNS =
                                signed (default unless REC is none), unsigned;
                                cum=P: cumulative selection of saliency mass P,
                                keeping min..max channels (default 1..D)
          think(R)              ThinK: prune a fraction R of the key channels,
                                one channel set per layer and KV head
          vprune(R)             prune a fraction R in [0,1) of each token's
                                value channels
        Options:
          kprec(P) vprec(P)     key / value precision: f32, f16 (default), bf16,
                                i8, i4 (symmetric int8 / 4-bit, fp16 scales)
          qgroup(N)             channels per scale of i8/i4 rows stored whole:
                                a multiple of 8 dividing D (default 32)
          window(W)             observation-window queries (default 32)
          decode(R)             compress appended tokens as they age, keeping the
                                newest R dense (default 32)
          seed(N) threads(T) scale(X)   draw seed, OpenMP threads, softmax scale
        Examples: snapkv:512+spark:0.8   snapkv(512)+spark(0.8,mean,signed)
                  think(0.5)+vprune(0.5)   pyramidkv(256,4)+spark(0.5,gaussian)
                  streaming(4,1020)+kprec(bf16)
                  spark(0.8)+kprec(i8)+vprec(i8)   dense+kprec(i4)+vprec(i4)+qgroup(64)
        """

    /// The compact form: stages in pipeline order, then the options that differ from the
    /// defaults; `dense` when nothing is evicted or pruned. SparK always lists its recovery and
    /// sign bits. ``init(parsing:)`` reads it back to an equal policy.
    ///
    /// ```swift
    /// CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).description // "snapkv(512)+spark(0.8,mean,signed)"
    /// CompressionPolicy.think(ratio: 0.5).withValuePruning(ratio: 0.25).description // "think(0.5)+vprune(0.25)"
    /// CompressionPolicy.dense.description // "dense"
    /// CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i4, group: 64).description
    /// // "spark(0.8,mean,signed)+kprec(i8)+vprec(i4)+qgroup(64)"
    /// ```
    public var description: String {
        var stages: [String] = []
        if let eviction { stages.append(eviction.description) }
        if let keys = keyTerm { stages.append(keys) }
        if valuePruneRatio != 0 { stages.append("vprune(\(Self.format(valuePruneRatio)))") }
        if stages.isEmpty { stages.append("dense") }
        if keyPrecision != .f16 { stages.append("kprec(\(keyPrecision.rawValue))") }
        if valuePrecision != .f16 { stages.append("vprec(\(valuePrecision.rawValue))") }
        if quantGroup != 32 { stages.append("qgroup(\(quantGroup))") }
        if let decodeCompression { stages.append("decode(\(decodeCompression.recent))") }
        if window != 32 { stages.append("window(\(window))") }
        if seed != 0 { stages.append("seed(\(seed))") }
        if let threads { stages.append("threads(\(threads))") }
        if let attentionScale { stages.append("scale(\(Self.format(attentionScale)))") }
        return stages.joined(separator: "+")
    }

    /// The key-pruning term, or nil when every key field has its default.
    private var keyTerm: String? {
        let cumulativeArgs: [String]
        switch selection {
        case .topK:
            cumulativeArgs = []
        case .cumulative(let p, let minKeep, let maxKeep):
            cumulativeArgs = ["cum=\(Self.format(p))"] + (minKeep != 1 ? ["min=\(minKeep)"] : [])
                + (maxKeep.map { ["max=\($0)"] } ?? [])
        }
        let ratio = keyPruneRatio != 0 || cumulativeArgs.isEmpty ? [Self.format(keyPruneRatio)] : []
        switch keyPruning {
        case .spark:
            if keyPruneRatio == 0, cumulativeArgs.isEmpty, recovery == .mean, signBits { return nil }
            let args = ratio + cumulativeArgs + [recovery.rawValue, signBits ? "signed" : "unsigned"]
            return "spark(\(args.joined(separator: ",")))"
        case .think:
            let args = ratio + cumulativeArgs + (recovery != .none ? [recovery.rawValue] : [])
                + (signBits ? ["signed"] : [])
            return "think(\(args.joined(separator: ",")))"
        }
    }

    /// Shortest exact decimal form of a float, without a trailing ".0" or an exponent "+".
    static func format(_ x: Float) -> String {
        if x.isFinite, x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
        return x.description.split(separator: "+", omittingEmptySubsequences: false).joined()
    }

    /// Parses the compact form (see ``compactGrammar``): `"snapkv:512+spark:0.8"`,
    /// `"snapkv(512)+spark(0.8,mean,signed)"`, `"dense"`, ... Only the syntax is checked here;
    /// call ``validate(headDim:)`` (or create a cache) to check the ranges.
    ///
    /// - Throws: ``SparKVError/invalidPolicy(_:)`` naming the term that could not be read.
    ///
    /// ```swift
    /// let policy = try CompressionPolicy(parsing: "snapkv:512+spark:0.8")
    /// // == .snapSpark(budget: 512, ratio: 0.8)
    /// try policy.validate(headDim: 128)
    /// ```
    public init(parsing text: String) throws {
        var parser = CompactParser(text: text)
        self = try parser.parse()
    }

    /// Parses the compact form, or returns nil (`LosslessStringConvertible`); use
    /// ``init(parsing:)`` to learn why a string is rejected.
    ///
    /// ```swift
    /// let policy = CompressionPolicy("think(0.5)+vprune(0.5)")
    /// ```
    public init?(_ description: String) {
        guard let policy = try? CompressionPolicy(parsing: description) else { return nil }
        self = policy
    }
}

extension CompressionPolicy.Eviction: CustomStringConvertible {
    /// The compact term of this eviction: `snapkv(512)`, `pyramidkv(512,2)`, `streaming(4,508)`
    /// (pooling width and ratio only when they differ from 5 and 4).
    ///
    /// ```swift
    /// CompressionPolicy.Eviction.snapKV(budget: 256, poolKernel: 7).description // "snapkv(256,7)"
    /// ```
    public var description: String {
        switch self {
        case .snapKV(let budget, let poolKernel):
            return poolKernel == 5 ? "snapkv(\(budget))" : "snapkv(\(budget),\(poolKernel))"
        case .pyramidKV(let meanBudget, let ratio, let poolKernel):
            var args = [String(meanBudget)]
            if ratio != 4 || poolKernel != 5 { args.append(CompressionPolicy.format(ratio)) }
            if poolKernel != 5 { args.append(String(poolKernel)) }
            return "pyramidkv(\(args.joined(separator: ",")))"
        case .streamingLLM(let sinks, let recent):
            return "streaming(\(sinks),\(recent))"
        }
    }
}

/// Reader of the compact form: splits terms, then fills a policy term by term.
private struct CompactParser {
    let text: String
    var policy = CompressionPolicy()
    var seen: Set<String> = []
    var sawStage = false
    var sawDense = false

    init(text: String) { self.text = text }

    func fail(_ reason: String) -> SparKVError {
        .invalidPolicy("cannot read policy \"\(text)\": \(reason) (the grammar: `sparkv policy --help`)")
    }

    mutating func parse() throws -> CompressionPolicy {
        let terms = splitTerms(text.lowercased().filter { !$0.isWhitespace })
        guard !terms.isEmpty, !terms.contains(where: \.isEmpty) else {
            throw fail(terms.isEmpty ? "it is empty" : "it has an empty term")
        }
        for term in terms { try read(term) }
        if sawDense && sawStage { throw fail("\"dense\" cannot be combined with eviction or pruning terms") }
        return policy
    }

    /// Splits on "+" outside parentheses, keeping the "+" of an exponent such as "1e+10".
    func splitTerms(_ s: String) -> [String] {
        var terms: [String] = [], current = "", depth = 0
        var previous: [Character] = []
        for ch in s {
            if ch == "(" { depth += 1 }
            if ch == ")" { depth -= 1 }
            let exponent = previous.count >= 2 && previous[previous.count - 1] == "e"
                && (previous[previous.count - 2].isNumber || previous[previous.count - 2] == ".")
            if ch == "+", depth == 0, !exponent {
                terms.append(current)
                current = ""
                previous = []
            } else {
                current.append(ch)
                previous.append(ch)
            }
        }
        terms.append(current)
        return terms
    }

    mutating func read(_ term: String) throws {
        let name: String, args: [String]
        if let open = term.firstIndex(of: "(") {
            guard term.hasSuffix(")") else { throw fail("term \"\(term)\" misses its closing parenthesis") }
            name = String(term[..<open])
            let inner = term[term.index(after: open)..<term.index(before: term.endIndex)]
            args = inner.isEmpty ? [] : inner.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        } else {
            let parts = term.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            name = parts[0]
            args = Array(parts.dropFirst())
        }
        if args.contains(where: \.isEmpty) { throw fail("term \"\(term)\" has an empty argument") }
        let kind: String
        switch name {
        case "snapkv", "pyramidkv", "streaming", "streamingllm": kind = "eviction"
        case "spark", "think": kind = "key pruning"
        default: kind = name
        }
        guard seen.insert(kind).inserted else { throw fail("\(kind) is given twice") }

        switch name {
        case "dense":
            try expectArgs(name, args, 0...0)
            sawDense = true
        case "snapkv":
            try expectArgs(name, args, 0...2)
            policy.eviction = .snapKV(budget: try int(args, 0, name, default: 512),
                                      poolKernel: try int(args, 1, name, default: 5))
            sawStage = true
        case "pyramidkv":
            try expectArgs(name, args, 0...3)
            policy.eviction = .pyramidKV(meanBudget: try int(args, 0, name, default: 512),
                                         ratio: try float(args, 1, name, default: 4),
                                         poolKernel: try int(args, 2, name, default: 5))
            sawStage = true
        case "streaming", "streamingllm":
            guard args.count == 0 || args.count == 2 else {
                throw fail("\(name) takes two arguments, sink and recent tokens, e.g. \(name)(4,508)")
            }
            policy.eviction = .streamingLLM(sinks: try int(args, 0, name, default: 4),
                                            recent: try int(args, 1, name, default: 508))
            sawStage = true
        case "spark", "think":
            try readKeys(name, args)
            sawStage = true
        case "vprune":
            try expectArgs(name, args, 1...1)
            policy.valuePruneRatio = try float(args, 0, name, default: 0)
            sawStage = true
        case "kprec", "vprec":
            try expectArgs(name, args, 1...1)
            guard let precision = CompressionPolicy.Precision(rawValue: args[0]) else {
                throw fail("\(name) precision \"\(args[0])\" is not f32, f16, bf16, i8 or i4")
            }
            if name == "kprec" { policy.keyPrecision = precision } else { policy.valuePrecision = precision }
        case "qgroup":
            try expectArgs(name, args, 1...1)
            policy.quantGroup = try int(args, 0, name, default: 32)
        case "decode":
            try expectArgs(name, args, 0...1)
            policy.decodeCompression = .init(recent: try int(args, 0, name, default: 32))
        case "window":
            try expectArgs(name, args, 1...1)
            policy.window = try int(args, 0, name, default: 32)
        case "seed":
            try expectArgs(name, args, 1...1)
            guard let seed = UInt64(args[0]) else { throw fail("seed \"\(args[0])\" is not an unsigned 64-bit integer") }
            policy.seed = seed
        case "threads":
            try expectArgs(name, args, 1...1)
            policy.threads = try int(args, 0, name, default: 0)
        case "scale":
            try expectArgs(name, args, 1...1)
            policy.attentionScale = try float(args, 0, name, default: 0)
        default:
            throw fail("unknown term \"\(name)\"; terms are dense, snapkv, pyramidkv, streaming, spark, think, "
                       + "vprune, kprec, vprec, qgroup, decode, window, seed, threads, scale")
        }
    }

    /// `spark(...)` / `think(...)`: a ratio, a recovery name, signed/unsigned and cum=/min=/max=, in
    /// any order.
    mutating func readKeys(_ name: String, _ args: [String]) throws {
        var ratio: Float?, recovery: CompressionPolicy.Recovery?, signs: Bool?
        var p: Float?, minKeep: Int?, maxKeep: Int?
        for arg in args {
            if let eq = arg.firstIndex(of: "=") {
                let key = String(arg[..<eq]), value = String(arg[arg.index(after: eq)...])
                switch key {
                case "cum", "cumulative":
                    guard p == nil, let v = Float(value) else { throw fail("\(name): bad or repeated \(arg)") }
                    p = v
                case "min":
                    guard minKeep == nil, let v = Int(value) else { throw fail("\(name): bad or repeated \(arg)") }
                    minKeep = v
                case "max":
                    guard maxKeep == nil, let v = Int(value) else { throw fail("\(name): bad or repeated \(arg)") }
                    maxKeep = v
                default:
                    throw fail("\(name): unknown option \"\(key)\" (cum, min and max are known)")
                }
            } else if let r = CompressionPolicy.Recovery(rawValue: arg) {
                guard recovery == nil else { throw fail("\(name): two recovery modes") }
                recovery = r
            } else if arg == "signed" || arg == "unsigned" {
                guard signs == nil else { throw fail("\(name): signed/unsigned given twice") }
                signs = arg == "signed"
            } else if let r = Float(arg) {
                guard ratio == nil else { throw fail("\(name): two ratios") }
                ratio = r
            } else {
                throw fail("\(name): \"\(arg)\" is not a ratio, a recovery (none, mean, gaussian, exponential), "
                           + "signed/unsigned or cum=/min=/max=")
            }
        }
        if p == nil && (minKeep != nil || maxKeep != nil) { throw fail("\(name): min= and max= need cum=P") }
        guard ratio != nil || p != nil else { throw fail("\(name) needs a ratio, e.g. \(name)(0.5)") }
        let think = name == "think"
        policy.keyPruning = think ? .think : .spark
        policy.keyPruneRatio = ratio ?? 0
        if let p { policy.selection = .cumulative(p: p, minKeep: minKeep ?? 1, maxKeep: maxKeep) }
        policy.recovery = recovery ?? (think ? .none : .mean)
        policy.signBits = signs ?? (!think && policy.recovery != .none)
    }

    func expectArgs(_ name: String, _ args: [String], _ range: ClosedRange<Int>) throws {
        guard range.contains(args.count) else {
            let wanted = range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
            throw fail("\(name) takes \(wanted) argument\(range.upperBound == 1 ? "" : "s"), not \(args.count)")
        }
    }

    func int(_ args: [String], _ i: Int, _ name: String, default value: Int) throws -> Int {
        guard i < args.count else { return value }
        guard let v = Int(args[i]) else { throw fail("\(name): \"\(args[i])\" is not an integer") }
        return v
    }

    func float(_ args: [String], _ i: Int, _ name: String, default value: Float) throws -> Float {
        guard i < args.count else { return value }
        guard let v = Float(args[i]), !args[i].hasPrefix("0x") else {
            throw fail("\(name): \"\(args[i])\" is not a number")
        }
        return v
    }
}
