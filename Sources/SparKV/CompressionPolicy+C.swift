import CSparKV

// Conversion between CompressionPolicy and the C `sparkv_policy`. Swift uses nil where C uses a
// 0 sentinel (threads, attention scale, cumulative max keep); an explicit 0 in Swift is rejected
// here rather than silently meaning "default".

extension CompressionPolicy {
    /// The C structure. Throws `.invalidPolicy` for values the C fields cannot hold or Swift
    /// spellings of C sentinels (0 where nil is meant); every other range check is left to C.
    func cPolicy() throws -> sparkv_policy {
        var c = sparkv_default_policy()
        c.key_prune_ratio = keyPruneRatio
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
    /// Throws `.invalidPolicy` for enum values this Swift layer does not know.
    init(cPolicy c: sparkv_policy) throws {
        guard let recovery = Recovery(cValue: c.recovery),
              let keyPrecision = Precision(cValue: c.key_precision),
              let valuePrecision = Precision(cValue: c.value_precision) else {
            throw SparKVError.invalidPolicy("the C policy holds an enum value this Swift layer does not know")
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
        self.init(keyPruneRatio: c.key_prune_ratio, selection: selection, recovery: recovery,
                  signBits: c.sign_bits != 0, keyPrecision: keyPrecision, valuePrecision: valuePrecision,
                  window: Int(c.window), seed: c.seed, threads: c.threads > 0 ? Int(c.threads) : nil,
                  attentionScale: c.attention_scale > 0 ? c.attention_scale : nil)
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
        }
    }

    init?(cValue: sparkv_precision) {
        guard let match = Self.allCases.first(where: { $0.cValue == cValue }) else { return nil }
        self = match
    }
}
