/// A failure of the model path: a file that does not describe a model this library can run,
/// arguments out of range, or a kernel rejecting its arguments.
///
/// ```swift
/// do { _ = try LlamaModel(path: path) }
/// catch let error as ModelError { print(error) }
/// // weight "output_norm.weight" has shape [8], expected [576]
/// ```
public enum ModelError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A kernel rejected its arguments (`svm_status` and where).
    case kernel(status: Int32, call: String, message: String)
    /// A weight has a type the kernels do not support, or the wrong shape.
    case unsupportedWeight(tensor: String, detail: String)
    /// The prompt is empty.
    case emptyPrompt
    /// More tokens than the cache or the model's context can hold.
    case tooManyTokens(tokens: Int, limit: Int)
    /// A token id outside the vocabulary.
    case badToken(id: Int, vocabularySize: Int)
    /// `general.architecture` names an architecture without a tensor table here.
    case unsupportedArchitecture(String)
    /// A hyper-parameter is missing its meaning: out of range, or inconsistent with another
    /// (`key` is the metadata key, or a description when several are involved).
    case invalidConfig(key: String, detail: String)
    /// A tensor the architecture uses has another shape than the hyper-parameters give (GGUF
    /// order: `shape[0]` is the row length).
    case tensorShape(tensor: String, shape: [Int], expected: [Int])
    /// A tensor the architecture uses is stored in a type its kernels cannot read.
    case tensorType(tensor: String, type: GGUFTensorType, allowed: [GGUFTensorType])
    /// The file holds a tensor that is not part of the architecture (this loader would ignore
    /// it, and so likely compute something other than the model the file describes).
    case unexpectedTensor(tensor: String, shape: [Int])
    /// The prompt is longer than the model's context (`llama.context_length`).
    case promptTooLong(tokens: Int, contextLength: Int)
    /// The environment variable `variable` (`SPARKV_MODEL`) is set to `value`, which names no
    /// usable model file.
    case environmentPath(variable: String, value: String, reason: String)
    /// A thread count outside `1...ModelLimits.maxThreads` (0 or nil means the default).
    case invalidThreads(Int)

    public var description: String {
        switch self {
        case let .kernel(status, call, message): return "\(call) failed (status \(status)): \(message)"
        case let .unsupportedWeight(tensor, detail): return "weight \(quoted(tensor)): \(detail)"
        case .emptyPrompt: return "the prompt has no tokens"
        case let .tooManyTokens(tokens, limit): return "\(tokens) tokens exceed the limit of \(limit)"
        case let .badToken(id, vocab): return "token id \(id) is outside the vocabulary (size \(vocab))"
        case let .unsupportedArchitecture(name):
            return "unsupported model architecture \(quoted(name)) (supported: "
                + ModelArchitecture.supportedNames.joined(separator: ", ") + ")"
        case let .invalidConfig(key, detail): return "model hyper-parameter \(quoted(key)): \(detail)"
        case let .tensorShape(tensor, shape, expected):
            return "weight \(quoted(tensor)) has shape \(shape), expected \(expected)"
        case let .tensorType(tensor, type, allowed):
            return "weight \(quoted(tensor)) has type \(type), expected one of "
                + allowed.map(\.name).joined(separator: ", ")
        case let .unexpectedTensor(tensor, shape):
            return "tensor \(quoted(tensor)) \(shape) is not part of the model's architecture"
        case let .promptTooLong(tokens, context):
            return "the prompt has \(tokens) tokens, more than the model's context of \(context) tokens"
        case let .environmentPath(variable, value, reason):
            return "\(variable)=\(value) names no model file (\(reason)); point it at the GGUF file or a "
                + "directory holding it, or unset it to search models/"
        case let .invalidThreads(n):
            return "thread count \(n) is out of range (1...\(ModelLimits.maxThreads), or 0 for the default)"
        }
    }
}
