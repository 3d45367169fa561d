import Foundation
import Testing

@testable import SparKVModel

/// The `sparkv` executable built next to this test bundle (`swift build --build-tests` and
/// `swift test` build it), run with arguments; nil with an issue recorded when it is missing.
enum SparKVExecutable {
    static var path: String? {
        // The test runner is .build/<config>/<Package>PackageTests.xctest (a file or a bundle).
        let runner = URL(fileURLWithPath: CommandLine.arguments.first ?? "")
        var dir = runner.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("sparkv").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }

    struct Outcome {
        var status: Int32
        var stderr: String
        var timedOut: Bool
        var stdout: String = ""
    }

    /// Runs `sparkv arguments` with `environment` added and `stdin` as its standard input (none:
    /// an empty one), killing it after `timeout` seconds.
    static func run(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil,
                    timeout: Double = 60, sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        let path = try #require(Self.path, "the sparkv executable is not built next to the tests (swift build)",
                                sourceLocation: sourceLocation)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errPipe = Pipe()
        process.standardError = errPipe
        // stdout to a file: a pipe nobody reads while the process runs could fill and block it.
        let outPath = NSTemporaryDirectory() + "sparkv-cli-out-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let outFile = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardOutput = outFile
        let inPipe = Pipe()
        process.standardInput = inPipe
        try process.run()
        try outFile.close()
        inPipe.fileHandleForWriting.write(Data((stdin ?? "").utf8))
        try inPipe.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = process.isRunning
        if timedOut { process.terminate(); process.waitUntilExit() }
        let err = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        return Outcome(status: process.terminationStatus, stderr: err, timedOut: timedOut, stdout: out)
    }
}

/// Each argument that used to trap, hang or allocate without bound is a usage error (exit 64,
/// the message and the subcommand's usage) or, for the environment, an error naming it.
@Suite("sparkv CLI: arguments out of range", .serialized)
struct CLIArgumentTests {
    func expectUsageError(_ arguments: [String], _ message: String, usage: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try SparKVExecutable.run(arguments, timeout: 30, sourceLocation: sourceLocation)
        #expect(!r.timedOut, "sparkv \(arguments) did not finish", sourceLocation: sourceLocation)
        #expect(r.status == 64, "sparkv \(arguments): exit \(r.status), stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(message), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains("Usage: sparkv \(usage)"), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
    }

    /// The defects: `--max-tokens 9223372036854775807` trapped on `tokens.count + maxTokens + 1`;
    /// `--threads 3000000000` trapped in `Int32(...)`.
    @Test func generateRejectsHugeMaxTokensAndThreads() throws {
        _ = try SmolLM2Fixture.requirePath()
        try expectUsageError(["generate", "--prompt", "hi", "--max-tokens", "9223372036854775807"],
                             "--max-tokens 9223372036854775807: after the 1-token prompt at most 32767 tokens",
                             usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--threads", "3000000000"],
                             "--threads 3000000000 is out of range (1...1024)", usage: "generate")
        try expectUsageError(["model-demo", "--threads", "0"], "--threads 0 is out of range", usage: "model-demo")
        try expectUsageError(["eval", "--threads", "4096"], "--threads 4096 is out of range", usage: "eval")
    }

    /// The defect: a prompt longer than the model's context ran without a word.
    @Test func generateRejectsAPromptLongerThanTheContext() throws {
        _ = try SmolLM2Fixture.requirePath()
        let path = NSTemporaryDirectory() + "sparkv-long-prompt-\(UUID().uuidString).txt"
        try String(repeating: "1 ", count: 10_000).write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try expectUsageError(["generate", "--prompt-file", path, "--max-tokens", "1"],
                             "more than the model's context of 8192 tokens", usage: "generate")
    }

    /// The defect: `demo --prompt-tokens 99999999999` aborted on a 409 TB allocation.
    @Test func demoRejectsSizesBeyondMemory() throws {
        try expectUsageError(["demo", "--prompt-tokens", "99999999999"], "--prompt-tokens must be in 1...", usage: "demo")
        try expectUsageError(["demo", "--prompt-tokens", "900000000"], "GiB of memory", usage: "demo")
        try expectUsageError(["demo", "--layers", "100000"], "--layers must be in 1...", usage: "demo")
        try expectUsageError(["demo", "--threads", "5000"], "--threads 5000 is out of range", usage: "demo")
    }

    @Test func planRejectsBadBudgetsAndSizes() throws {
        try expectUsageError(["plan", "--memory", "0"], "--memory", usage: "plan")
        try expectUsageError(["plan", "--memory", "16GiB", "--batch", "0"], "--batch must be at least 1", usage: "plan")
        try expectUsageError(["plan", "--memory", "16GiB", "--capacity", "9999999999999"], "--capacity must be in",
                             usage: "plan")
    }

    /// The planner's table: dense f16 for Llama-3-8B is 32 layers x 8 heads x 128 x 2 x 2 bytes =
    /// 131072 per token plus page metadata; 16 GiB holds 130816 tokens of it (256-token pages).
    @Test func planPrintsEachPolicyBesideLlamaCpp() throws {
        let r = try SparKVExecutable.run(["plan", "--shape", "llama3-8b", "--memory", "16GiB"], timeout: 60)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let dense = r.stdout.split(separator: "\n").first { $0.hasPrefix("dense ") }.map(String.init) ?? ""
        #expect(dense.hasSuffix(" 130816"), "\(r.stdout)")
        #expect(r.stdout.contains("llama.cpp q8_0") && r.stdout.contains("spark:0.8"))
    }

    /// Batch mode: at the memory of one dense sequence, int8 SparK fits more than one.
    @Test func benchBatchRunsMoreCompressedSequencesInTheSameMemory() throws {
        let r = try SparKVExecutable.run(["bench", "decode", "--batch", "1", "--contexts", "512", "--layers", "1",
                                          "--threads", "1", "--quick", "--probe-mib", "16"], timeout: 120)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let row = r.stdout.split(separator: "\n").first { $0.contains("kprec(i8)+vprec(i8)") }.map(String.init) ?? ""
        let sequences = row.split(separator: " ", omittingEmptySubsequences: true).dropFirst(5).first.flatMap { Int($0) } // "1.0 MiB" is two words
        #expect((sequences ?? 0) >= 2, "\(r.stdout)")
    }

    /// Long-generation mode: decode-time compression holds fewer bytes than prefill-only SparK.
    @Test func benchGenerateShowsDecodeCompressionSavingBytes() throws {
        let r = try SparKVExecutable.run(["bench", "decode", "--generate", "600", "--contexts", "256", "--layers", "1",
                                          "--threads", "1", "--quick", "--probe-mib", "16"], timeout: 120)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        func ratio(_ prefix: String) -> Double? {
            r.stdout.split(separator: "\n").first { $0.hasPrefix(prefix) }
                .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first }
                .flatMap { Double($0) }
        }
        let prefillOnly = ratio("spark-0.8-mean "), aged = ratio("spark(0.8,mean,signed)+decode(32) ")
        #expect(prefillOnly != nil && aged != nil && aged! < prefillOnly!, "\(r.stdout)")
        try expectUsageError(["bench", "decode", "--batch", "1", "--generate", "5"], "separate modes", usage: "bench decode")
    }

    /// `9999999999999999k` overflowed in `* 1024`; bench threads are bounded like the others.
    @Test func benchRejectsOverflowingContextsAndThreads() throws {
        try expectUsageError(["bench", "decode", "--contexts", "9999999999999999k"],
                             "--contexts: '9999999999999999k' is not valid", usage: "bench decode")
        try expectUsageError(["bench", "prefill", "--threads", "1,5000"], "--threads: '5000' is not valid",
                             usage: "bench prefill")
    }

    /// The defect: `--model` on a FIFO blocked forever.
    @Test func aFIFOAsModelOrPromptIsRefusedAtOnce() throws {
        let fifo = NSTemporaryDirectory() + "sparkv-cli-fifo-\(UUID().uuidString)"
        guard mkfifo(fifo, 0o600) == 0 else { Issue.record("mkfifo failed"); return }
        defer { unlink(fifo) }
        try expectUsageError(["generate", "--prompt", "hi", "--model", fifo], "not a regular file (a FIFO)", usage: "generate")
        try expectUsageError(["generate", "--prompt-file", fifo], "not a regular file", usage: "generate")
    }

    /// The defect: `SPARKV_MODEL=/nonexistent` was silently passed over for models/.
    @Test func anEnvironmentModelThatIsNotThereIsReported() throws {
        let r = try SparKVExecutable.run(["generate", "--prompt", "hi"], environment: ["SPARKV_MODEL": "/nonexistent"],
                                         timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1, "exit \(r.status)")
        #expect(r.stderr.contains("SPARKV_MODEL=/nonexistent names no model file"), "stderr: \(r.stderr)")
    }
}

/// Usage errors name the subcommand and the flag, print the subcommand's usage and exit 64.
@Suite("sparkv CLI: usage errors", .serialized)
struct CLIUsageErrorTests {
    func expectUsageError(_ arguments: [String], _ message: String, usage: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        try CLIArgumentTests().expectUsageError(arguments, message, usage: usage, sourceLocation: sourceLocation)
    }

    /// The issue's cases, which used to print the top-level usage or exit 1.
    @Test func theIssuesCases() throws {
        try expectUsageError(["generate", "--max-tokens=-5", "--prompt", "hi"], "--max-tokens -5: must be >= 0", usage: "generate")
        try expectUsageError(["generate"], "missing prompt: give --prompt", usage: "generate")
        try expectUsageError(["eval", "--prefixes", "abc"], "--prefixes: 'abc' is not a positive integer", usage: "eval")
        try expectUsageError(["generate", "--prompt", "hi", "--threads", "0"], "--threads 0 is out of range (1...1024)",
                             usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--temperature=-1"], "--temperature -1.0: must be", usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--top-p", "0"], "--top-p 0.0: must be in (0, 1]", usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--top-k=-3"], "--top-k -3: must be >= 0", usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--system", "x"], "--system: the system prompt belongs to the chat template",
                             usage: "generate")
        try expectUsageError(["generate", "--prompt", "hi", "--prompt-file", "x"], "give --prompt or --prompt-file, not both",
                             usage: "generate")
    }

    /// `--policy foo` exited 1 saying "a value out of range or an invalid combination: cannot read
    /// policy" and pointed at `CompressionPolicy.compactGrammar`.
    @Test func aBadPolicyNamesTheFlagAndTheCLIGrammar() throws {
        for (value, reason) in [("foo", "unknown term \"foo\""), ("spark(0.5,foo)", "\"foo\" is not a ratio")] {
            let r = try SparKVExecutable.run(["generate", "--prompt", "hi", "--policy", value], timeout: 30)
            #expect(r.status == 64, "exit \(r.status): \(r.stderr)")
            #expect(r.stderr.contains("Error: --policy \(value): "), "stderr: \(r.stderr)")
            #expect(r.stderr.contains(reason), "stderr: \(r.stderr)")
            #expect(r.stderr.contains("sparkv policy --help"))
            #expect(!r.stderr.contains("CompressionPolicy"), "a Swift API name: \(r.stderr)")
            #expect(!r.stderr.contains("out of range or an invalid combination"), "stderr: \(r.stderr)")
            #expect(r.stderr.contains("Usage: sparkv generate"))
        }
    }

    /// Errors found once the model is open are usage errors of the subcommand too.
    @Test func errorsFoundWithTheModel() throws {
        _ = try SmolLM2Fixture.requirePath()
        try expectUsageError(["model-demo", "--text", "/nonexistent"], "--text /nonexistent: No such file or directory",
                             usage: "model-demo")
        try expectUsageError(["generate", "--prompt", "hi", "--policy", "spark(1.5)"],
                             "--policy spark(1.5): key_prune_ratio 1.5 is outside [0, 1)", usage: "generate")
    }
}

/// `generate`: streaming, sampling, stop strings, system prompt, stdin and the interactive chat.
@Suite("sparkv CLI: generate", .serialized)
struct CLIGenerateTests {
    /// The completion on stdout (the statistics go to stderr).
    func generate(_ arguments: [String], stdin: String? = nil,
                  sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        _ = try SmolLM2Fixture.requirePath(sourceLocation: sourceLocation)
        let r = try SparKVExecutable.run(["generate"] + arguments, stdin: stdin, timeout: 120, sourceLocation: sourceLocation)
        #expect(!r.timedOut && r.status == 0, "exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        return r.stdout
    }

    @Test func greedyByDefaultAndTheSameSeedGivesTheSameText() throws {
        let counting = ["--prompt", "Once upon a time", "--max-tokens", "24"]
        let greedy = try generate(counting)
        #expect(try generate(counting + ["--temperature", "0", "--seed", "9"]) == greedy)
        let sampled = counting + ["--temperature", "1.0", "--top-k", "40", "--top-p", "0.95"]
        let a = try generate(sampled + ["--seed", "7"])
        #expect(try generate(sampled + ["--seed", "7"]) == a)
        let others = try [1, 2, 3].map { try generate(sampled + ["--seed", "\($0)"]) }
        #expect(others.contains { $0 != a }, "three other seeds all gave \(a)")
        #expect(!greedy.contains("policy dense:"), "statistics belong on stderr")
    }

    /// The stop string ends the generation and is not printed, nor anything after it.
    @Test func aStopStringEndsTheCompletion() throws {
        let counting = ["--prompt", "1, 2, 3, 4,", "--max-tokens", "40"]
        let full = try generate(counting)
        #expect(full.hasPrefix(" 5, 6, 7, 8, 9,"), "the model no longer counts: \(full)")
        let stopped = try generate(counting + ["--stop", " 9", "--stop", "never seen"])
        #expect(stopped == " 5, 6, 7, 8,\n")
        let json = try generate(counting + ["--stop", "7", "--json"])
        #expect(json.contains("\"completion\" : \" 5, 6, \""), "json: \(json)")
        #expect(json.contains("\"stopped\" : true"))
    }

    /// Streaming holds back the bytes of a character split over tokens: the streamed text is the
    /// whole completion, with no U+FFFD (the token limit here cuts a Japanese character short).
    @Test func multiByteCharactersSurviveStreaming() throws {
        let arguments = ["--chat", "--prompt", "Write the word 'hello' in Japanese, Chinese, Greek and Russian.",
                         "--max-tokens", "40"]
        let streamed = try generate(arguments)
        let json = try generate(arguments + ["--json"])
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let completion = try #require(summary["completion"] as? String)
        #expect(completion.unicodeScalars.contains { $0.value > 0x3000 }, "no CJK text to test with: \(completion)")
        #expect(streamed == completion + "\n")
        #expect(!streamed.contains("\u{FFFD}"), "streamed: \(streamed)")
    }

    /// `--prompt-file -` reads stdin; `--system` changes the chat's system message.
    @Test func promptFromStdinAndASystemPrompt() throws {
        let question = "What is the capital of France?"
        let fromArgument = try generate(["--chat", "--prompt", question, "--max-tokens", "16"])
        #expect(try generate(["--chat", "--prompt-file", "-", "--max-tokens", "16"], stdin: question) == fromArgument)
        let french = try generate(["--chat", "--system", "Always answer in French.", "--prompt", question, "--max-tokens", "16"])
        #expect(french != fromArgument)
    }

    /// `--chat` without a prompt answers each stdin line on one cache, until end of input.
    @Test func interactiveChatKeepsTheConversation() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["generate", "--chat", "--max-tokens", "24", "--policy", "spark:0.5"],
                                         stdin: "My name is Ada.\n\nWhat is my name?\n", timeout: 120)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        let answers = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(answers.count >= 3, "stdout: \(r.stdout)")   // two answers, each ending with a newline
        // One cache holds both turns: the first prompt (~35 tokens with the system message), its
        // answer, and the second turn (the empty line between is skipped).
        let held = r.stderr.firstMatch(of: /conversation: (\d+) tokens/).flatMap { Int($0.1) }
        #expect((held ?? 0) > 60, "stderr: \(r.stderr)")
    }

    /// An eviction budget larger than a short prompt keeps every token: the policy runs without
    /// its eviction (with a note) instead of failing.
    @Test func aShortPromptUnderAnEvictionPolicy() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["generate", "--prompt", "Hi there", "--policy", "snapkv:512+spark:0.8",
                                          "--max-tokens", "4"], timeout: 60)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("note: --policy snapkv(512)+spark(0.8,mean,signed): the prompt's 2 tokens fit the eviction budget of 512"),
                "stderr: \(r.stderr)")
        #expect(r.stderr.contains("policy spark(0.8,mean,signed): prompt 2 tokens"))
    }

    /// Tokens reach stdout while the model is still decoding, not all at the end.
    @Test func tokensAreStreamed() throws {
        _ = try SmolLM2Fixture.requirePath()
        let path = try #require(SparKVExecutable.path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        // Counting keeps the model going for all 3000 tokens (several seconds).
        process.arguments = ["generate", "--prompt", "1, 2, 3, 4,", "--max-tokens", "3000"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let first = out.fileHandleForReading.availableData   // blocks until the first write
        let runningAtFirstText = process.isRunning
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(!first.isEmpty)
        #expect(runningAtFirstText, "the first text arrived only when the process ended")
        #expect(String(decoding: first, as: UTF8.self).count < 100, "first chunk: \(first.count) bytes")
    }
}

/// Progress on stderr for the long commands, and `model-demo`'s explanation of its table.
@Suite("sparkv CLI: progress and model-demo", .serialized)
struct CLIProgressTests {
    /// Not a terminal: plain lines with done/total, elapsed and an estimate; stdout is untouched.
    @Test func modelDemoReportsProgressAndExplainsItsTable() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["model-demo", "--context-tokens", "300", "--max-tokens", "8",
                                          "--policies", "dense", "snapkv(64)", "snapkv(64)+spark(0.8)"],
                                         environment: ["SPARKV_PROGRESS_INTERVAL": "0"], timeout: 120)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("model-demo: 0/4 dense prefill of "), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("model-demo: 2/4 snapkv(64): "), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(" elapsed, ~"), "no estimate: \(r.stderr)")
        #expect(r.stderr.contains("model-demo: done in "))
        #expect(!r.stderr.contains("\r"), "a carriage return in a log: \(r.stderr)")
        #expect(!r.stdout.contains("model-demo: "), "progress on stdout")
        for column in ["agree (prefix)", "agree (all)", "KL", "top-1"] {
            #expect(r.stdout.contains(column), "stdout: \(r.stdout)")
        }
        #expect(r.stdout.contains("How to read this (each row against the first, dense):"))
        #expect(r.stdout.contains("Why eviction loses information: SnapKV"))
    }

    /// A long generate prompt reports its dense prefill layer by layer (done/total and an estimate).
    @Test func generateReportsItsPrefillByLayer() throws {
        _ = try SmolLM2Fixture.requirePath()
        let prompt = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 260)
        let r = try SparKVExecutable.run(["generate", "--prompt", prompt, "--max-tokens", "2"],
                                         environment: ["SPARKV_PROGRESS_INTERVAL": "0"], timeout: 120)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("generate: 15/30 dense prefill of "), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(" elapsed, ~"), "no estimate: \(r.stderr)")
        #expect(!r.stdout.contains("generate: "), "progress on stdout")
    }

    /// On a terminal (a pseudo-terminal from script(1)): one line rewritten with `\r`, cleared at the end.
    @Test func aTerminalGetsOneRewrittenLine() throws {
        _ = try SmolLM2Fixture.requirePath()
        let sparkv = try #require(SparKVExecutable.path)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }   // util-linux missing
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        // stdout to /dev/null: what script(1) passes on is then stderr alone
        process.arguments = ["-qec", "'\(sparkv)' model-demo --context-tokens 200 --max-tokens 4 --policies dense spark:0.5 >/dev/null",
                             "/dev/null"]
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let tty = String(decoding: data, as: UTF8.self)
        #expect(process.terminationStatus == 0, "script: \(tty)")
        #expect(tty.contains("\r\u{1B}[Kmodel-demo: 0/3 dense prefill"), "terminal: \(tty.debugDescription)")
        #expect(tty.contains("\r\u{1B}[Kmodel-demo: 2/3 spark(0.5"))
        #expect(tty.hasSuffix("\r\u{1B}[K"), "the line is not cleared: \(tty.debugDescription)")
        #expect(!tty.contains("\n"), "plain lines on a terminal: \(tty.debugDescription)")
    }

    /// With the default interval (5 s) a short run logs its first line only, then nothing more.
    @Test func plainLinesAreRateLimited() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["model-demo", "--context-tokens", "100", "--max-tokens", "2",
                                          "--policies", "dense", "spark(0.5)", "spark(0.8)"], timeout: 120)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("model-demo: ") }
        #expect(lines.first?.hasPrefix("model-demo: 0/4 ") == true, "stderr: \(r.stderr)")
        #expect(lines.count <= 3, "stderr: \(r.stderr)")
    }

    @Test func evalReportsProgress() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["eval", "--policies", "dense", "spark(0.5)", "--prefixes", "64", "--scored", "4",
                                          "--greedy-tokens", "2", "--passkey-lengths", "200", "--trials", "1"],
                                         environment: ["SPARKV_PROGRESS_INTERVAL": "0"], timeout: 300)
        #expect(r.status == 0, "exit \(r.status): \(r.stderr)")
        // 1 prefill + 2 policies (continuation), 2 (greedy), 1 passkey trial
        #expect(r.stderr.contains("eval: 0/6 continuation: dense prefill of 64 tokens"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("eval: 5/6 passkey 200: trial 1/1"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("eval: done in "))
    }

    @Test func evalRejectsABadPolicyAsAUsageError() throws {
        _ = try SmolLM2Fixture.requirePath()
        let r = try SparKVExecutable.run(["eval", "--policies", "dense", "bogus"], timeout: 60)
        #expect(r.status == 64, "exit \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("Error: --policies bogus: unknown term \"bogus\""), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("Usage: sparkv eval"))
    }
}
