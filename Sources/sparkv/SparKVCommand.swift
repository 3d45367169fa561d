import ArgumentParser
import SparKV

/// `sparkv`: the SparKV command-line tool.
struct SparKVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparkv",
        abstract: "SparKV: a compact, query-aware channel-pruned KV cache for CPU LLM inference.",
        discussion: """
            Run `sparkv demo` to compress a synthetic Llama-3-8B-shaped cache with SparK and compare its \
            memory and attention error against a dense fp16 cache. `sparkv <subcommand> --help` describes each command.
            """,
        version: KVCache.libraryVersion,
        subcommands: [DemoCommand.self, InfoCommand.self, PolicyCommand.self, BenchCommand.self, GenerateCommand.self,
                      EvalCommand.self, ModelDemoCommand.self, PlanCommand.self],
        defaultSubcommand: DemoCommand.self
    )
}

extension CompressionPolicy.Recovery: ExpressibleByArgument {}
extension CompressionPolicy.Precision: ExpressibleByArgument {}
extension KVCache.Kernel: ExpressibleByArgument {}
