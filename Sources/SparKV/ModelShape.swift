import CSparKV

/// The shape of the attention layers a ``KVCache`` serves.
///
/// A plain value: build it, check it with ``validate()``, hand it to ``KVCache/init(shape:policy:)``.
/// Token counts are per layer and per KV head; `capacity` bounds prompt plus appended tokens.
///
/// ```swift
/// let shape = ModelShape.llama3_8B(capacity: 8192)
/// try shape.validate()
/// print(shape.groupSize) // 4 query heads share each KV head
/// ```
public struct ModelShape: Hashable, Codable, Sendable {
    /// Number of transformer layers, at least 1.
    ///
    /// ```swift
    /// var shape = ModelShape.llama3_8B(capacity: 4096)
    /// shape.layers = 2   // keep only two layers for a quick experiment
    /// ```
    public var layers: Int
    /// Query heads per layer, a multiple of ``kvHeads``.
    ///
    /// ```swift
    /// ModelShape.llama3_8B(capacity: 4096).queryHeads // 32
    /// ```
    public var queryHeads: Int
    /// Key/value heads per layer (grouped-query attention when smaller than ``queryHeads``).
    ///
    /// ```swift
    /// ModelShape.llama3_8B(capacity: 4096).kvHeads // 8
    /// ```
    public var kvHeads: Int
    /// Channels per head (D), a multiple of 8 in 8...256; 64 and 128 are the fastest.
    ///
    /// ```swift
    /// ModelShape.smolLM2_135M(capacity: 2048).headDim // 64
    /// ```
    public var headDim: Int
    /// Maximum tokens per layer (prompt + appended), at least 1. Memory is allocated in pages as
    /// tokens arrive, so a generous capacity costs nothing up front.
    ///
    /// ```swift
    /// let shape = ModelShape.llama3_8B(capacity: 128 * 1024)
    /// ```
    public var capacity: Int

    /// Creates a shape from its five sizes. Nothing is checked here; call ``validate()`` (or let
    /// ``KVCache/init(shape:policy:)`` do it).
    ///
    /// ```swift
    /// let shape = ModelShape(layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 512)
    /// ```
    public init(layers: Int, queryHeads: Int, kvHeads: Int, headDim: Int, capacity: Int) {
        self.layers = layers
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.capacity = capacity
    }

    /// Llama-3 8B attention: 32 layers, 32 query heads, 8 KV heads, D = 128.
    ///
    /// ```swift
    /// let shape = ModelShape.llama3_8B(capacity: 8192)
    /// ```
    public static func llama3_8B(capacity: Int) -> ModelShape {
        ModelShape(layers: 32, queryHeads: 32, kvHeads: 8, headDim: 128, capacity: capacity)
    }

    /// SmolLM2-135M attention: 30 layers, 9 query heads, 3 KV heads, D = 64.
    ///
    /// ```swift
    /// let shape = ModelShape.smolLM2_135M(capacity: 2048)
    /// ```
    public static func smolLM2_135M(capacity: Int) -> ModelShape {
        ModelShape(layers: 30, queryHeads: 9, kvHeads: 3, headDim: 64, capacity: capacity)
    }

    /// Query heads per KV head (the GQA group size G). Only meaningful for a valid shape; 0 if
    /// ``kvHeads`` is not positive.
    ///
    /// ```swift
    /// ModelShape.smolLM2_135M(capacity: 1).groupSize // 3
    /// ```
    public var groupSize: Int { kvHeads > 0 ? queryHeads / kvHeads : 0 }

    /// Checks the shape exactly as the C library does (it asks the library), so a shape that
    /// passes here is accepted by ``KVCache/init(shape:policy:)``.
    ///
    /// - Throws: ``SparKVError/invalidShape(_:)``, ``SparKVError/headDim(_:)`` or
    ///   ``SparKVError/gqa(_:)`` with the reason.
    ///
    /// ```swift
    /// do { try ModelShape(layers: 1, queryHeads: 6, kvHeads: 4, headDim: 64, capacity: 8).validate() }
    /// catch { print(error) } // n_q_heads (6) is not a multiple of n_kv_heads (4)
    /// ```
    public func validate() throws {
        var c = try cShape()
        var policy = sparkv_default_policy()
        var handle: OpaquePointer?
        let status = sparkv_cache_create(&c, &policy, &handle)
        sparkv_cache_free(handle)
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
    }

    /// The C structure, or `.invalidShape` when a size cannot be represented in it.
    func cShape() throws -> sparkv_shape {
        func field<T: FixedWidthInteger>(_ name: String, _ value: Int, as: T.Type) throws -> T {
            guard let v = T(exactly: value), value >= 1 else {
                throw SparKVError.invalidShape("\(name) is \(value); it must be between 1 and \(T.max)")
            }
            return v
        }
        var s = sparkv_default_shape()
        s.n_layers = try field("layers", layers, as: UInt32.self)
        s.n_q_heads = try field("queryHeads", queryHeads, as: UInt32.self)
        s.n_kv_heads = try field("kvHeads", kvHeads, as: UInt32.self)
        guard let d = UInt32(exactly: headDim) else {
            throw SparKVError.headDim("headDim \(headDim) is not a multiple of 8 in [8, 256]")
        }
        s.head_dim = d
        s.capacity = try field("capacity", capacity, as: UInt64.self)
        return s
    }
}
