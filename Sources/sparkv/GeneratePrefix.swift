import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// `sparkv generate --save-prefix / --load-prefix`: a long prompt (a system prompt, a document) is
/// prefilled and compressed once, saved, and later runs start from the saved cache instead.
extension GenerateCommand {
    func validatePrefixOptions() throws {
        guard savePrefix == nil || loadPrefix == nil else {
            throw ValidationError("give --save-prefix or --load-prefix, not both")
        }
        guard !(chat && (savePrefix != nil || loadPrefix != nil)) else {
            throw ValidationError("--save-prefix / --load-prefix: not with --chat (the saved cache is a plain prompt)")
        }
    }

    func saveCache(_ cache: KVCache, to path: String) throws {
        let clock = ContinuousClock()
        let t0 = clock.now
        try cache.save(to: path)
        let bytes = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        printError("saved the prompt cache to \(path) (\(bytes) bytes) in \(String(format: "%.1f", 1000 * seconds(clock.now - t0))) ms")
    }

    /// A session on the saved cache at `path`, after the continuation `tokens` ran through it
    /// (their logits: the next token's). The cache's capacity is the model's whole position range
    /// (memory is allocated as tokens arrive, not by capacity).
    func resumePrefix(_ path: String, llama: LlamaModel, tokens: [Int]) throws -> (LlamaSession, [Float]) {
        guard !tokens.isEmpty else {
            throw ValidationError("--load-prefix: the prompt (the text after the saved prefix) encodes to no tokens; "
                                  + "at least one is needed to predict the next")
        }
        let clock = ContinuousClock()
        let t0 = clock.now
        let config = llama.config
        let cache = try KVCache(contentsOf: path, expectedShape: config.cacheShape(capacity: config.maxPositions + 1))
        let loaded = clock.now - t0
        // the next position: every token the layers have seen, evicted ones included (the memory
        // report's dense_bytes counts them: tokens * kvHeads * headDim * 2 * 2)
        let report = try cache.memoryReport(layer: 0)
        let position = report.denseBytes / (config.kvHeads * config.headDim * 4)
        guard position > 0 else { throw ValidationError("--load-prefix \(path): the saved cache holds no prompt") }
        try ModelArguments.checkLength(promptTokens: position + tokens.count, maxTokens: maxTokens, config: config)
        let session = try LlamaSession(model: llama, cache: cache, position: position)
        var logits: [Float] = []
        for token in tokens { logits = try session.step(token: token) }
        printError("loaded a \(position)-token prompt cache from \(path) in \(String(format: "%.1f", 1000 * seconds(loaded))) ms, "
                   + "then ran \(tokens.count) prompt tokens after it")
        return (session, logits)
    }
}
