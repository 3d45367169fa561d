import CSparKV
import Foundation

/// Saved caches: compress a long prompt once, save it, and load it back bit-identically in another
/// session or process (`sparkv_cache_save` / `sparkv_cache_load`).
extension KVCache {
    /// Saves layers `layers` (all by default) to the file at `path`: a versioned, self-describing
    /// file (shape, every policy field, library version, a CRC-32C per section), written beside
    /// `path` and renamed over it, so readers never see a partial file.
    ///
    /// - Throws: ``SparKVError/layer(_:)`` for an empty or out-of-range range, ``SparKVError/io(_:)``
    ///   when the file cannot be written.
    ///
    /// ```swift
    /// try cache.save(to: "/tmp/system-prompt.svc")
    /// let again = try KVCache(contentsOf: "/tmp/system-prompt.svc", expectedShape: cache.shape)
    /// ```
    public func save(to path: String, layers: Range<Int>? = nil) throws {
        let (first, count) = try layerRange(layers, in: "save")
        try check(sparkv_cache_save(handle, first, count, path))
    }

    /// The bytes ``save(to:layers:)`` would write.
    ///
    /// ```swift
    /// let data = try cache.savedData(layers: 0..<4)
    /// ```
    public func savedData(layers: Range<Int>? = nil) throws -> Data {
        let (first, count) = try layerRange(layers, in: "savedData")
        var size: UInt64 = 0
        try check(sparkv_cache_save_size(handle, first, count, &size))
        guard let bytes = Int(exactly: size) else { throw SparKVError.outOfMemory("savedData: \(size) bytes") }
        var data = Data(count: bytes)
        var written = 0
        let status = data.withUnsafeMutableBytes { buf in
            sparkv_cache_save_buffer(handle, first, count, buf.baseAddress, buf.count, &written)
        }
        try check(status)
        return data.prefix(written)
    }

    /// Loads a cache saved by ``save(to:layers:)``. Layers outside the saved range are empty.
    ///
    /// - Parameter expectedShape: the model the cache is for. Its layers, heads and head dimension
    ///   must equal the file's (``SparKVError/invalidShape(_:)`` otherwise) and its capacity replaces
    ///   the file's (``SparKVError/capacity(_:)`` when a saved layer holds more tokens). nil keeps
    ///   the file's shape.
    /// - Throws: ``SparKVError/format(_:)`` for any malformed file (truncated, corrupt, another
    ///   format version, contents the library could not have written), ``SparKVError/io(_:)`` when
    ///   it cannot be read.
    ///
    /// ```swift
    /// let cache = try KVCache(contentsOf: "/tmp/system-prompt.svc", expectedShape: .smolLM2_135M(capacity: 8192))
    /// ```
    public convenience init(contentsOf path: String, expectedShape: ModelShape? = nil) throws {
        try self.init(loading: { shape, out in sparkv_cache_load(path, shape, out) }, expectedShape: expectedShape)
    }

    /// Loads a cache from the bytes of a saved file (see ``init(contentsOf:expectedShape:)``).
    ///
    /// ```swift
    /// let copy = try KVCache(savedData: try cache.savedData())
    /// ```
    public convenience init(savedData data: Data, expectedShape: ModelShape? = nil) throws {
        try self.init(loading: { shape, out in
            data.withUnsafeBytes { buf in
                // an empty Data has no base address; any non-NULL pointer with size 0 is rejected as truncated
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { one in
                    sparkv_cache_load_buffer(buf.baseAddress ?? UnsafeRawPointer(one.baseAddress!), buf.count, shape, out)
                }
            }
        }, expectedShape: expectedShape)
    }

    private convenience init(loading load: (UnsafePointer<sparkv_shape>?, UnsafeMutablePointer<OpaquePointer?>) -> sparkv_status,
                             expectedShape: ModelShape?) throws {
        var loaded: OpaquePointer?
        let status: sparkv_status
        if let expectedShape {
            var c = try expectedShape.cShape()
            status = load(&c, &loaded)
        } else {
            status = load(nil, &loaded)
        }
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
        guard let handle = loaded else { throw SparKVError.outOfMemory("cache_load returned no cache") }
        var cShape = sparkv_default_shape()
        var cPolicy = sparkv_default_policy()
        guard sparkv_cache_shape(handle, &cShape) == SPARKV_OK, sparkv_cache_policy(handle, &cPolicy) == SPARKV_OK else {
            sparkv_cache_free(handle)
            throw SparKVError.state("cache_load: the loaded cache did not report its shape and policy")
        }
        let policy: CompressionPolicy
        do {
            policy = try CompressionPolicy(cPolicy: cPolicy)
        } catch {
            sparkv_cache_free(handle)
            throw error
        }
        let shape = ModelShape(layers: Int(cShape.n_layers), queryHeads: Int(cShape.n_q_heads),
                               kvHeads: Int(cShape.n_kv_heads), headDim: Int(cShape.head_dim),
                               capacity: Int(clamping: cShape.capacity))
        self.init(adopting: handle, shape: shape, policy: policy)
    }

    /// The C range (first layer, count) of `layers`, all layers when nil.
    private func layerRange(_ layers: Range<Int>?, in operation: String) throws -> (UInt32, UInt32) {
        guard let layers else { return (0, SPARKV_ALL_LAYERS) }
        guard !layers.isEmpty, layers.lowerBound >= 0, layers.upperBound <= shape.layers else {
            throw SparKVError.layer("\(operation): layers \(layers) are not a non-empty range of the \(shape.layers) layers")
        }
        return (UInt32(layers.lowerBound), UInt32(layers.count))
    }
}
