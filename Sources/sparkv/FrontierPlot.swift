import Foundation

/// An SVG scatter plot of the bytes-vs-fidelity frontier: one point per policy, K+V bytes as a
/// fraction of dense fp16 on x, mean KL(dense ‖ policy) on a log y axis, plus labelled reference
/// points (llama.cpp's quantized caches measured on the same model).
struct FrontierPlot {
    struct Point {
        var label: String
        var bytes: Double   // fraction of dense
        var kl: Double
        var reference = false
    }

    var title: String
    var points: [Point]

    func svg() -> String {
        let w = 900.0, h = 560.0, left = 80.0, right = 260.0, top = 50.0, bottom = 60.0
        let plotW = w - left - right, plotH = h - top - bottom
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
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(h - 15)\" text-anchor=\"middle\">K+V bytes / dense fp16</text>\n"
        s += "<text transform=\"translate(20,\(top + plotH / 2)) rotate(-90)\" text-anchor=\"middle\">mean KL(dense || policy), nats</text>\n"
        for (i, p) in points.enumerated() {
            let color = p.reference ? "#d62728" : "#1f77b4"
            s += "<circle cx=\"\(x(p.bytes))\" cy=\"\(y(p.kl))\" r=\"5\" fill=\"\(color)\"/>"
            s += "<text x=\"\(x(p.bytes) + 7)\" y=\"\(y(p.kl) - 6)\" font-size=\"9\" fill=\"\(color)\">\(i + 1)</text>\n"
            s += "<text x=\"\(left + plotW + 15)\" y=\"\(top + 12 * Double(i))\" font-size=\"10\" fill=\"\(color)\">\(i + 1) \(escape(p.label))</text>\n"
        }
        return s + "</svg>\n"
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
