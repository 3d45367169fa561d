/// The models `scripts/fetch-model.sh NAME` fetches into `models/`, by the names the CLI's
/// `--model` accepts.
///
/// ```swift
/// let path = try KnownModel.qwen25Coder1_5B.locate()   // .../models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
/// KnownModel(rawValue: "gemma-3-270m")?.fileName       // "gemma-3-270m-q4_k_m.gguf"
/// ```
public enum KnownModel: String, CaseIterable, Codable, Sendable {
    /// SmolLM2-135M-Instruct, Q4_1 (llama): the default.
    case smolLM2_135M = "smollm2-135m"
    /// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2).
    case qwen25Coder1_5B = "qwen2.5-coder-1.5b"
    /// Gemma 3 270M (base), Q4_K_M (gemma3).
    case gemma3_270M = "gemma-3-270m"

    /// The model used when none is named.
    public static let defaultModel = KnownModel.smolLM2_135M

    /// The file name under `models/` (the one `scripts/fetch-model.sh` writes).
    public var fileName: String {
        switch self {
        case .smolLM2_135M: return ModelFiles.smolLM2FileName
        case .qwen25Coder1_5B: return "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        case .gemma3_270M: return "gemma-3-270m-q4_k_m.gguf"
        }
    }

    /// The model's path: ``ModelFiles/locate(_:environmentValue:fetchName:)`` for its file name.
    /// `SPARKV_MODEL` is honoured only when it names a directory: a file it names is some other
    /// model than the one asked for by name.
    ///
    /// - Throws: ``GGUFError/fileNotFound(path:)`` naming the places searched and the fetch
    ///   command for this model.
    public func locate(environmentValue: String? = ModelFiles.environmentValue()) throws -> String {
        let directory = environmentValue.flatMap { ModelFiles.isDirectory($0) ? $0 : nil }
        return try ModelFiles.locate(fileName, environmentValue: directory, fetchName: self == .defaultModel ? nil : rawValue)
    }

    /// The names, comma-separated, for help texts and errors.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
