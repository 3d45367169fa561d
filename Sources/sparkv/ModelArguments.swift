import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// Checks of the arguments the model commands share, so that each out-of-range value is a usage
/// error with a message, never a trap or an unbounded allocation.
enum ModelArguments {
    /// Largest text file read as a prompt or a source text: far more than any context holds, small
    /// enough to read in a moment.
    static let maxTextBytes = 64 << 20

    /// `--threads` must be in `1...ModelLimits.maxThreads` (omitted: OpenMP's default).
    static func validateThreads(_ threads: Int?, flag: String = "--threads") throws {
        guard let threads else { return }
        guard (1...ModelLimits.maxThreads).contains(threads) else {
            throw ValidationError("\(flag) \(threads) is out of range (1...\(ModelLimits.maxThreads))")
        }
    }

    /// The contents of a regular text file of at most ``maxTextBytes`` as UTF-8. A FIFO, device or
    /// directory is refused before it is opened: reading one could block forever or never end.
    static func readText(_ path: String, flag: String) throws -> String {
        var info = stat()   // follows symbolic links, as reading the file does
        guard stat(path, &info) == 0 else {
            throw ValidationError("\(flag) \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw ValidationError("\(flag) \(path): not a regular file")
        }
        guard info.st_size <= maxTextBytes else {
            throw ValidationError("\(flag) \(path): \(info.st_size) bytes, more than the \(maxTextBytes >> 20) MiB read as text")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("\(flag) \(path): cannot be read as UTF-8")
        }
        return text
    }

    /// A compact policy, or a usage error naming `flag` and the value. The library's sentence for a
    /// policy error ("a value out of range or an invalid combination") and its pointer to the Swift
    /// grammar constant are dropped: a CLI user gets the reason and `sparkv policy --help`.
    /// With `headDim`, the policy is also checked against the model's head dimension.
    static func parsePolicy(_ text: String, flag: String = "--policy", headDim: Int? = nil) throws -> CompressionPolicy {
        do {
            let policy = try CompressionPolicy(parsing: text)
            if let headDim { try policy.validate(headDim: headDim) }
            return policy
        } catch let error as SparKVError {
            throw ValidationError("\(flag) \(text): \(policyReason(error.detail)); see 'sparkv policy --help' for the grammar")
        }
    }

    /// Checks that `text` parses (the values are checked against the model later).
    static func validatePolicy(_ text: String, flag: String = "--policy") throws {
        _ = try parsePolicy(text, flag: flag)
    }

    /// The reason of a policy error without the parser's `cannot read policy "…": ` and its grammar pointer.
    static func policyReason(_ detail: String) -> String {
        var reason = Substring(detail)
        if reason.hasPrefix("cannot read policy "), let colon = reason.firstRange(of: "\": ") {
            reason = reason[colon.upperBound...]
        }
        for tail in [" (grammar: see CompressionPolicy.compactGrammar or `sparkv policy --help`)",
                     " (the grammar: `sparkv policy --help`)"] where reason.hasSuffix(tail) {
            reason = reason.dropLast(tail.count)
        }
        return String(reason)
    }

    /// `policy` for a prompt of `promptTokens` tokens: an eviction budget (SnapKV, PyramidKV) that
    /// is not below the prompt tokens before the window would keep every token anyway, and the
    /// library refuses it; the eviction is dropped instead, with a note on stderr, so that a short
    /// prompt (a chat's first turn, `--prompt hi`) works under any policy.
    static func fitEviction(_ policy: CompressionPolicy, promptTokens: Int, flag: String = "--policy") -> CompressionPolicy {
        let budget: Int
        switch policy.eviction {
        case .snapKV(let b, _): budget = b
        case .pyramidKV(let b, _, _): budget = b
        default: return policy
        }
        let beforeWindow = promptTokens - min(policy.window, promptTokens)
        guard budget > beforeWindow else { return policy }
        var fitted = policy
        fitted.eviction = nil
        printError("note: \(flag) \(policy): the prompt's \(promptTokens) tokens fit the eviction budget of \(budget) "
                   + "and the \(policy.window)-token window; nothing is evicted (\(fitted) is used)")
        return fitted
    }

    /// The prompt text of `--prompt-file`: the file's contents, or all of standard input for `-`
    /// (at most ``maxTextBytes``).
    static func readPrompt(_ path: String, flag: String) throws -> String {
        guard path == "-" else { return try readText(path, flag: flag) }
        var data = Data()
        while true {
            // Chunks, so that an endless stdin stops at the limit instead of filling memory.
            let chunk = FileHandle.standardInput.readData(ofLength: 1 << 16)
            if chunk.isEmpty { break }
            data.append(chunk)
            guard data.count <= maxTextBytes else {
                throw ValidationError("\(flag) -: standard input holds more than the \(maxTextBytes >> 20) MiB read as text")
            }
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("\(flag) -: standard input cannot be read as UTF-8")
        }
        return text
    }

    /// The help of every model command's `--model`.
    static let modelHelp = ArgumentHelp(
        "A model name (\(KnownModel.names); fetch with scripts/fetch-model.sh NAME) or a GGUF file's path "
            + "(default: $SPARKV_MODEL, else \(KnownModel.defaultModel.rawValue) in models/).",
        valueName: "name|path")

    /// The path of `--model`: a ``KnownModel`` name resolves to its file in `models/` (a file of
    /// that very name is reached as `./NAME`); anything else is a path, used as is. Nil:
    /// ``ModelFiles/locate(_:environmentValue:fetchName:)``, the default model.
    static func modelPath(_ model: String?) throws -> String {
        guard let model else { return try ModelFiles.locate() }
        if let known = KnownModel(rawValue: model) {
            do { return try known.locate() } catch let error as GGUFError { throw ValidationError("--model \(model): \(error)") }
        }
        return model
    }

    /// The model of `--model` (see ``modelPath(_:)``), or the one
    /// ``ModelFiles/locate(_:environmentValue:fetchName:)`` finds. A `--model` that is missing or
    /// not a regular file is a usage error; `SPARKV_MODEL` naming nothing is reported as such (a
    /// ``ModelError``).
    static func openModel(_ model: String?) throws -> LlamaModel {
        guard model != nil else { return try LlamaModel(path: try ModelFiles.locate()) }
        let path = try modelPath(model)
        do {
            return try LlamaModel(path: path)
        } catch let error as GGUFError {
            switch error {
            case .fileNotFound, .unreadable: throw ValidationError("--model: \(error)")
            default: throw error
            }
        }
    }

    /// The prompt must fit the model's context, and `maxTokens` more tokens the positions a
    /// session decodes to (``LlamaConfig/maxPositions``).
    static func checkLength(promptTokens: Int, maxTokens: Int, config: LlamaConfig, flag: String = "--max-tokens") throws {
        guard promptTokens <= config.contextLength else {
            throw ValidationError(ModelError.promptTooLong(tokens: promptTokens, contextLength: config.contextLength).description)
        }
        // Subtraction: prompt + maxTokens could overflow for a huge --max-tokens.
        let room = config.maxPositions - promptTokens
        guard maxTokens <= room else {
            throw ValidationError("\(flag) \(maxTokens): after the \(promptTokens)-token prompt at most \(room) tokens "
                                  + "can be decoded (4 x the model's context of \(config.contextLength))")
        }
    }
}

extension ParsableCommand {
    /// Runs `body`; a ``ValidationError`` it throws (an argument found out of range once the model
    /// is known) is printed with this subcommand's usage, as ArgumentParser does for errors of
    /// `validate()` (for errors thrown from `run()` it would print the root command's usage).
    func runReportingUsage(_ body: () throws -> Void) throws {
        do { try body() } catch let error as ValidationError {
            let name = Self.configuration.commandName ?? "\(Self.self)"
            printError("Error: \(error.message)\nUsage: " + SparKVCommand.usageString(for: Self.self)
                       + "\n  See 'sparkv \(name) --help' for more information.")
            throw ExitCode.validationFailure
        }
    }
}
