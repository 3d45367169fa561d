#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where SparKV's real model lives and how to find it.
///
/// The model is SmolLM2-135M-Instruct in 4-bit GGUF (Q4_1), fetched by `scripts/fetch-model.sh`
/// into `models/` at the repository root (it is not in git). ``locate(_:environmentValue:)``
/// looks:
///
/// 1. when the environment variable `SPARKV_MODEL` is set (non-empty), only there: a file, or a
///    directory holding the file. A value that names neither is an error, never silently passed
///    over for another model;
/// 2. otherwise at `models/<file>` in the current directory and in each of its parents, then at
///    `models/<file>` at the root of the source tree this library was built from.
///
/// ```swift
/// let path = try ModelFiles.locate()        // throws with a hint to run scripts/fetch-model.sh
/// let file = try GGUFFile(path: path)
/// if let path = ModelFiles.find() { ... }   // nil when the model is not fetched
/// ```
public enum ModelFiles {
    /// The model's file name.
    public static let smolLM2FileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    /// The environment variable that overrides the search.
    public static let environmentVariable = "SPARKV_MODEL"
    /// The script that fetches the model, relative to the repository root.
    public static let fetchScript = "scripts/fetch-model.sh"

    /// The value of `SPARKV_MODEL` in this process, nil when unset or empty.
    public static func environmentValue() -> String? {
        guard let value = getenv(environmentVariable).map({ String(cString: $0) }), !value.isEmpty else { return nil }
        return value
    }

    /// The places ``find(_:environmentValue:)`` looks, in order: only the environment's path when
    /// `environmentValue` is set.
    public static func candidatePaths(_ fileName: String = smolLM2FileName,
                                      environmentValue: String? = environmentValue()) -> [String] {
        if let value = environmentValue {
            return [isDirectory(value) ? join(value, fileName) : value]
        }
        var paths: [String] = []
        if var dir = currentDirectory() {
            while true {
                paths.append(join(dir, "models/" + fileName))
                guard let parent = parentDirectory(dir) else { break }
                dir = parent
            }
        }
        // <root>/Sources/SparKVModel/ModelFiles.swift -> <root>
        var root = "\(#filePath)"
        for _ in 0..<3 { root = parentDirectory(root) ?? root }
        paths.append(join(root, "models/" + fileName))
        var seen = Set<String>()
        return paths.filter { seen.insert($0).inserted }
    }

    /// The first existing, non-empty regular file among ``candidatePaths(_:environmentValue:)``,
    /// or nil (also when `SPARKV_MODEL` names nothing usable: see ``locate(_:environmentValue:)``).
    public static func find(_ fileName: String = smolLM2FileName,
                            environmentValue: String? = environmentValue()) -> String? {
        candidatePaths(fileName, environmentValue: environmentValue).first(where: isNonEmptyFile)
    }

    /// The model's path.
    ///
    /// `fetchName`: the name to pass to the fetch script in the error's hint (nil: the default model).
    /// - Throws: ``ModelError/environmentPath(variable:value:reason:)`` when `SPARKV_MODEL` is
    ///   set but names no non-empty regular file (nor a directory holding `fileName`);
    ///   ``GGUFError/fileNotFound(path:)`` naming the places searched and the fetch script.
    public static func locate(_ fileName: String = smolLM2FileName,
                              environmentValue: String? = environmentValue(),
                              fetchName: String? = nil) throws -> String {
        let candidates = candidatePaths(fileName, environmentValue: environmentValue)
        if let path = candidates.first(where: isNonEmptyFile) { return path }
        if let value = environmentValue {
            let path = candidates.first ?? value
            throw ModelError.environmentPath(variable: environmentVariable, value: value,
                                             reason: path == value ? describe(path) : "\(path): \(describe(path))")
        }
        throw GGUFError.fileNotFound(
            path: "\(fileName) (looked in: \(candidates.joined(separator: ", ")); "
                + "run \(fetchScript)\(fetchName.map { " " + $0 } ?? "") or set \(environmentVariable))")
    }

    /// Why `path` is not a usable model file.
    static func describe(_ path: String) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { return String(cString: strerror(errno)) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return "the file is empty"
        case S_IFDIR: return "a directory"
        default: return "not a regular file"
        }
    }

    static func isNonEmptyFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && info.st_size > 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func currentDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func join(_ dir: String, _ name: String) -> String {
        dir.hasSuffix("/") ? dir + name : dir + "/" + name
    }

    /// "/a/b" -> "/a", "/a" -> "/", "/" -> nil.
    static func parentDirectory(_ path: String) -> String? {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard p != "/", let slash = p.lastIndex(of: "/") else { return nil }
        let parent = String(p[..<slash])
        return parent.isEmpty ? "/" : parent
    }
}
