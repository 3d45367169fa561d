import CSparKV

// Conversion between CompressionPolicy and the C `sparkv_policy`. Swift uses nil where C uses a
// 0 sentinel (threads, attention scale, cumulative max keep) or an enum value NONE (eviction); an
// explicit 0 in Swift is rejected here rather than silently meaning "default". Counts the C
// fields cannot hold (negative, or beyond 32 bits) are rejected here too; every other range
// check is sparkv_policy_validate's, so Swift and C agree.

extension CompressionPolicy {
    /// The C structure (`struct_size` set), for code that calls the C library directly.
    ///
    /// - Throws: ``SparKVError/invalidPolicy(_:)`` for values the C fields cannot hold (negative
    ///   counts) or Swift spellings of C sentinels (0 where nil is meant). Every other range check
    ///   is left to C: call ``validate(headDim:)`` or `sparkv_policy_validate`.
    ///
    /// ```swift
    /// var c = try CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).cPolicy()
    /// let status = sparkv_policy_validate(&c, 128)   // SPARKV_OK
    /// ```
    public func cPolicy() throws -> sparkv_policy {
        var c = sparkv_default_policy()
        if let eviction { try eviction.apply(to: &c) }
        c.key_pruning = keyPruning.cValue
        c.key_prune_ratio = keyPruneRatio
        c.value_prune_ratio = valuePruneRatio
        switch selection {
        case .topK:
            c.selection = SPARKV_SELECT_TOPK
        case .cumulative(let p, let minKeep, let maxKeep):
            c.selection = SPARKV_SELECT_CUMULATIVE
            c.cumulative_p = p
            guard let lo = UInt32(exactly: minKeep) else {
                throw SparKVError.invalidPolicy("cumulative minKeep \(minKeep) must be between 0 and the head dimension")
            }
            c.cumulative_min_keep = lo
            if let maxKeep {
                guard let hi = UInt32(exactly: maxKeep), hi >= 1 else {
                    throw SparKVError.invalidPolicy(
                        "cumulative maxKeep \(maxKeep) must be between 1 and the head dimension (nil means the head dimension)")
                }
                c.cumulative_max_keep = hi
            } else {
                c.cumulative_max_keep = 0
            }
        }
        c.recovery = recovery.cValue
        c.sign_bits = signBits ? 1 : 0
        c.key_precision = keyPrecision.cValue
        c.value_precision = valuePrecision.cValue
        guard let g = UInt32(exactly: quantGroup) else {
            throw SparKVError.invalidPolicy(
                "quantGroup \(quantGroup) must be a multiple of 8 dividing the head dimension (and fit in 32 bits)")
        }
        c.quant_group = g
        if let decodeCompression {
            guard let r = UInt32(exactly: decodeCompression.recent) else {
                throw SparKVError.invalidPolicy("decodeCompression.recent \(decodeCompression.recent) must be in 0...\(UInt32.max)")
            }
            c.compress_decode = 1
            c.decode_recent = r
        } else {
            c.compress_decode = 0
        }
        guard let w = UInt32(exactly: window), w >= 1 else {
            throw SparKVError.invalidPolicy("window \(window) must be at least 1 (and fit in 32 bits)")
        }
        c.window = w
        c.seed = seed
        if let threads {
            guard let t = Int32(exactly: threads), t >= 1 else {
                throw SparKVError.invalidPolicy("threads \(threads) must be at least 1 (nil means OpenMP's default)")
            }
            c.threads = t
        } else {
            c.threads = 0
        }
        if let attentionScale {
            guard attentionScale != 0 else {
                throw SparKVError.invalidPolicy("attentionScale must be positive (nil means 1/sqrt(headDim))")
            }
            c.attention_scale = attentionScale
        } else {
            c.attention_scale = 0
        }
        return c
    }

    /// The Swift value of a C policy (as returned by `sparkv_default_policy` or `sparkv_cache_policy`).
    /// The parameters of eviction modes other than the selected one are not kept (Swift stores only
    /// the selected mode's).
    ///
    /// - Throws: ``SparKVError/invalidPolicy(_:)`` for enum values this Swift layer does not know.
    ///
    /// ```swift
    /// var c = sparkv_default_policy()
    /// c.eviction = SPARKV_EVICT_SNAPKV
    /// let policy = try CompressionPolicy(cPolicy: c)   // .snapKV(budget: 512, poolKernel: 5)
    /// ```
    public init(cPolicy c: sparkv_policy) throws {
        guard let recovery = Recovery(cValue: c.recovery),
              let keyPrecision = Precision(cValue: c.key_precision),
              let valuePrecision = Precision(cValue: c.value_precision),
              let keyPruning = KeyPruning(cValue: c.key_pruning) else {
            throw SparKVError.invalidPolicy("the C policy holds an enum value this Swift layer does not know")
        }
        let eviction: Eviction?
        switch c.eviction {
        case SPARKV_EVICT_NONE: eviction = nil
        case SPARKV_EVICT_SNAPKV:
            eviction = .snapKV(budget: Int(c.evict_budget), poolKernel: Int(c.pool_kernel))
        case SPARKV_EVICT_PYRAMIDKV:
            eviction = .pyramidKV(meanBudget: Int(c.evict_budget), ratio: c.pyramid_ratio, poolKernel: Int(c.pool_kernel))
        case SPARKV_EVICT_STREAMING:
            eviction = .streamingLLM(sinks: Int(c.sink_tokens), recent: Int(c.recent_tokens))
        default:
            throw SparKVError.invalidPolicy("eviction \(c.eviction.rawValue) is not NONE, SNAPKV, PYRAMIDKV or STREAMING")
        }
        let selection: Selection
        switch c.selection {
        case SPARKV_SELECT_TOPK: selection = .topK
        case SPARKV_SELECT_CUMULATIVE:
            selection = .cumulative(p: c.cumulative_p, minKeep: Int(c.cumulative_min_keep),
                                    maxKeep: c.cumulative_max_keep == 0 ? nil : Int(c.cumulative_max_keep))
        default:
            throw SparKVError.invalidPolicy("selection \(c.selection.rawValue) is not TOPK or CUMULATIVE")
        }
        self.init(eviction: eviction, keyPruning: keyPruning, keyPruneRatio: c.key_prune_ratio,
                  selection: selection, recovery: recovery, signBits: c.sign_bits != 0,
                  valuePruneRatio: c.value_prune_ratio, keyPrecision: keyPrecision, valuePrecision: valuePrecision,
                  window: Int(c.window), seed: c.seed, threads: c.threads > 0 ? Int(c.threads) : nil,
                  attentionScale: c.attention_scale > 0 ? c.attention_scale : nil,
                  quantGroup: Int(c.quant_group),
                  decodeCompression: c.compress_decode != 0 ? DecodeCompression(recent: Int(c.decode_recent)) : nil)
    }
}

extension CompressionPolicy.Recovery {
    var cValue: sparkv_recovery {
        switch self {
        case .none: return SPARKV_RECOVER_NONE
        case .mean: return SPARKV_RECOVER_MEAN
        case .gaussian: return SPARKV_RECOVER_GAUSSIAN
        case .exponential: return SPARKV_RECOVER_EXPONENTIAL
        }
    }

    init?(cValue: sparkv_recovery) {
        guard let match = Self.allCases.first(where: { $0.cValue == cValue }) else { return nil }
        self = match
    }
}

extension CompressionPolicy.Precision {
    var cValue: sparkv_precision {
        switch self {
        case .f32: return SPARKV_F32
        case .f16: return SPARKV_F16
        case .bf16: return SPARKV_BF16
        case .i8: return SPARKV_I8
        case .i4: return SPARKV_I4
        }
    }

    init?(cValue: sparkv_precision) {
        guard let match = Self.allCases.first(where: { $0.cValue == cValue }) else { return nil }
        self = match
    }
}

extension CompressionPolicy.Eviction {
    /// Writes the eviction mode and its parameters into a C policy (the parameters of the other
    /// modes keep their C defaults).
    func apply(to c: inout sparkv_policy) throws {
        func count(_ value: Int, _ name: String) throws -> UInt32 {
            guard let v = UInt32(exactly: value) else {
                throw SparKVError.invalidPolicy(
                    "\(name) \(value) is \(value < 0 ? "negative" : "too large"); it must be a count in 0...\(UInt32.max)")
            }
            return v
        }
        switch self {
        case .snapKV(let budget, let poolKernel):
            c.eviction = SPARKV_EVICT_SNAPKV
            c.evict_budget = try count(budget, "SnapKV budget")
            c.pool_kernel = try count(poolKernel, "SnapKV poolKernel")
        case .pyramidKV(let meanBudget, let ratio, let poolKernel):
            c.eviction = SPARKV_EVICT_PYRAMIDKV
            c.evict_budget = try count(meanBudget, "PyramidKV meanBudget")
            c.pyramid_ratio = ratio
            c.pool_kernel = try count(poolKernel, "PyramidKV poolKernel")
        case .streamingLLM(let sinks, let recent):
            c.eviction = SPARKV_EVICT_STREAMING
            c.sink_tokens = try count(sinks, "StreamingLLM sinks")
            c.recent_tokens = try count(recent, "StreamingLLM recent")
        }
    }
}

extension CompressionPolicy.KeyPruning {
    var cValue: sparkv_key_pruning {
        switch self {
        case .spark: return SPARKV_KEYS_SPARK
        case .think: return SPARKV_KEYS_THINK
        }
    }

    init?(cValue: sparkv_key_pruning) {
        guard let match = Self.allCases.first(where: { $0.cValue == cValue }) else { return nil }
        self = match
    }
}
