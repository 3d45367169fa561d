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
    }

    /// Runs `sparkv arguments` with `environment` added, killing it after `timeout` seconds.
    static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 60,
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        let path = try #require(Self.path, "the sparkv executable is not built next to the tests (swift build)",
                                sourceLocation: sourceLocation)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errPipe = Pipe()
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = process.isRunning
        if timedOut { process.terminate(); process.waitUntilExit() }
        let err = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Outcome(status: process.terminationStatus, stderr: err, timedOut: timedOut)
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
