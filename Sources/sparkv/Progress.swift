import Foundation

/// Progress of a long run on stderr: what it is doing, done/total, the time elapsed and an
/// estimate of the time left. On a terminal it is one line rewritten with `\r`; otherwise (a log
/// file, a pipe) plain lines, at most one every ``logInterval`` seconds, so logs stay short.
///
/// ```swift
/// var progress = Progress(task: "eval", total: 40)
/// for i in 0..<40 { progress.report(done: i, detail: "policy \(i)"); work(i) }
/// progress.finish()
/// ```
struct Progress {
    /// What the run is, e.g. "eval" or "model-demo".
    let task: String
    /// Units of work in the run (at least 1).
    let total: Int
    /// Whether stderr is a terminal (a rewritten line) or not (occasional plain lines).
    let terminal: Bool
    /// Least time between two plain lines.
    let logInterval: Double
    private let start = ContinuousClock.now
    private var lastLine: ContinuousClock.Instant?
    private var wroteTerminalLine = false

    init(task: String, total: Int, terminal: Bool = isatty(2) != 0,
         logInterval: Double = Double(ProcessInfo.processInfo.environment["SPARKV_PROGRESS_INTERVAL"] ?? "") ?? 5) {
        self.task = task
        self.total = max(total, 1)
        self.terminal = terminal
        self.logInterval = logInterval
    }

    /// The line for `done` units finished, doing `detail`; the estimate is the mean time per unit
    /// so far times the units left (none before the first unit is done).
    func line(done: Int, detail: String, elapsed: Double) -> String {
        let done = min(max(done, 0), total)
        var text = "\(task): \(done)/\(total)"
        if !detail.isEmpty { text += " \(detail)" }
        text += ", \(Self.clock(elapsed)) elapsed"
        if done > 0, done < total {
            text += ", ~\(Self.clock(elapsed / Double(done) * Double(total - done))) left"
        }
        return text
    }

    /// Reports `done` finished units while working on `detail`.
    mutating func report(done: Int, detail: String = "") {
        show(line(done: done, detail: detail, elapsed: seconds(ContinuousClock.now - start)))
    }

    /// Reports a message that carries its own counts (`bench`'s), with the time elapsed.
    mutating func report(_ message: String) {
        show("\(message), \(Self.clock(seconds(ContinuousClock.now - start))) elapsed")
    }

    /// A message that stays (a skip, a warning): the progress line is cleared first.
    mutating func note(_ message: String) {
        clear()
        printError(message)
    }

    /// Clears a terminal's progress line (before other output); nothing otherwise.
    mutating func clear() {
        if terminal && wroteTerminalLine {
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            wroteTerminalLine = false
        }
    }

    private mutating func show(_ text: String) {
        let now = ContinuousClock.now
        if terminal {
            // A line wider than the terminal wraps, and `\r` would then rewrite only its last row.
            var size = winsize()
            let columns = ioctl(2, UInt(TIOCGWINSZ), &size) == 0 ? Int(size.ws_col) : 0
            let shown = columns > 1 && text.count >= columns ? String(text.prefix(columns - 2)) + "…" : text
            FileHandle.standardError.write(Data("\r\u{1B}[K\(shown)".utf8))
            wroteTerminalLine = true
        } else if lastLine.map({ seconds(now - $0) >= logInterval }) ?? true {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
            lastLine = now
        }
    }

    /// Ends the report: clears the terminal line, or logs the total time.
    mutating func finish() {
        if terminal {
            clear()
        } else if lastLine != nil {
            FileHandle.standardError.write(Data("\(task): done in \(Self.clock(seconds(ContinuousClock.now - start)))\n".utf8))
        }
    }

    /// `42 s`, `3 min 05 s` or `1 h 02 min`.
    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s) s" }
        if s < 3600 { return String(format: "%d min %02d s", s / 60, s % 60) }
        return String(format: "%d h %02d min", s / 3600, s % 3600 / 60)
    }
}

/// A ``Progress`` shared with a callback that reports the start of each unit of work (such as
/// ``Evaluation/progress``): each ``step(_:)`` counts the unit before it as done.
final class ProgressBox {
    private var progress: Progress
    private var started = 0
    private var finished = false

    init(_ progress: Progress) { self.progress = progress }

    /// A new unit of work, described by `detail`, starts.
    func step(_ detail: String) {
        progress.report(done: started, detail: detail)
        started += 1
    }

    /// Ends the report (once).
    func finish() {
        guard !finished else { return }
        finished = true
        progress.finish()
    }
}
