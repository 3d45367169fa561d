import CSparKV

/// How a cache compresses a prompt: the pipeline of the C policy.
///
/// Prefill runs three optional stages, in this order, per layer and KV head:
/// 1. **Token eviction** (``eviction``): SnapKV, PyramidKV or StreamingLLM keep a subset of the
///    prompt tokens; the others are dropped.
/// 2. **Key-channel pruning** (``keyPruning``, ``keyPruneRatio``, ``selection``, ``recovery``,
///    ``signBits``) of the surviving tokens: SparK's query-aware per-token channel sets with
///    recovery of the pruned entries at attention time, or ThinK's one channel set per head.
/// 3. **Value-channel pruning** (``valuePruneRatio``): each token keeps its largest values and
///    replaces the others by their mean.
///
/// What survives is stored in ``keyPrecision`` / ``valuePrecision``: f32, f16, bf16, or the
/// quantized ``Precision/i8`` / ``Precision/i4`` with fp16 scales (one per ``quantGroup``
/// channels of a row stored whole, one per token for kept values of a pruned row). Quantization
/// changes no channel or token choice: selection runs on the float inputs.
///
/// ```swift
/// let int8 = CompressionPolicy.quantized(keys: .i8, values: .i8)                      // no pruning
/// let both = CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8)
/// print(both)   // spark(0.8,mean,signed)+kprec(i8)+vprec(i8): 62 + 136 bytes per token at D = 128
/// ```
///
/// A plain, `Codable` value mirroring the C `sparkv_policy`; every field has the C library's
/// default, and ``validate(headDim:)`` asks the C library, so Swift and C always agree on what is
/// valid. Errors that depend on the prompt (a budget larger than the prompt) come from
/// ``KVCache/prefill(layer:keys:values:windowQueries:tokenCount:windowCount:)``.
///
/// ```swift
/// var policy = CompressionPolicy.snapSpark(budget: 1024, ratio: 0.8)   // SnapKV, then SparK
///     .withValuePruning(ratio: 0.5)
/// policy.threads = 2
/// try policy.validate(headDim: 128)
/// print(policy)   // snapkv(1024)+spark(0.8,mean,signed)+vprune(0.5)+threads(2)
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
        /// ignored. SparK only.
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
    /// The quantized precisions ``i8`` and ``i4`` are symmetric with fp16 scales: a run of values
    /// sharing one scale stores `q_i = clamp(rint(x_i / s), -Q, Q)` with `s = fp16(max|x| / Q)`
    /// (`Q` = 127 or 7) and reads back as `s * q_i`, so every value is within `s / 2` of its input
    /// (see `sparkv_precision` in sparkv.h). Rows stored whole (dense or appended keys, values
    /// without value pruning) use one scale per ``CompressionPolicy/quantGroup`` channels; the kept
    /// key values of a pruned token and the kept values of a value-pruned token share one scale.
    ///
    /// ```swift
    /// var policy = CompressionPolicy.dense
    /// policy.valuePrecision = .bf16
    /// let int8 = CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8)
    /// ```
    public enum Precision: String, Hashable, Sendable, Codable, CaseIterable {
        /// 4-byte IEEE float.
        case f32
        /// 2-byte IEEE binary16, round to nearest even.
        case f16
        /// 2-byte bfloat16, round to nearest even.
        case bf16
        /// Symmetric int8, `q` in [-127, 127], 1 byte per value plus fp16 scales.
        case i8
        /// Symmetric 4-bit, `q` in [-7, 7], two values per byte (a row is rounded up to whole
        /// bytes) plus fp16 scales.
        case i4

        /// Bytes per stored element, rounded up to a whole byte (``i4`` reports 1; use
        /// ``rowBytes(_:)`` for the exact size of a row).
        ///
        /// ```swift
        /// CompressionPolicy.Precision.f16.byteCount // 2
        /// CompressionPolicy.Precision.i8.byteCount  // 1
        /// ```
        public var byteCount: Int {
            switch self {
            case .f32: return 4
            case .f16, .bf16: return 2
            case .i8, .i4: return 1
            }
        }

        /// Bits per stored element (scales not included).
        ///
        /// ```swift
        /// CompressionPolicy.Precision.i4.bitCount // 4
        /// ```
        public var bitCount: Int {
            switch self {
            case .f32: return 32
            case .f16, .bf16: return 16
            case .i8: return 8
            case .i4: return 4
            }
        }

        /// Whether values are stored as integers with fp16 scales (``i8``, ``i4``).
        ///
        /// ```swift
        /// CompressionPolicy.Precision.i4.isQuantized  // true
        /// CompressionPolicy.Precision.bf16.isQuantized // false
        /// ```
        public var isQuantized: Bool { self == .i8 || self == .i4 }

        /// Largest integer of the quantization grid: 127 (``i8``), 7 (``i4``); nil for float
        /// precisions.
        ///
        /// ```swift
        /// CompressionPolicy.Precision.i8.quantMax // 127
        /// ```
        public var quantMax: Int? {
            switch self {
            case .i8: return 127
            case .i4: return 7
            case .f32, .f16, .bf16: return nil
            }
        }

        /// Bytes of a stored row of `count` values, scales excluded: `4n` (f32), `2n` (f16,
        /// bf16), `n` (i8), `ceil(n / 2)` (i4). The header's `rb(p, n)`.
        ///
        /// ```swift
        /// CompressionPolicy.Precision.i4.rowBytes(13) // 7
        /// ```
        public func rowBytes(_ count: Int) -> Int {
            switch self {
            case .f32: return 4 * count
            case .f16, .bf16: return 2 * count
            case .i8: return count
            case .i4: return (count + 1) / 2
            }
        }

        /// Bytes of `count` fp16 scales: `2 * count` for ``i8`` / ``i4``, 0 for float precisions.
        /// The header's `sc(p, k)`.
        ///
        /// ```swift
        /// CompressionPolicy.Precision.i8.scaleBytes(4) // 8
        /// ```
        public func scaleBytes(_ count: Int) -> Int { isQuantized ? 2 * count : 0 }
    }

    /// Token eviction at prefill, the first stage of the pipeline. It runs per layer and KV head
    /// and stores only the surviving prompt tokens, in prompt order. Appended tokens are never
    /// evicted.
    ///
    /// SnapKV and PyramidKV score tokens with the observation window, so their prefill needs
    /// window queries even when keys are not pruned.
    ///
    /// ```swift
    /// let snap = CompressionPolicy.Eviction.snapKV(budget: 512)
    /// let pyramid = CompressionPolicy.Eviction.pyramidKV(meanBudget: 512, ratio: 4)
    /// let streaming = CompressionPolicy.Eviction.streamingLLM(sinks: 4, recent: 508)
    /// let policy = CompressionPolicy.spark(ratio: 0.8).withEviction(pyramid)
    /// ```
    public enum Eviction: Hashable, Sendable {
        /// SnapKV: keep the `u = min(window, windowCount)` window tokens and the `budget` prompt
        /// tokens before them with the highest window attention (causal softmax per query head,
        /// averaged over the window queries and the GQA group), average-pooled along tokens with
        /// an odd `poolKernel` (1 = no pooling, zero padding). `budget` is at least 1 and at most
        /// the prompt minus the window (checked at prefill).
        ///
        /// ```swift
        /// policy.eviction = .snapKV(budget: 1024, poolKernel: 7)
        /// ```
        case snapKV(budget: Int, poolKernel: Int = 5)
        /// PyramidKV: SnapKV scoring with budgets decreasing linearly over the layers, from
        /// `ratio` times the last layer's to the last layer's, with mean `meanBudget`
        /// (`ratio >= 1`). Each layer's budget is clamped to `1...(prompt - window)`; a
        /// `meanBudget` above `prompt - window` is rejected at prefill.
        ///
        /// ```swift
        /// policy.eviction = .pyramidKV(meanBudget: 512, ratio: 8)   // 910 tokens in layer 0, 114 in the last
        /// ```
        case pyramidKV(meanBudget: Int, ratio: Float = 4, poolKernel: Int = 5)
        /// StreamingLLM: keep the first `sinks` and the last `recent` prompt tokens (every token
        /// when they cover the prompt). `sinks + recent` must be at least 1.
        ///
        /// ```swift
        /// policy.eviction = .streamingLLM(sinks: 4, recent: 2044)
        /// ```
        case streamingLLM(sinks: Int, recent: Int)
    }

    /// How key channels are pruned (when ``keyPruneRatio`` > 0, or with cumulative selection).
    ///
    /// ```swift
    /// CompressionPolicy.think(ratio: 0.5).keyPruning   // .think
    /// ```
    public enum KeyPruning: String, Hashable, Sendable, Codable, CaseIterable {
        /// SparK: a channel set per token, chosen by saliency `k^2 * qn`, with recovery of the
        /// pruned entries.
        ///
        /// ```swift
        /// CompressionPolicy.spark(ratio: 0.8).keyPruning == .spark   // true
        /// ```
        case spark
        /// ThinK: one channel set per layer and KV head for every prompt token (the channels of
        /// largest `qn^2 * mean(k^2)`); pruned entries are 0. Top-k selection only, with
        /// ``Recovery/none`` and no sign bits.
        ///
        /// ```swift
        /// CompressionPolicy.think(ratio: 0.5).keyPruning == .think   // true
        /// ```
        case think
    }

    /// Token eviction before channel pruning; nil keeps every prompt token. Default nil.
    ///
    /// ```swift
    /// var policy = CompressionPolicy.spark(ratio: 0.8)
    /// policy.eviction = .streamingLLM(sinks: 4, recent: 2044)
    /// ```
    public var eviction: Eviction?
    /// Per-token (SparK) or per-head (ThinK) key-channel pruning. Default ``KeyPruning/spark``.
    ///
    /// ```swift
    /// policy.keyPruning = .think   // also set recovery = .none and signBits = false
    /// ```
    public var keyPruning: KeyPruning
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
    /// r_v in [0, 1): the fraction of value channels pruned per prompt token. Each token keeps
    /// its `D - floor(r_v * D)` values of largest magnitude (ties to the lower index); the
    /// others read back as the fp16 mean of the pruned values. 0 = off. Default 0.
    ///
    /// ```swift
    /// policy.valuePruneRatio = 0.5
    /// ```
    public var valuePruneRatio: Float
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
    /// w: how many of the last prompt queries measure channel importance and score tokens for
    /// eviction, at least 1. Default 32.
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
    /// Softmax scale of attention and of SnapKV scoring; nil means `1 / sqrt(headDim)`. Must be
    /// finite and positive when set. Default nil.
    ///
    /// ```swift
    /// policy.attentionScale = 0.125
    /// ```
    public var attentionScale: Float?
    /// Channels per fp16 scale in rows stored whole with an ``Precision/i8`` or ``Precision/i4``
    /// precision (dense and appended keys, values without value pruning): a multiple of 8 in
    /// `8...headDim` dividing `headDim`. Checked only when a precision is quantized (ignored
    /// otherwise). The kept key values of a pruned token and the kept values of a value-pruned
    /// token always share one scale per token. Default 32.
    ///
    /// ```swift
    /// var policy = CompressionPolicy.quantized(keys: .i4, values: .i4)
    /// policy.quantGroup = 16   // 8 scales per 128-channel row: finer grid, 16 bytes of scales
    /// ```
    public var quantGroup: Int

    /// Decode-time compression: appended tokens are compressed as they age, under the same key
    /// and value policy as the prompt (see ``KVCache/append(layer:keys:values:query:)``); nil
    /// (default): appended tokens stay dense.
    ///
    /// ```swift
    /// var policy = CompressionPolicy.spark(ratio: 0.8)
    /// policy.decodeCompression = .init(recent: 64)   // the newest 64 tokens stay dense
    /// ```
    public var decodeCompression: DecodeCompression?

    /// How appended tokens are compressed as they age: every full page (256 tokens) of them with
    /// ``recent`` newer tokens after it is re-encoded like a prompt page.
    public struct DecodeCompression: Hashable, Sendable {
        /// The newest tokens that always stay dense (attention to them is exact). Default 32.
        public var recent: Int

        /// ```swift
        /// CompressionPolicy.DecodeCompression(recent: 32)
        /// ```
        public init(recent: Int = 32) { self.recent = recent }
    }

    /// Creates a policy; every argument defaults to the C library's default (a dense cache with
    /// f16 keys and values, no eviction, no value pruning).
    ///
    /// ```swift
    /// let policy = CompressionPolicy(eviction: .snapKV(budget: 256), keyPruneRatio: 0.5,
    ///                                recovery: .gaussian, seed: 7)
    /// ```
    public init(eviction: Eviction? = nil, keyPruning: KeyPruning = .spark, keyPruneRatio: Float = 0,
                selection: Selection = .topK, recovery: Recovery = .mean, signBits: Bool = true,
                valuePruneRatio: Float = 0, keyPrecision: Precision = .f16, valuePrecision: Precision = .f16,
                window: Int = 32, seed: UInt64 = 0, threads: Int? = nil, attentionScale: Float? = nil,
                quantGroup: Int = 32, decodeCompression: DecodeCompression? = nil) {
        self.eviction = eviction
        self.keyPruning = keyPruning
        self.keyPruneRatio = keyPruneRatio
        self.selection = selection
        self.recovery = recovery
        self.signBits = signBits
        self.valuePruneRatio = valuePruneRatio
        self.keyPrecision = keyPrecision
        self.valuePrecision = valuePrecision
        self.window = window
        self.seed = seed
        self.threads = threads
        self.attentionScale = attentionScale
        self.quantGroup = quantGroup
        self.decodeCompression = decodeCompression
    }

    // MARK: Presets

    /// No compression: every token, keys and values stored dense in fp16 (the baseline the other
    /// policies are measured against).
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

    /// SnapKV alone: keep the window and the `budget` best-attended prompt tokens before it,
    /// dense fp16 keys and values.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.snapKV(budget: 1024)
    /// ```
    public static func snapKV(budget: Int, poolKernel: Int = 5) -> CompressionPolicy {
        CompressionPolicy(eviction: .snapKV(budget: budget, poolKernel: poolKernel))
    }

    /// PyramidKV alone: SnapKV with per-layer budgets decreasing linearly from `ratio` times the
    /// last layer's, averaging `meanBudget`.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.pyramidKV(meanBudget: 512, ratio: 4)
    /// ```
    public static func pyramidKV(meanBudget: Int, ratio: Float = 4, poolKernel: Int = 5) -> CompressionPolicy {
        CompressionPolicy(eviction: .pyramidKV(meanBudget: meanBudget, ratio: ratio, poolKernel: poolKernel))
    }

    /// StreamingLLM alone: keep the first `sinks` and the last `recent` prompt tokens.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.streamingLLM(sinks: 4, recent: 1020)
    /// ```
    public static func streamingLLM(sinks: Int, recent: Int) -> CompressionPolicy {
        CompressionPolicy(eviction: .streamingLLM(sinks: sinks, recent: recent))
    }

    /// ThinK alone: prune `ratio` of the key channels with one channel set per layer and KV head
    /// (pruned entries are 0; no recovery, no sign bits).
    ///
    /// ```swift
    /// let policy = CompressionPolicy.think(ratio: 0.5)   // 64 of 128 channels, 128 bytes of K per token
    /// ```
    public static func think(ratio: Float) -> CompressionPolicy {
        CompressionPolicy(keyPruning: .think, keyPruneRatio: ratio, recovery: .none, signBits: false)
    }

    /// SnapKV eviction, then SparK on the surviving tokens.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.snapSpark(budget: 1024, ratio: 0.8)
    /// ```
    public static func snapSpark(budget: Int, ratio: Float, recovery: Recovery = .mean,
                                 poolKernel: Int = 5) -> CompressionPolicy {
        spark(ratio: ratio, recovery: recovery).withEviction(.snapKV(budget: budget, poolKernel: poolKernel))
    }

    /// This policy with value-channel pruning at `ratio` (0 turns it off).
    ///
    /// ```swift
    /// let policy = CompressionPolicy.spark(ratio: 0.8).withValuePruning(ratio: 0.5)
    /// ```
    public func withValuePruning(ratio: Float) -> CompressionPolicy {
        var copy = self
        copy.valuePruneRatio = ratio
        return copy
    }

    /// A quantized cache without eviction or pruning: every key and value stored whole in
    /// `keys` / `values` precision with one fp16 scale per `group` channels.
    ///
    /// ```swift
    /// let int8 = CompressionPolicy.quantized(keys: .i8, values: .i8)   // 128 + 8 bytes of K per token at D = 128
    /// let kivi = CompressionPolicy.quantized(keys: .i8, values: .i4, group: 64)
    /// int8.description   // "dense+kprec(i8)+vprec(i8)"
    /// ```
    public static func quantized(keys: Precision, values: Precision, group: Int = 32) -> CompressionPolicy {
        CompressionPolicy(keyPrecision: keys, valuePrecision: values, quantGroup: group)
    }

    /// This policy with key and value storage precisions (and, when given, the quantization
    /// group); nil keeps the current one. Adds int8/int4 storage to any preset.
    ///
    /// ```swift
    /// let policy = CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).withPrecision(keys: .i8, values: .i4)
    /// policy.description   // "snapkv(512)+spark(0.8,mean,signed)+kprec(i8)+vprec(i4)"
    /// ```
    public func withPrecision(keys: Precision? = nil, values: Precision? = nil, group: Int? = nil) -> CompressionPolicy {
        var copy = self
        if let keys { copy.keyPrecision = keys }
        if let values { copy.valuePrecision = values }
        if let group { copy.quantGroup = group }
        return copy
    }

    /// Whether keys or values are stored quantized (``Precision/i8`` / ``Precision/i4``).
    ///
    /// ```swift
    /// CompressionPolicy.quantized(keys: .i8, values: .f16).isQuantized // true
    /// ```
    public var isQuantized: Bool { keyPrecision.isQuantized || valuePrecision.isQuantized }

    /// This policy with `eviction` (nil turns eviction off).
    ///
    /// ```swift
    /// let policy = CompressionPolicy.think(ratio: 0.5).withEviction(.streamingLLM(sinks: 4, recent: 508))
    /// ```
    public func withEviction(_ eviction: Eviction?) -> CompressionPolicy {
        var copy = self
        copy.eviction = eviction
        return copy
    }

    // MARK: Derived quantities

    /// Whether prefill prunes key channels: cumulative selection, or top-k keeping fewer than
    /// `headDim` channels (SparK or ThinK). A policy that does not prune stores keys dense.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.001).prunes(headDim: 128) // false: floor(0.128) = 0
    /// ```
    public func prunes(headDim: Int) -> Bool {
        if case .cumulative = selection { return true }
        return keptChannels(headDim: headDim) < headDim
    }

    /// Channels top-k keeps per token (SparK) or per head (ThinK), `D - floor(r * D)`, computed by
    /// the library. For cumulative selection the count varies per token; this returns the top-k
    /// value anyway.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).keptChannels(headDim: 128) // 26
    /// ```
    public func keptChannels(headDim: Int) -> Int {
        guard let d = UInt32(exactly: headDim) else { return headDim }
        return Int(sparkv_topk_keep(keyPruneRatio, d))
    }

    /// Whether prefill prunes value channels: `D - floor(r_v * D)` is below `headDim`.
    ///
    /// ```swift
    /// CompressionPolicy.dense.withValuePruning(ratio: 0.5).prunesValues(headDim: 128) // true
    /// ```
    public func prunesValues(headDim: Int) -> Bool {
        keptValueChannels(headDim: headDim) < headDim
    }

    /// Values each prompt token keeps with value pruning, `D - floor(r_v * D)` (`headDim` when
    /// value pruning is off).
    ///
    /// ```swift
    /// CompressionPolicy.dense.withValuePruning(ratio: 0.5).keptValueChannels(headDim: 128) // 64
    /// ```
    public func keptValueChannels(headDim: Int) -> Int {
        guard let d = UInt32(exactly: headDim) else { return headDim }
        return Int(sparkv_topk_keep(valuePruneRatio, d))
    }

    /// Whether prefill needs window queries: the policy prunes key channels, or evicts by window
    /// attention (SnapKV, PyramidKV).
    func needsWindow(headDim: Int) -> Bool {
        switch eviction {
        case .snapKV?, .pyramidKV?: return true
        case .streamingLLM?, nil: return prunes(headDim: headDim)
        }
    }

    /// Checks the policy against a head dimension exactly as the C library does (it asks
    /// `sparkv_policy_validate`). Only values the C structure cannot hold (a negative budget, a
    /// `threads` of 0 where nil is meant, ...) are rejected in Swift first.
    ///
    /// - Throws: ``SparKVError/invalidPolicy(_:)`` or ``SparKVError/headDim(_:)`` with the reason.
    ///
    /// ```swift
    /// try CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).validate(headDim: 128)   // fine
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
