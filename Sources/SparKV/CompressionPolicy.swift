import CSparKV

/// How a cache compresses prompt keys: SparK's query-aware per-token channel pruning, the
/// recovery of pruned entries at attention time, and storage precisions.
///
/// A plain, `Codable` value. Every field has the C library's default; ``validate(headDim:)``
/// asks the C library, so Swift and C always agree on what is valid.
///
/// ```swift
/// var policy = CompressionPolicy.spark(ratio: 0.8)       // prune 80% of key channels, MEAN recovery
/// policy.threads = 2
/// try policy.validate(headDim: 128)
/// let cache = try KVCache(shape: .llama3_8B(capacity: 8192), policy: policy)
/// ```
public struct CompressionPolicy: Hashable, Sendable {
    /// How the kept channels of a token are chosen.
    ///
    /// ```swift
    /// let topK = CompressionPolicy.Selection.topK
    /// let adaptive = CompressionPolicy.Selection.cumulative(p: 0.9, minKeep: 8, maxKeep: nil)
    /// ```
    public enum Selection: Hashable, Sendable {
        /// Keep `T = D - floor(keyPruneRatio * D)` channels per token, the most salient ones
        /// (ties go to the lower channel index).
        case topK
        /// Keep the fewest most-salient channels whose saliency sum reaches `p` of the token's
        /// total (`p` in (0, 1]), clamped to `minKeep...(maxKeep ?? D)`. `keyPruneRatio` is
        /// ignored.
        case cumulative(p: Float, minKeep: Int, maxKeep: Int?)
    }

    /// How a pruned key entry is rebuilt when attention reads it.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.spark(ratio: 0.5, recovery: .gaussian)
    /// ```
    public enum Recovery: String, Hashable, Sendable, Codable, CaseIterable {
        /// Pruned entries are 0.
        case none
        /// `±sqrt(m / qn_j)` with `m` the token's mean pruned saliency (one fp16 statistic).
        case mean
        /// `±sqrt(x / qn_j)`, `x ~ N(m, sd)` clipped to `[0, theta]` (three fp16 statistics).
        case gaussian
        /// `±sqrt(x / qn_j)`, `x ~ Exp(1/m)` clipped to `[0, theta]` (two fp16 statistics).
        case exponential
    }

    /// Storage precision of kept key values, appended keys and values.
    ///
    /// ```swift
    /// var policy = CompressionPolicy.dense
    /// policy.valuePrecision = .bf16
    /// ```
    public enum Precision: String, Hashable, Sendable, Codable, CaseIterable {
        /// 4-byte IEEE float.
        case f32
        /// 2-byte IEEE binary16, round to nearest even.
        case f16
        /// 2-byte bfloat16, round to nearest even.
        case bf16

        /// Bytes per stored element.
        ///
        /// ```swift
        /// CompressionPolicy.Precision.f16.byteCount // 2
        /// ```
        public var byteCount: Int { self == .f32 ? 4 : 2 }
    }

    /// r in [0, 1): the fraction of key channels pruned per prompt token with ``Selection/topK``.
    /// 0 stores keys dense. Default 0.
    ///
    /// ```swift
    /// var policy = CompressionPolicy()
    /// policy.keyPruneRatio = 0.8   // keep 26 of 128 channels
    /// ```
    public var keyPruneRatio: Float
    /// Channel selection rule. Default ``Selection/topK``.
    ///
    /// ```swift
    /// policy.selection = .cumulative(p: 0.95, minKeep: 4, maxKeep: 64)
    /// ```
    public var selection: Selection
    /// Recovery of pruned entries. Default ``Recovery/mean``.
    ///
    /// ```swift
    /// policy.recovery = .exponential
    /// ```
    public var recovery: Recovery
    /// Store one sign bit per pruned channel (requires a recovery other than ``Recovery/none``);
    /// without them recovered entries are positive. Default true.
    ///
    /// ```swift
    /// policy.signBits = false   // 16 bytes less per token at D = 128, less accurate
    /// ```
    public var signBits: Bool
    /// Precision of kept key values and of appended keys. Default ``Precision/f16``.
    ///
    /// ```swift
    /// policy.keyPrecision = .bf16
    /// ```
    public var keyPrecision: Precision
    /// Precision of values. Default ``Precision/f16``.
    ///
    /// ```swift
    /// policy.valuePrecision = .f32
    /// ```
    public var valuePrecision: Precision
    /// w: how many of the last prompt queries measure channel importance, at least 1. Default 32.
    ///
    /// ```swift
    /// policy.window = 64
    /// ```
    public var window: Int
    /// Seed of the Gaussian/exponential recovery draws. Default 0.
    ///
    /// ```swift
    /// policy.seed = 42
    /// ```
    public var seed: UInt64
    /// OpenMP threads for prefill and attention; nil uses OpenMP's default (`OMP_NUM_THREADS` or
    /// the core count). Results do not depend on it. Default nil.
    ///
    /// ```swift
    /// policy.threads = 1
    /// ```
    public var threads: Int?
    /// Softmax scale; nil means `1 / sqrt(headDim)`. Must be finite and positive when set.
    /// Default nil.
    ///
    /// ```swift
    /// policy.attentionScale = 0.125
    /// ```
    public var attentionScale: Float?

    /// Creates a policy; every argument defaults to the C library's default (a dense cache with
    /// f16 keys and values).
    ///
    /// ```swift
    /// let policy = CompressionPolicy(keyPruneRatio: 0.5, recovery: .gaussian, seed: 7)
    /// ```
    public init(keyPruneRatio: Float = 0, selection: Selection = .topK, recovery: Recovery = .mean,
                signBits: Bool = true, keyPrecision: Precision = .f16, valuePrecision: Precision = .f16,
                window: Int = 32, seed: UInt64 = 0, threads: Int? = nil, attentionScale: Float? = nil) {
        self.keyPruneRatio = keyPruneRatio
        self.selection = selection
        self.recovery = recovery
        self.signBits = signBits
        self.keyPrecision = keyPrecision
        self.valuePrecision = valuePrecision
        self.window = window
        self.seed = seed
        self.threads = threads
        self.attentionScale = attentionScale
    }

    /// No pruning: keys and values stored dense in fp16 (the baseline SparK is measured against).
    ///
    /// ```swift
    /// let baseline = try KVCache(shape: .llama3_8B(capacity: 4096), policy: .dense)
    /// ```
    public static var dense: CompressionPolicy { CompressionPolicy() }

    /// SparK with top-k selection: prune `ratio` of the key channels of every prompt token,
    /// recover them with `recovery`, fp16 storage.
    ///
    /// - Parameters:
    ///   - ratio: fraction of channels pruned, in [0, 1).
    ///   - recovery: how pruned entries are rebuilt. Default ``Recovery/mean``.
    ///   - signBits: store the signs of pruned entries. nil (the default) means "yes whenever the
    ///     recovery can use them", i.e. false for ``Recovery/none``.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.spark(ratio: 0.8)   // 86 bytes of K per token and head at D = 128
    /// ```
    public static func spark(ratio: Float, recovery: Recovery = .mean, signBits: Bool? = nil) -> CompressionPolicy {
        CompressionPolicy(keyPruneRatio: ratio, recovery: recovery, signBits: signBits ?? (recovery != .none))
    }

    /// Whether prefill prunes key channels: cumulative selection, or top-k keeping fewer than
    /// `headDim` channels. A policy that does not prune stores keys dense.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.001).prunes(headDim: 128) // false: floor(0.128) = 0
    /// ```
    public func prunes(headDim: Int) -> Bool {
        if case .cumulative = selection { return true }
        return keptChannels(headDim: headDim) < headDim
    }

    /// Channels top-k keeps per token, `D - floor(r * D)`, computed by the library.
    /// For cumulative selection the count varies per token; this returns the top-k value anyway.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).keptChannels(headDim: 128) // 26
    /// ```
    public func keptChannels(headDim: Int) -> Int {
        guard let d = UInt32(exactly: headDim) else { return headDim }
        return Int(sparkv_topk_keep(keyPruneRatio, d))
    }

    /// Checks the policy against a head dimension exactly as the C library does (it asks
    /// `sparkv_policy_validate`).
    ///
    /// - Throws: ``SparKVError/invalidPolicy(_:)`` or ``SparKVError/headDim(_:)`` with the reason.
    ///
    /// ```swift
    /// try CompressionPolicy.spark(ratio: 0.8).validate(headDim: 128)          // fine
    /// try CompressionPolicy(recovery: .none, signBits: true).validate(headDim: 128)
    /// // throws .invalidPolicy("sign_bits needs a recovery mode: ...")
    /// ```
    public func validate(headDim: Int) throws {
        var c = try cPolicy()
        guard let d = UInt32(exactly: headDim) else {
            throw SparKVError.headDim("head_dim \(headDim) is not a multiple of 8 in [8, 256]")
        }
        let status = sparkv_policy_validate(&c, d)
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
    }
}
