import Foundation
import Testing

@testable import SparKVModel

/// The fetched models other than SmolLM2, opened once for all suites.
///
/// The tests that need one FAIL, never skip, when it is missing (scripts/test.sh fetches them).
enum KnownModelFixture {
    static let qwen: Result<GGUFFile, any Error> = open(.qwen25Coder1_5B)
    static let gemma: Result<GGUFFile, any Error> = open(.gemma3_270M)

    static func open(_ model: KnownModel) -> Result<GGUFFile, any Error> {
        Result { try GGUFFile(path: try model.locate()) }
    }

    /// The opened model file; fails the calling test (with the fetch command in the message) when
    /// it is missing or does not open.
    static func requireFile(_ model: KnownModel, sourceLocation: SourceLocation = #_sourceLocation) throws -> GGUFFile {
        let opened: Result<GGUFFile, any Error>
        switch model {
        case .qwen25Coder1_5B: opened = qwen
        case .gemma3_270M: opened = gemma
        case .smolLM2_135M: return try SmolLM2Fixture.requireFile(sourceLocation: sourceLocation)
        }
        do { return try opened.get() } catch {
            Issue.record("\(model.rawValue): \(error) (run scripts/fetch-model.sh \(model.rawValue); scripts/test.sh does)",
                         sourceLocation: sourceLocation)
            throw error
        }
    }
}
