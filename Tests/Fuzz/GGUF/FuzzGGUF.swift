// libFuzzer target for SparKV's GGUF reader and the model loader's checks (issue 11).
//
// Built by scripts/fuzz-gguf.sh with swiftc -sanitize=fuzzer,address together with the pure-Swift
// sources of SparKVModel that read a file (GGUF reader, LlamaConfig and its tensor table,
// tokenizer), as one module named SparKVModel. Each input is parsed as a GGUF file held in memory
// (an exact-size copy, so ASan sees any read past its end) and put through what
// LlamaModel.init(file:) does before it hands tensors to the kernels: the hyper-parameters, the
// architecture's tensor table, the norm weights dequantized, and the tokenizer. No weight is read
// beyond the input, and the forward pass (C kernels) is not run.
//
// Besides ASan's findings, the target traps (and so reports a crash) when:
//   - an error message is longer than 16 kB (messages must quote strings from the file cut short);
//   - a tensor accepted by the table does not lie inside the input or has another size than the
//     kernels will assume (that would be an out-of-bounds read in the real loader).

#if canImport(Glibc)
import Glibc
#endif

/// SPARKV_FUZZ_VERBOSE=1: print what each input gave (to check the seeds are what they claim).
private let verbose = getenv("SPARKV_FUZZ_VERBOSE") != nil

/// Bound on any error message: names and keys are quoted with at most 64 characters.
private let maxMessageBytes = 16 << 10

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    do {
        try exercise(UnsafeRawBufferPointer(start: data, count: size))
        if verbose { print("[fuzz-gguf] \(size) bytes: a valid model (every check passed)") }
    } catch {
        let message = String(describing: error)
        if verbose { print("[fuzz-gguf] \(size) bytes: \(message.prefix(300))") }
        if message.utf8.count > maxMessageBytes {
            fatalError("error message of \(message.utf8.count) bytes: \(message.prefix(200))")
        }
    }
    return 0
}

private func exercise(_ bytes: UnsafeRawBufferPointer) throws {
    let file = try GGUFFile(bytes: bytes)

    // Metadata: every value rendered, every array element decoded (bounded by the input).
    for key in file.metadataKeys {
        guard let value = file.metadata[key] else { fatalError("key \(quoted(key)) listed but not stored") }
        _ = value.description
        if let array = value.array { walk(array) }
    }
    // Tensors: first and last row of each decodable one (row 0 also of an empty tensor: an error).
    for tensor in file.tensors where tensor.type.isDequantizable {
        check(tensor, inside: file)
        _ = try? tensor.dequantizeRow(0)
        if tensor.rowCount > 1 { _ = try tensor.dequantizeRow(tensor.rowCount - 1) }
    }

    // The tokenizer fails or succeeds on its own: the loader's commands build it after the model.
    do {
        let tokenizer = try Tokenizer(gguf: file)
        let ids = tokenizer.encode("Hello, world! 123 <|im_start|>", addSpecial: true)
        _ = try? tokenizer.decode(ids)
        if verbose { print("[fuzz-gguf] tokenizer: \(tokenizer.vocabularySize) tokens, encoded \(ids)") }
    } catch {
        if verbose { print("[fuzz-gguf] tokenizer: \(String(describing: error).prefix(300))") }
    }

    // What LlamaModel.init(file:) does before any kernel runs.
    let config = try LlamaConfig(gguf: file)
    for spec in config.expectedTensors() where file.hasTensor(named: spec.name) {
        let tensor = try file.tensor(named: spec.name)
        // The table accepted it: it must be exactly what the kernels will be told.
        guard tensor.shape == spec.shape, spec.types.contains(tensor.type) else {
            fatalError("table accepted \(tensor) against \(spec)")
        }
        check(tensor, inside: file)
        if spec.shape.count == 1 {
            let row = try tensor.dequantizeRow(0)
            guard row.count == config.hidden else { fatalError("norm \(tensor.name) gave \(row.count) floats") }
        } else {
            guard tensor.rowLength == spec.shape[0], tensor.rowCount == spec.shape[1] else {
                fatalError("matrix \(tensor.name) is \(tensor.rowCount) x \(tensor.rowLength)")
            }
        }
    }
}

/// The tensor's bytes lie inside the file and match its shape and type.
private func check(_ tensor: GGUFTensor, inside file: GGUFFile) {
    guard let base = file.baseAddress else { fatalError("a tensor in an empty file") }
    let start = tensor.data - base
    guard tensor.byteCount == tensor.rowCount * tensor.rowByteCount,
          start >= file.dataOffset, start <= file.fileSize, tensor.byteCount <= file.fileSize - start else {
        fatalError("tensor \(tensor) lies outside the \(file.fileSize)-byte input")
    }
}

/// Decodes every element of an array, nested arrays included.
private func walk(_ array: GGUFArray) {
    for element in array {
        if let nested = element.array { walk(nested) } else { _ = element.description }
    }
}
