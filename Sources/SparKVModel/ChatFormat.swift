/// How a model's chat template writes a conversation: the turn markers of its family. Chosen from
/// the vocabulary (``Tokenizer/chatFormat``): a model whose vocabulary has `<start_of_turn>` and
/// `<end_of_turn>` speaks Gemma's format, one with `<|im_start|>` and `<|im_end|>` ChatML.
///
/// ```swift
/// ChatFormat.gemma.render([.user("Hi")], defaultSystem: nil)
/// // "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
/// ```
public enum ChatFormat: String, Hashable, Codable, Sendable {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` (SmolLM2, Qwen2).
    case chatML
    /// `<start_of_turn>{user|model}\n{content}<end_of_turn>\n` after `<bos>`; a system message is
    /// written at the start of the first user turn, as Gemma's template does (Gemma has no system
    /// role).
    case gemma

    /// The special token that ends a turn.
    public var endOfTurn: String {
        switch self {
        case .chatML: return "<|im_end|>"
        case .gemma: return "<end_of_turn>"
        }
    }

    /// The text that opens a turn of `role` ("system", "user" or "assistant").
    public func turnStart(_ role: String) -> String {
        switch self {
        case .chatML: return "<|im_start|>" + role + "\n"
        case .gemma: return "<start_of_turn>" + (role == "assistant" ? "model" : role) + "\n"
        }
    }

    /// One finished turn.
    public func turn(_ role: String, _ content: String) -> String {
        turnStart(role) + content + endOfTurn + "\n"
    }

    /// The prompt of a conversation: `defaultSystem` first when the conversation does not start
    /// with a system message (an empty conversation gets none), then each message, then the
    /// assistant's opening when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], defaultSystem: String?, addGenerationPrompt: Bool = true) -> String {
        var messages = messages
        if let first = messages.first, first.role != "system", let defaultSystem {
            messages.insert(.system(defaultSystem), at: 0)
        }
        var out = ""
        switch self {
        case .chatML:
            for message in messages { out += turn(message.role, message.content) }
        case .gemma:
            out = "<bos>"
            var systemPrefix = ""
            for message in messages {
                if message.role == "system" { systemPrefix += message.content + "\n\n"; continue }
                out += turn(message.role, systemPrefix + message.content)
                systemPrefix = ""
            }
        }
        if addGenerationPrompt { out += turnStart("assistant") }
        return out
    }

    /// The text a running conversation feeds after the model's reply: the next user turn and the
    /// assistant's opening (the reply's end-of-turn token is fed before it).
    public func nextTurn(user: String) -> String {
        "\n" + turn("user", user) + turnStart("assistant")
    }
}
