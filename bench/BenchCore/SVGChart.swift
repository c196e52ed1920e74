// Line charts as inline SVG: the report must be one self-contained file (no scripts, no external
// assets), and a few polylines with axes are all the charts need.

public struct SVGChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var color: String
        /// (x, y); a nil y breaks the line (no sample there).
        public var points: [(x: Double, y: Double?)]
        public var dashed: Bool

        public init(name: String, color: String, points: [(x: Double, y: Double?)], dashed: Bool = false) {
            self.name = name
            self.color = color
            self.points = points
            self.dashed = dashed
        }
    }

    /// A shaded span of x, e.g. a replica's replay paused.
    public struct Band: Sendable {
        public var from: Double
        public var to: Double
        public var label: String
        public var color: String

        public init(from: Double, to: Double, label: String, color: String) {
            self.from = from
            self.to = to
            self.label = label
            self.color = color
        }
    }

    /// A tick under the plot at x, e.g. a stale read.
    public struct Marker: Sendable {
        public var x: Double
        public var title: String
        public var color: String

        public init(x: Double, title: String, color: String) {
            self.x = x
            self.title = title
            self.color = color
        }
    }

    public var title: String
    public var yLabel: String
    public var xMax: Double
    public var series: [Series] = []
    public var bands: [Band] = []
    public var markers: [Marker] = []
    public var width = 960.0
    public var height = 260.0

    public init(title: String, yLabel: String, xMax: Double) {
        self.title = title
        self.yLabel = yLabel
        self.xMax = xMax
    }

    public static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]

    /// 1, 2 or 5 × 10^n, so that about `count` steps cover `span`.
    static func niceStep(_ span: Double, count: Double = 5) -> Double {
        guard span > 0, span.isFinite else { return 1 }
        let raw = span / count
        var magnitude = 1.0
        while magnitude * 10 <= raw { magnitude *= 10 }
        while magnitude > raw { magnitude /= 10 }
        for factor in [1.0, 2.0, 5.0, 10.0] where magnitude * factor >= raw { return magnitude * factor }
        return magnitude * 10
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded() && abs(value) < 1e15 { return String(Int(value)) }
        let text = String(value)
        // Keep tick labels short: 0.30000000000000004 → 0.3.
        if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > 4 {
            return String(Double(Int((value * 1000).rounded())) / 1000)
        }
        return text
    }

    public func render() -> String {
        let left = 64.0, right = 16.0, top = 28.0, bottom = 44.0
        let plotW = width - left - right, plotH = height - top - bottom
        let xSpan = max(xMax, 0.001)
        let yValues = series.flatMap { $0.points.compactMap(\.y) }
        // An all-zero chart still gets a 0…1 axis rather than a collapsed one.
        let yTop = max(yValues.max() ?? 0, 0) > 0 ? (yValues.max() ?? 0) * 1.08 : 1
        let yStep = Self.niceStep(yTop > 0 ? yTop : 1)
        let yMax = max(yStep, (yTop / yStep).rounded(.up) * yStep)
        func px(_ x: Double) -> Double { left + min(max(x, 0), xSpan) / xSpan * plotW }
        func py(_ y: Double) -> Double { top + plotH - min(max(y, 0), yMax) / yMax * plotH }
        func n(_ v: Double) -> String { String(Double(Int(v * 10)) / 10) }

        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(n(width)) \(n(height))\" width=\"\(n(width))\" height=\"\(n(height))\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"\(XML.escape(title))\">\n"
        svg += "<title>\(XML.escape(title))</title>\n"
        svg += "<rect x=\"0\" y=\"0\" width=\"\(n(width))\" height=\"\(n(height))\" fill=\"#fff\"/>\n"
        svg += "<text x=\"\(n(left))\" y=\"16\" font-size=\"13\" font-weight=\"bold\">\(XML.escape(title))</text>\n"
        for band in bands {
            let x0 = px(band.from), x1 = px(band.to)
            svg += "<rect class=\"band\" x=\"\(n(x0))\" y=\"\(n(top))\" width=\"\(n(max(1, x1 - x0)))\" height=\"\(n(plotH))\" fill=\"\(band.color)\" fill-opacity=\"0.15\"><title>\(XML.escape(band.label))</title></rect>\n"
            svg += "<text x=\"\(n(x0 + 3))\" y=\"\(n(top + 12))\" fill=\"#555\">\(XML.escape(band.label))</text>\n"
        }
        // Grid and axes.
        var y = 0.0
        while y <= yMax + yStep / 2 {
            let yy = py(y)
            svg += "<line x1=\"\(n(left))\" y1=\"\(n(yy))\" x2=\"\(n(left + plotW))\" y2=\"\(n(yy))\" stroke=\"#e5e5e5\"/>"
            svg += "<text x=\"\(n(left - 6))\" y=\"\(n(yy + 4))\" text-anchor=\"end\">\(Self.format(y))</text>\n"
            y += yStep
        }
        let xStep = Self.niceStep(xSpan, count: 10)
        var x = 0.0
        while x <= xSpan + xStep / 1000 {
            let xx = px(x)
            svg += "<line x1=\"\(n(xx))\" y1=\"\(n(top + plotH))\" x2=\"\(n(xx))\" y2=\"\(n(top + plotH + 4))\" stroke=\"#333\"/>"
            svg += "<text x=\"\(n(xx))\" y=\"\(n(top + plotH + 16))\" text-anchor=\"middle\">\(Self.format(x))</text>\n"
            x += xStep
        }
        svg += "<line x1=\"\(n(left))\" y1=\"\(n(top + plotH))\" x2=\"\(n(left + plotW))\" y2=\"\(n(top + plotH))\" stroke=\"#333\"/>\n"
        svg += "<line x1=\"\(n(left))\" y1=\"\(n(top))\" x2=\"\(n(left))\" y2=\"\(n(top + plotH))\" stroke=\"#333\"/>\n"
        svg += "<text x=\"14\" y=\"\(n(top + plotH / 2))\" transform=\"rotate(-90 14 \(n(top + plotH / 2)))\" text-anchor=\"middle\">\(XML.escape(yLabel))</text>\n"
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(height - 6))\" text-anchor=\"middle\">seconds since the start of the load</text>\n"
        for s in series {
            var runs: [[String]] = [[]]
            for p in s.points {
                if let value = p.y { runs[runs.count - 1].append("\(n(px(p.x))),\(n(py(value)))") } else if !runs[runs.count - 1].isEmpty { runs.append([]) }
            }
            let dash = s.dashed ? " stroke-dasharray=\"5 3\"" : ""
            for run in runs where !run.isEmpty {
                svg += "<polyline class=\"series\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.6\"\(dash) points=\"\(run.joined(separator: " "))\"><title>\(XML.escape(s.name))</title></polyline>\n"
            }
        }
        for m in markers {
            let xx = px(m.x)
            svg += "<line class=\"marker\" x1=\"\(n(xx))\" y1=\"\(n(top + plotH - 10))\" x2=\"\(n(xx))\" y2=\"\(n(top + plotH))\" stroke=\"\(m.color)\" stroke-width=\"2\"><title>\(XML.escape(m.title))</title></line>\n"
        }
        // Legend, top right.
        var lx = left + plotW
        for s in series.reversed() {
            let textWidth = Double(s.name.count) * 6.5 + 26
            lx -= textWidth
            svg += "<line x1=\"\(n(lx))\" y1=\"12\" x2=\"\(n(lx + 16))\" y2=\"12\" stroke=\"\(s.color)\" stroke-width=\"3\"/><text x=\"\(n(lx + 20))\" y=\"16\">\(XML.escape(s.name))</text>\n"
        }
        svg += "</svg>"
        return svg
    }
}

enum XML {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }
}
