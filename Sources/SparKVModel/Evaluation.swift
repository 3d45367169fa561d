import Foundation
import SparKV

/// The accuracy protocols of `sparkv eval`: what each KV-cache policy costs in accuracy, measured
/// against the dense cache on the same prompts.
///
/// Every protocol runs the prompt densely once (``LlamaModel/prefill(tokens:window:allLogits:)``)
/// and hands the same keys, values and window queries to each policy's cache, so the policies
/// differ only in what their caches keep.
///
/// ```swift
/// let eval = Evaluation(model: model, tokenizer: tokenizer)
/// let results = try eval.continuation(text: gpl3, prefix: 1024, scored: 256,
///                                     policies: [.dense, .spark(ratio: 0.8)])
/// ```
public struct Evaluation {
    /// The model.
    public let model: LlamaModel
    /// Its tokenizer.
    public let tokenizer: Tokenizer
    /// Called with a short progress message now and then.
    public var progress: (String) -> Void = { _ in }

    /// An evaluation of `model`.
    public init(model: LlamaModel, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    // MARK: - Continuation (teacher-forced) NLL, agreement with dense, KL

    /// Continuation metrics of one policy at one prefix length.
    public struct ContinuationResult: Codable, Sendable {
        /// Policy label (compact form).
        public var policy: String
        /// Prompt tokens given to the policy's cache.
        public var prefixTokens: Int
        /// Tokens scored after the prefix (appended densely as they are read).
        public var scoredTokens: Int
        /// Mean negative log-likelihood (nats/token) of the scored tokens.
        public var meanNLL: Double
        /// meanNLL minus the dense cache's.
        public var deltaNLL: Double
        /// Fraction of scored positions whose argmax equals the dense cache's.
        public var top1Agreement: Double
        /// Mean KL(dense ‖ policy) of the next-token distributions (nats).
        public var meanKL: Double
        /// Memory of the cache right after the prompt was loaded.
        public var memory: MemoryReport
        /// Memory after the last scored token was appended (decode-time compression shrinks it).
        public var endMemory: MemoryReport
    }

    /// Teacher-forced continuation: the first `prefix` tokens of `text` go through each policy's
    /// cache, then the next `scored` tokens are read one by one (appended, dense or compressed as
    /// they age under a `decode(R)` policy) and scored. A short prefix with many scored tokens is
    /// the long-generation protocol: it scores decode-time compression.
    /// `policies` should start with the dense policy (the reference); it is added if missing.
    public func continuation(text: String, prefix: Int, scored: Int,
                             policies: [CompressionPolicy]) throws -> [ContinuationResult] {
        let tokens = tokenizer.encode(text, addSpecial: true)
        guard tokens.count >= prefix + scored else {
            throw ModelError.tooManyTokens(tokens: prefix + scored, limit: tokens.count)
        }
        let all = policies.first == .dense ? policies : [.dense] + policies.filter { $0 != .dense }
        let window = all.map(\.window).max() ?? 32
        progress("continuation: dense prefill of \(prefix) tokens")
        let state = try model.prefill(tokens: Array(tokens[0..<prefix]), window: window)
        let targets = Array(tokens[prefix..<prefix + scored])
        var denseLogProbs: [[Float]] = []
        var results: [ContinuationResult] = []
        for (i, policy) in all.enumerated() {
            progress("continuation P=\(prefix): \(policy) (\(i + 1)/\(all.count))")
            let session = try LlamaSession(model: model, policy: policy, capacity: prefix + scored + 1)
            var logits = Array(try session.load(state))
            let memory = try session.cache.memoryReport()
            var nll = 0.0, agree = 0, kl = 0.0
            for (s, target) in targets.enumerated() {
                let lp = logSoftmax(logits)
                nll -= Double(lp[target])
                if i == 0 {
                    denseLogProbs.append(lp)
                    agree += 1
                } else {
                    let ref = denseLogProbs[s]
                    if argmax(lp) == argmax(ref) { agree += 1 }
                    kl += klDivergence(ref, lp)
                }
                if s + 1 < targets.count { logits = try session.step(token: target) }
            }
            let mean = nll / Double(scored)
            results.append(ContinuationResult(
                policy: policy.description, prefixTokens: prefix, scoredTokens: scored, meanNLL: mean,
                deltaNLL: i == 0 ? 0 : mean - results[0].meanNLL, top1Agreement: Double(agree) / Double(scored),
                meanKL: kl / Double(scored), memory: memory, endMemory: try session.cache.memoryReport()))
        }
        return results
    }

    // MARK: - Greedy agreement

    /// Greedy decoding after a compressed prompt, compared with the dense cache's.
    public struct GreedyResult: Codable, Sendable {
        /// Policy label.
        public var policy: String
        /// Tokens generated.
        public var generated: Int
        /// Leading tokens equal to the dense cache's (up to the first divergence).
        public var matchingPrefix: Int
        /// Positions equal to the dense cache's, overall.
        public var matchingOverall: Int
    }

    /// `count` greedy tokens after the first `prefix` tokens of `text`, for each policy.
    public func greedyAgreement(text: String, prefix: Int, count: Int,
                                policies: [CompressionPolicy]) throws -> [GreedyResult] {
        let tokens = tokenizer.encode(text, addSpecial: true)
        guard tokens.count >= prefix else { throw ModelError.tooManyTokens(tokens: prefix, limit: tokens.count) }
        let all = policies.first == .dense ? policies : [.dense] + policies.filter { $0 != .dense }
        let state = try model.prefill(tokens: Array(tokens[0..<prefix]), window: all.map(\.window).max() ?? 32)
        var dense: [Int] = []
        var results: [GreedyResult] = []
        for (i, policy) in all.enumerated() {
            progress("greedy: \(policy) (\(i + 1)/\(all.count))")
            let out = try greedy(state: state, policy: policy, count: count, stopAtEnd: false)
            if i == 0 { dense = out }
            let prefixMatch = zip(out, dense).prefix { $0 == $1 }.count
            let overall = zip(out, dense).filter { $0 == $1 }.count
            results.append(GreedyResult(policy: policy.description, generated: out.count,
                                        matchingPrefix: prefixMatch, matchingOverall: overall))
        }
        return results
    }

    /// Greedy tokens from a prefilled prompt under `policy`.
    public func greedy(state: PromptState, policy: CompressionPolicy, count: Int, stopAtEnd: Bool) throws -> [Int] {
        let session = try LlamaSession(model: model, policy: policy, capacity: state.tokens.count + count + 1)
        var logits = Array(try session.load(state))
        var out: [Int] = []
        while out.count < count {
            let next = LlamaSession.greedy(logits)
            out.append(next)
            if out.count == count || (stopAtEnd && tokenizer.isEndOfGeneration(next)) { break }
            logits = try session.step(token: next)
        }
        return out
    }

    // MARK: - Passkey retrieval

    /// Passkey accuracy of one policy at one length.
    public struct PasskeyResult: Codable, Sendable {
        /// Policy label.
        public var policy: String
        /// Target prompt length in tokens.
        public var length: Int
        /// Trials run.
        public var trials: Int
        /// Trials whose answer contained the key.
        public var correct: Int
        /// correct / trials.
        public var accuracy: Double { trials > 0 ? Double(correct) / Double(trials) : 0 }
    }

    /// A random 5-digit key stated once at a random depth of filler text of about `length` tokens,
    /// asked for at the end (chat template); `trials` seeded trials; the answer counts as correct
    /// when its first 5-digit number is the key.
    public func passkey(length: Int, trials: Int, seed: UInt64,
                        policies: [CompressionPolicy]) throws -> [PasskeyResult] {
        var rng = SplitMix64(seed: seed ^ UInt64(length))
        var correct = [Int](repeating: 0, count: policies.count)
        let window = policies.map(\.window).max() ?? 32
        for trial in 0..<trials {
            let key = 10000 + Int(rng.next() % 90000)
            let depth = rng.nextUniform()
            let prompt = passkeyPrompt(key: key, length: length, depth: depth)
            let tokens = tokenizer.encode(prompt, addSpecial: false)
            progress("passkey \(length): trial \(trial + 1)/\(trials), dense prefill of \(tokens.count) tokens")
            let state = try model.prefill(tokens: tokens, window: window)
            for (i, policy) in policies.enumerated() {
                let out = try greedy(state: state, policy: policy, count: 12, stopAtEnd: true)
                let answer = (try? tokenizer.decode(out, skipSpecial: true)) ?? ""
                if firstFiveDigitNumber(answer) == key { correct[i] += 1 }
            }
        }
        return policies.enumerated().map { i, p in
            PasskeyResult(policy: p.description, length: length, trials: trials, correct: correct[i])
        }
    }

    /// The passkey prompt: filler sentences around one statement of the key, then the question,
    /// in the chat template, with the assistant's answer started.
    public func passkeyPrompt(key: Int, length: Int, depth: Double) -> String {
        let filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
        let needle = "The pass key is \(key). Remember it. \(key) is the pass key. "
        let perFiller = max(1, tokenizer.encode(filler, addSpecial: false).count)
        let overhead = tokenizer.encode(needle, addSpecial: false).count + 60
        let repeats = max(1, (length - overhead) / perFiller)
        let at = min(repeats, max(0, Int(Double(repeats) * depth)))
        var body = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n"
        for i in 0...repeats {
            if i == at { body += needle }
            if i < repeats { body += filler }
        }
        body += "\nWhat is the pass key?"
        return tokenizer.chatPrompt(user: body) + "The pass key is"
    }
}

/// log softmax in double, returned as floats.
func logSoftmax(_ x: [Float]) -> [Float] {
    let m = x.max() ?? 0
    var s = 0.0
    for v in x { s += exp(Double(v - m)) }
    let lse = Double(m) + log(s)
    return x.map { Float(Double($0) - lse) }
}

func argmax(_ x: [Float]) -> Int { x.withUnsafeBufferPointer { argmaxIndex($0) } }

/// KL(p ‖ q) from log-probabilities.
func klDivergence(_ logP: [Float], _ logQ: [Float]) -> Double {
    var kl = 0.0
    for i in logP.indices {
        let lp = Double(logP[i])
        kl += exp(lp) * (lp - Double(logQ[i]))
    }
    return max(kl, 0)
}

func firstFiveDigitNumber(_ s: String) -> Int? {
    var digits = ""
    for ch in s + " " {
        if ch.isASCII, ch.isNumber { digits.append(ch); continue }
        if digits.count == 5 { return Int(digits) }
        digits = ""
    }
    return nil
}
