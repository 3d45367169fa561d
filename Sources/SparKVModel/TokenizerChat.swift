/// One message of a conversation for ``Tokenizer/chatPrompt(_:addGenerationPrompt:)``.
///
/// ```swift
/// let messages: [ChatMessage] = [.system("Answer briefly."), .user("What is the capital of France?")]
/// ```
public struct ChatMessage: Hashable, Codable, Sendable {
    /// "system", "user" or "assistant".
    public var role: String
    /// The text of the message.
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    /// A system message.
    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: "system", content: content) }
    /// A user message.
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "user", content: content) }
    /// An assistant message.
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "assistant", content: content) }
}

enum ChatTemplate {
    /// SmolLM2-Instruct's default system prompt, as written in its chat template.
    static let smolLM2SystemPrompt = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

    /// The system prompt a ChatML Jinja template inserts when the conversation has none: the
    /// first literal text between "<|im_start|>system" + newline and "<|im_end|>" inside the
    /// template that holds no template syntax. Every occurrence is tried: Qwen2's template opens a
    /// system message with a variable content first (its tools branch) and has the literal
    /// default later. Nil when the template has no such literal.
    static func defaultSystemPrompt(in template: String) -> String? {
        for opener in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            var rest = template[...]
            while let start = rest.firstRange(of: opener) {
                rest = rest[start.upperBound...]
                guard let end = rest.firstRange(of: "<|im_end|>") else { break }
                let text = String(rest[..<end.lowerBound])
                if !text.isEmpty && !text.contains(where: { "{}'\"".contains($0) }) { return text }
            }
        }
        return nil
    }
}

extension Tokenizer {
    /// The chat prompt of a conversation in the model's ``chatFormat`` (ChatML when the
    /// vocabulary has no turn markers: check ``chatFormat`` first to refuse such a model), as
    /// SmolLM2-Instruct's template renders it: each message as
    /// `<|im_start|>{role}\n{content}<|im_end|>\n`, preceded by the template's default system
    /// message (``defaultSystemPrompt``) when the first message is not a system message (an empty
    /// conversation gets none), and followed by `<|im_start|>assistant\n` when
    /// `addGenerationPrompt` is true (see ``ChatFormat`` for Gemma's).
    /// Encode the result with ``encode(_:addSpecial:parseSpecial:)`` (special tokens parsed).
    ///
    /// ```swift
    /// tokenizer.chatPrompt([.user("Hi")])
    /// // "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    /// // + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    /// ```
    public func chatPrompt(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        (chatFormat ?? .chatML).render(messages, defaultSystem: defaultSystemPrompt, addGenerationPrompt: addGenerationPrompt)
    }

    /// The chat prompt of one user message, with `system` as the system message (the
    /// template's default when nil).
    ///
    /// ```swift
    /// let ids = tokenizer.encode(tokenizer.chatPrompt(user: "Name three colors."))
    /// ```
    public func chatPrompt(user: String, system: String? = nil) -> String {
        chatPrompt((system.map { [ChatMessage.system($0)] } ?? []) + [.user(user)])
    }
}
