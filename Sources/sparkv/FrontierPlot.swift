import Foundation

/// An SVG scatter plot of the bytes-vs-fidelity frontier: one point per policy, K+V bytes as a
/// fraction of dense fp16 on x, mean KL(dense ‖ policy) on a log y axis, plus labelled reference
/// points (llama.cpp's quantized caches measured on the same model).
///
/// Points carry a number; the legend under the plot (two columns, full width, so long policy names
/// are never clipped) maps numbers to policies. Each number is placed next to its point at the
/// first of a few positions that overlaps no other number and no point.
struct FrontierPlot {
    struct Point {
        var label: String
        var bytes: Double   // fraction of dense
        var kl: Double
        var reference = false
    }

    var title: String
    var points: [Point]

    /// An axis-aligned box, for the label-overlap test.
    private struct Box {
        var x0, y0, x1, y1: Double
        func overlaps(_ o: Box) -> Bool { x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1 }
    }

    func svg() -> String {
        let w = 960.0, left = 80.0, right = 30.0, top = 50.0, plotH = 440.0
        let plotW = w - left - right
        let legendTop = top + plotH + 60, lineH = 16.0, columns = 2
        let rows = (points.count + columns - 1) / columns
        let h = legendTop + Double(rows) * lineH + 20
        let kls = points.map { max($0.kl, 1e-5) }
        let yMin = pow(10, floor(log10(kls.min() ?? 1e-4))), yMax = pow(10, ceil(log10(kls.max() ?? 1)))
        let xMax = max(1.05, (points.map(\.bytes).max() ?? 1) * 1.05)
        func x(_ b: Double) -> Double { left + b / xMax * plotW }
        func y(_ k: Double) -> Double {
            top + (log10(yMax) - log10(max(k, 1e-5))) / (log10(yMax) - log10(yMin)) * plotH
        }
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="28" font-size="16">\(escape(title))</text>
            <line x1="\(left)" y1="\(top + plotH)" x2="\(left + plotW)" y2="\(top + plotH)" stroke="black"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(top + plotH)" stroke="black"/>

            """
        var t = 0.0
        while t <= xMax + 1e-9 {
            s += "<line x1=\"\(x(t))\" y1=\"\(top)\" x2=\"\(x(t))\" y2=\"\(top + plotH)\" stroke=\"#eee\"/>"
            s += "<text x=\"\(x(t))\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\">\(String(format: "%.1f", t))</text>\n"
            t += 0.1
        }
        var e = log10(yMin)
        while e <= log10(yMax) + 1e-9 {
            let v = pow(10, e)
            s += "<line x1=\"\(left)\" y1=\"\(y(v))\" x2=\"\(left + plotW)\" y2=\"\(y(v))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(left - 8)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">1e\(Int(e))</text>\n"
            e += 1
        }
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(top + plotH + 40)\" text-anchor=\"middle\">K+V bytes / dense fp16</text>\n"
        s += "<text transform=\"translate(20,\(top + plotH / 2)) rotate(-90)\" text-anchor=\"middle\">mean KL(dense || policy), nats</text>\n"

        // Points first (so every label avoids every point), then the numbers.
        let radius = 5.0
        var taken = points.map { p in
            Box(x0: x(p.bytes) - radius, y0: y(p.kl) - radius, x1: x(p.bytes) + radius, y1: y(p.kl) + radius)
        }
        for p in points {
            let color = p.reference ? "#d62728" : "#1f77b4"
            s += "<circle cx=\"\(x(p.bytes))\" cy=\"\(y(p.kl))\" r=\"\(radius)\" fill=\"\(color)\"/>\n"
        }
        let fontSize = 11.0, charW = 6.5
        for (i, p) in points.enumerated() {
            let color = p.reference ? "#d62728" : "#1f77b4"
            let text = "\(i + 1)", tw = Double(text.count) * charW
            let cx = x(p.bytes), cy = y(p.kl)
            // right, left, above, below, then the diagonals further out: (text x, baseline y, anchor)
            let candidates: [(Double, Double, String)] = [
                (cx + 8, cy + 4, "start"), (cx - 8, cy + 4, "end"), (cx, cy - 9, "middle"), (cx, cy + 17, "middle"),
                (cx + 8, cy - 8, "start"), (cx - 8, cy - 8, "end"), (cx + 8, cy + 16, "start"), (cx - 8, cy + 16, "end"),
                (cx + 16, cy + 4, "start"), (cx - 16, cy + 4, "end"),
            ]
            func box(_ c: (Double, Double, String)) -> Box {
                let x0 = c.2 == "start" ? c.0 : c.2 == "end" ? c.0 - tw : c.0 - tw / 2
                return Box(x0: x0, y0: c.1 - fontSize + 2, x1: x0 + tw, y1: c.1 + 2)
            }
            let chosen = candidates.first { c in !taken.contains { $0.overlaps(box(c)) } } ?? candidates[0]
            taken.append(box(chosen))
            s += "<text x=\"\(chosen.0)\" y=\"\(chosen.1)\" text-anchor=\"\(chosen.2)\" font-size=\"\(Int(fontSize))\" fill=\"\(color)\">\(text)</text>\n"
        }

        // Legend: column-major, under the axis title.
        let columnW = (w - left) / Double(columns)
        for (i, p) in points.enumerated() {
            let color = p.reference ? "#d62728" : "#1f77b4"
            let lx = left + Double(i / rows) * columnW, ly = legendTop + Double(i % rows) * lineH
            s += "<text x=\"\(lx)\" y=\"\(ly)\" font-size=\"11\" fill=\"\(color)\">\(i + 1)  \(escape(p.label))</text>\n"
        }
        return s + "</svg>\n"
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
