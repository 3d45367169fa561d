import Foundation
import Testing

@testable import SparKVModel

/// `sparkv generate --save-prefix / --load-prefix` on the real model: a saved prompt cache is
/// resumed deterministically, and bad files or option combinations are clear errors.
@Suite("sparkv generate: saved prompt caches", .serialized)
struct GeneratePrefixTests {
    private static func temporary(_ name: String) -> String {
        NSTemporaryDirectory() + "sparkv-prefix-\(UUID().uuidString)-\(name)"
    }

    @Test func loadPrefixResumesTheSavedPromptDeterministically() throws {
        _ = try SmolLM2Fixture.requirePath()
        let path = Self.temporary("cache.svc")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let saved = try SparKVExecutable.run(["generate", "--prompt", "The capital of France is Paris. The capital of Italy is",
                                             "--policy", "spark:0.5", "--max-tokens", "4", "--save-prefix", path], timeout: 120)
        #expect(saved.status == 0, "stderr: \(saved.stderr)")
        #expect(saved.stderr.contains("saved the prompt cache to \(path)"), "stderr: \(saved.stderr)")
        var outputs: [String] = []
        for _ in 0..<2 {
            let r = try SparKVExecutable.run(["generate", "--prompt", " Rome. The capital of Spain is", "--max-tokens", "4",
                                              "--load-prefix", path], timeout: 120)
            #expect(r.status == 0, "stderr: \(r.stderr)")
            #expect(r.stderr.contains("-token prompt cache from \(path)"),
                    "stderr: \(r.stderr)")
            #expect(r.stderr.contains("policy spark"), "the saved policy applies; stderr: \(r.stderr)")
            outputs.append(r.stdout)
        }
        #expect(outputs[0] == outputs[1] && !outputs[0].isEmpty)
    }

    @Test func loadPrefixRejectsCorruptFilesAndBadCombinations() throws {
        _ = try SmolLM2Fixture.requirePath()
        let path = Self.temporary("corrupt.svc")
        try Data("SPARKVKC not really a cache".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try SparKVExecutable.run(["generate", "--prompt", "hi", "--load-prefix", path], timeout: 60)
        #expect(r.status != 0 && r.stderr.contains("malformed"), "exit \(r.status), stderr: \(r.stderr)")
        let both = try SparKVExecutable.run(["generate", "--prompt", "hi", "--load-prefix", path, "--save-prefix", path])
        #expect(both.status == 64 && both.stderr.contains("not both"), "stderr: \(both.stderr)")
        let chat = try SparKVExecutable.run(["generate", "--chat", "--prompt", "hi", "--save-prefix", path])
        #expect(chat.status == 64 && chat.stderr.contains("not with --chat"), "stderr: \(chat.stderr)")
    }
}
