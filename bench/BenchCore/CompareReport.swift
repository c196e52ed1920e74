// bench/compare.sh measures; this turns its measurement lines into means, ratios, a terminal
// table, JSON and an HTML page. Input, one measurement per line, key=value separated by spaces:
//     arm=causeway tool=pgbench round=1 tps=15333.2 p50_ms=0.91 p99_ms=2.3 cpu_us=37.5 failed=0
// plus `setting key=value` lines describing the run. `cpu_us` (proxy CPU per transaction) is
// empty or absent for the arm without a proxy.

public struct CompareMeasurement: Codable, Sendable, Equatable {
    public var arm: String
    public var tool: String
    public var round: Int
    public var tps: Double
    public var p50Ms: Double?
    public var p99Ms: Double?
    public var cpuUsPerTxn: Double?
    public var failed: Int
}

public struct CompareRow: Codable, Sendable, Equatable {
    public var tool: String
    public var arm: String
    public var runs: Int
    public var tps: Double
    /// tps / tps of the arm without a proxy ("direct"), same tool.
    public var vsDirect: Double?
    /// tps / tps of Causeway, same tool.
    public var vsCauseway: Double?
    public var p50Ms: Double?
    public var p99Ms: Double?
    public var cpuUsPerTxn: Double?
    /// CPU per transaction / Causeway's, same tool.
    public var cpuVsCauseway: Double?
    public var failed: Int
}

public struct CompareReport: Codable, Sendable, Equatable {
    public var settings: [String: String]
    public var measurements: [CompareMeasurement]
    public var rows: [CompareRow]

    public init(parsing text: String) throws {
        var settings: [String: String] = [:]
        var measurements: [CompareMeasurement] = []
        for (number, raw) in text.split(separator: "\n").enumerated() {
            let line = String(raw).trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            var words = line.split(separator: " ").map(String.init)
            let isSetting = words.first == "setting"
            if isSetting { words.removeFirst() }
            var fields: [String: String] = [:]
            for word in words {
                guard let eq = word.firstIndex(of: "=") else { throw WorkloadError("line \(number + 1): expected key=value, got \(word)") }
                fields[String(word[..<eq])] = String(word[word.index(after: eq)...])
            }
            if isSetting {
                settings.merge(fields) { _, new in new }
                continue
            }
            guard let arm = fields["arm"], let tool = fields["tool"], let tps = fields["tps"].flatMap(Double.init) else {
                throw WorkloadError("line \(number + 1): a measurement needs arm=, tool= and a numeric tps=")
            }
            let number = { (key: String) in fields[key].flatMap(Double.init) }
            measurements.append(CompareMeasurement(arm: arm, tool: tool, round: fields["round"].flatMap { Int($0) } ?? 0, tps: tps,
                                                   p50Ms: number("p50_ms"), p99Ms: number("p99_ms"), cpuUsPerTxn: number("cpu_us"),
                                                   failed: fields["failed"].flatMap { Int($0) } ?? 0))
        }
        self.settings = settings
        self.measurements = measurements
        rows = Self.summarise(measurements)
    }

    static func mean(_ values: [Double]) -> Double? {
        values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }

    static func summarise(_ ms: [CompareMeasurement]) -> [CompareRow] {
        var order: [(String, String)] = []
        for m in ms where !order.contains(where: { $0 == (m.tool, m.arm) }) { order.append((m.tool, m.arm)) }
        var rows = order.map { tool, arm -> CompareRow in
            let mine = ms.filter { $0.tool == tool && $0.arm == arm }
            return CompareRow(tool: tool, arm: arm, runs: mine.count, tps: mean(mine.map(\.tps)) ?? 0, vsDirect: nil, vsCauseway: nil,
                              p50Ms: mean(mine.compactMap(\.p50Ms)), p99Ms: mean(mine.compactMap(\.p99Ms)),
                              cpuUsPerTxn: mean(mine.compactMap(\.cpuUsPerTxn)), cpuVsCauseway: nil,
                              failed: mine.map(\.failed).reduce(0, +))
        }
        for i in rows.indices {
            let tool = rows[i].tool
            if let direct = rows.first(where: { $0.tool == tool && $0.arm == "direct" }), direct.tps > 0 {
                rows[i].vsDirect = rows[i].tps / direct.tps
            }
            if let causeway = rows.first(where: { $0.tool == tool && $0.arm == "causeway" }) {
                if causeway.tps > 0 { rows[i].vsCauseway = rows[i].tps / causeway.tps }
                if let mine = rows[i].cpuUsPerTxn, let theirs = causeway.cpuUsPerTxn, theirs > 0 { rows[i].cpuVsCauseway = mine / theirs }
            }
        }
        return rows
    }

    public var tools: [String] {
        var seen: [String] = []
        for r in rows where !seen.contains(r.tool) { seen.append(r.tool) }
        return seen
    }

    func cells(_ r: CompareRow) -> [String] {
        let opt = { (v: Double?, d: Int) in v.map { Fmt.fixed($0, d) } ?? "-" }
        return [r.arm, Fmt.fixed(r.tps, 0), opt(r.vsDirect, 2), opt(r.vsCauseway, 2), opt(r.p50Ms, 3), opt(r.p99Ms, 3),
                opt(r.cpuUsPerTxn, 1), opt(r.cpuVsCauseway, 2), String(r.failed), String(r.runs)]
    }

    static let header = ["", "tps", "vs direct", "vs causeway", "p50 ms", "p99 ms", "proxy cpu µs/txn", "cpu vs causeway", "failed", "runs"]

    public func table() -> String {
        var out: [String] = []
        if !settings.isEmpty { out.append(settings.keys.sorted().map { "\($0)=\(settings[$0]!)" }.joined(separator: " ")) }
        for tool in tools {
            out.append("")
            var t = TextTable([tool] + Self.header.dropFirst())
            for r in rows where r.tool == tool { t.add(cells(r)) }
            out.append(t.render())
        }
        return out.joined(separator: "\n")
    }

    public func html() -> String {
        var page = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>causeway-bench comparison</title>
        <style>
        body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }
        table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
        th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
        th:first-child, td:first-child { text-align: left; } th { background: #f4f4f4; }
        .note { color: #555; font-size: 13px; }
        </style></head><body>
        <h1>Causeway vs direct PostgreSQL, PgBouncer and pgpool-II</h1>

        """
        page += "<p class=\"note\">" + XML.escape(settings.keys.sorted().map { "\($0) = \(settings[$0]!)" }.joined(separator: " · ")) + "</p>\n"
        for tool in tools {
            page += "<h2>\(XML.escape(tool))</h2>\n"
            page += htmlTable([tool] + Self.header.dropFirst(), rows.filter { $0.tool == tool }.map(cells))
            page += bars(rows.filter { $0.tool == tool })
        }
        page += "<p class=\"note\">tps: mean over the rounds (arms alternate within each round). vs direct / vs causeway: tps ratios, same tool. Proxy CPU: user+system time of the proxy's whole process tree over the run, per transaction.</p>\n"
        page += "<h2>Measurements</h2>\n" + htmlTable(["tool", "arm", "round", "tps", "p50 ms", "p99 ms", "cpu µs/txn", "failed"], measurements.map {
            [$0.tool, $0.arm, String($0.round), Fmt.fixed($0.tps, 1), $0.p50Ms.map { Fmt.fixed($0, 3) } ?? "-",
             $0.p99Ms.map { Fmt.fixed($0, 3) } ?? "-", $0.cpuUsPerTxn.map { Fmt.fixed($0, 1) } ?? "-", String($0.failed)]
        })
        return page + "</body></html>\n"
    }

    /// Horizontal tps bars, one per arm.
    func bars(_ rows: [CompareRow]) -> String {
        let width = 700.0, barHeight = 22.0, labelWidth = 190.0
        let top = rows.map(\.tps).max() ?? 1
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(Double(rows.count) * (barHeight + 6) + 10))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        for (i, r) in rows.enumerated() {
            let y = 5 + Double(i) * (barHeight + 6)
            let w = top > 0 ? (width - labelWidth - 80) * r.tps / top : 0
            let color = r.arm == "causeway" ? "#1f77b4" : r.arm == "direct" ? "#7f7f7f" : "#ff7f0e"
            svg += "<text x=\"0\" y=\"\(Fmt.fixed(y + 15, 1))\">\(XML.escape(r.arm))</text>"
            svg += "<rect x=\"\(Int(labelWidth))\" y=\"\(Fmt.fixed(y, 1))\" width=\"\(Fmt.fixed(w, 1))\" height=\"\(Int(barHeight))\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(Fmt.fixed(labelWidth + w + 6, 1))\" y=\"\(Fmt.fixed(y + 15, 1))\">\(Fmt.fixed(r.tps, 0)) tps</text>\n"
        }
        return svg + "</svg>\n"
    }
}
