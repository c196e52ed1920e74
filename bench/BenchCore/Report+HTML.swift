// One self-contained HTML page: inline CSS and SVG, no script, no external asset, so it can be
// mailed, attached to a ticket or committed and still open anywhere.

extension BenchReport {
    public func html() -> String {
        let xMax = Double(max(elapsedMs, timeline.bucketMs)) / 1000
        var page = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <title>causeway-bench report \(XML.escape(startedAt))</title>
        <style>
        body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }
        h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
        table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
        th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
        th:first-child, td:first-child { text-align: left; }
        th { background: #f4f4f4; }
        .ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
        .note { color: #555; font-size: 13px; } figure { margin: 12px 0; }
        </style></head><body>

        """
        page += "<h1>causeway-bench report</h1>\n"
        page += "<p>\(XML.escape(startedAt)) · causeway-bench \(XML.escape(version)) · \(Fmt.fixed(Double(elapsedMs) / 1000, 1)) s\(interrupted ? " · <span class=\"bad\">interrupted</span>" : "")</p>\n"
        page += "<p>Target: " + XML.escape(target.mode == "split" ? "writes → \(target.writeURL ?? "?"), reads → \(target.readURL ?? "?")" : (target.url ?? "?"))
        if let admin = target.adminURL { page += " · admin console " + XML.escape(admin) }
        page += " · lag from \(XML.escape(target.lagSource))</p>\n"
        let verdictClass = passed ? "ok" : "bad"
        page += "<p class=\"\(verdictClass)\">" + (passed
            ? "Verification passed: no stale read and no regression in \(Fmt.count(totals.reads)) reads."
            : "Verification found \(totals.staleReads) stale read(s) (read-your-writes) and \(totals.regressions) regression(s) (monotonic reads) in \(Fmt.count(totals.reads)) reads.") + "</p>\n"

        page += "<h2>Summary</h2>\n" + htmlTable(["", "total", "per second"], [
            ["operations", Fmt.count(totals.operations), Fmt.fixed(totals.operationsPerSecond, 1)],
            ["reads", Fmt.count(totals.reads), Fmt.fixed(totals.readsPerSecond, 1)],
            ["writes", Fmt.count(totals.writes), Fmt.fixed(totals.writesPerSecond, 1)],
            ["errors", Fmt.count(totals.errors), ""],
            ["stale reads", Fmt.count(totals.staleReads), ""],
            ["regressions", Fmt.count(totals.regressions), ""],
            ["reconnects", Fmt.count(totals.reconnects), ""],
        ])

        page += "<h2>Charts</h2>\n"
        for chart in charts(xMax: xMax) { page += "<figure>" + chart.render() + "</figure>\n" }
        page += "<p class=\"note\">Shaded: a replica's WAL replay paused by the lag schedule. Red ticks: stale reads; purple ticks: regressions (hover for details).</p>\n"

        page += "<h2>Latency (ms)</h2>\n" + htmlTable(["kind", "count", "mean", "p50", "p90", "p99", "p99.9", "max"], latency.map {
            [$0.kind, Fmt.count($0.count), Fmt.fixed($0.meanMs, 3), Fmt.fixed($0.p50Ms, 3), Fmt.fixed($0.p90Ms, 3),
             Fmt.fixed($0.p99Ms, 3), Fmt.fixed($0.p999Ms, 3), Fmt.fixed($0.maxMs, 3)]
        })
        page += "<h2>Reads per backend</h2>\n" + htmlTable(["backend", "port", "role", "reads", "share"], backends.map {
            [$0.name, String($0.port), $0.role, Fmt.count($0.reads), Fmt.percent($0.share)]
        })
        let peaks = peakLag()
        if !peaks.isEmpty {
            page += "<h2>Peak lag</h2>\n" + htmlTable(["replica", "max lag ms", "max lag bytes"], peaks.map {
                [$0.name, $0.ms.map { Fmt.fixed($0, 0) } ?? "-", $0.bytes.map { Fmt.count(Int($0)) } ?? "-"]
            })
        }
        page += "<h2>Errors by SQLSTATE</h2>\n" + (errors.isEmpty ? "<p>None.</p>\n" : htmlTable(["SQLSTATE", "count", "first message"], errors.map {
            [$0.sqlstate, Fmt.count($0.count), $0.message]
        }))
        if !lagEvents.isEmpty {
            page += "<h2>Lag injection</h2>\n" + htmlTable(["replica", "at (s)", "action", "result"], lagEvents.map {
                [$0.replica, Fmt.fixed($0.tMs / 1000, 3), $0.action, $0.ok ? "ok" : ($0.message ?? "failed")]
            })
        }
        page += "<h2>Stale reads and regressions</h2>\n"
        if anomalies.isEmpty {
            page += "<p>None.</p>\n"
        } else {
            let shown = anomalies.prefix(200)
            page += htmlTable(["at (s)", "client", "key (owner.k)", "kind", "expected ≥", "got", "answered by"], shown.map {
                [Fmt.fixed($0.tMs / 1000, 3), String($0.client), "\($0.owner).\($0.key)", $0.kind, String($0.expected), String($0.got), $0.backend ?? "port \($0.port)"]
            })
            let hidden = anomalies.count - shown.count + anomaliesOmitted
            if hidden > 0 { page += "<p class=\"note\">\(hidden) more not listed (all are counted above).</p>\n" }
        }
        let listed = clients.count <= 32 ? clients : clients.filter { $0.stale + $0.regressions + $0.errors > 0 }
        page += "<h2>Clients</h2>\n"
        if clients.count > 32 { page += "<p class=\"note\">\(clients.count) clients; listed: those with a stale read, a regression or an error.</p>\n" }
        page += htmlTable(["client", "protocol", "reads", "writes", "stale", "regressions", "errors", "reconnects"], listed.map {
            [String($0.client), $0.queryProtocol.rawValue, Fmt.count($0.reads), Fmt.count($0.writes), String($0.stale),
             String($0.regressions), String($0.errors), String($0.reconnects)]
        })
        page += "<h2>Workload</h2>\n" + htmlTable(["setting", "value"], workloadRows())
        if !notes.isEmpty {
            page += "<h2>Notes</h2>\n<ul>" + notes.map { "<li>" + XML.escape($0) + "</li>" }.joined() + "</ul>\n"
        }
        page += "</body></html>\n"
        return page
    }

    func workloadRows() -> [[String]] {
        let w = workload
        var rows: [[String]] = [
            ["clients", String(w.clients)], ["threads", String(w.threads)],
            ["duration", Durations.describe(milliseconds: w.durationMs)],
            ["count (operations per client)", w.count.map(String.init) ?? "-"],
            ["rate (operations/s, all clients)", w.rate.map { Fmt.fixed($0, 1) } ?? "unlimited"],
            ["read percent", String(w.readPercent)], ["reads after write", String(w.readsAfterWrite)],
            ["read delay", w.readDelay.description], ["think", w.think.description], ["keys per client", String(w.keys)],
            ["cross-read percent", String(w.crossReadPercent)], ["protocol", w.queryProtocol.rawValue],
            ["transactions", w.transactions.rawValue], ["pipeline", String(w.pipeline)], ["table", w.table],
            ["lag sample interval", Durations.describe(milliseconds: w.sampleIntervalMs)],
            ["timeline bucket", Durations.describe(milliseconds: w.bucketMs)], ["seed", String(w.seed)],
        ]
        if !lagSchedule.isEmpty {
            rows.append(["lag schedule", lagSchedule.map { "\($0.replica)@\(Durations.describe(milliseconds: $0.startMs))-\(Durations.describe(milliseconds: $0.endMs))" }.joined(separator: ",")])
        }
        return rows
    }

    /// Replay-paused spans from the injector's events (what happened, not what was planned).
    func pauseBands(xMax: Double) -> [SVGChart.Band] {
        var open: [String: Double] = [:]
        var bands: [SVGChart.Band] = []
        for e in lagEvents.sorted(by: { $0.tMs < $1.tMs }) where e.ok {
            if e.action == "pause" {
                open[e.replica] = e.tMs / 1000
            } else if e.action == "resume", let from = open.removeValue(forKey: e.replica) {
                bands.append(.init(from: from, to: e.tMs / 1000, label: "\(e.replica) paused", color: "#d62728"))
            }
        }
        for (replica, from) in open { bands.append(.init(from: from, to: xMax, label: "\(replica) paused", color: "#d62728")) }
        return bands.sorted { $0.from < $1.from }
    }

    func anomalyMarkers() -> [SVGChart.Marker] {
        anomalies.map {
            SVGChart.Marker(x: $0.tMs / 1000, title: "\($0.kind): client \($0.client) key \($0.owner).\($0.key) expected ≥ \($0.expected), got \($0.got) from \($0.backend ?? "port \($0.port)") at \(Fmt.fixed($0.tMs / 1000, 3)) s",
                            color: $0.kind == "regression" ? "#9467bd" : "#d62728")
        }
    }

    /// The four charts of the page, exposed for tests.
    public func charts(xMax: Double) -> [SVGChart] {
        let bands = pauseBands(xMax: xMax)
        let markers = anomalyMarkers()
        let names = backendNames
        func color(_ name: String) -> String { SVGChart.palette[(names.firstIndex(of: name) ?? 0) % SVGChart.palette.count] }
        let bucketSeconds = Double(timeline.bucketMs) / 1000
        // A bucket's rate is plotted at its middle.
        func x(_ b: TimelineBucket) -> Double { (Double(b.tMs) + Double(timeline.bucketMs) / 2) / 1000 }

        var lag = SVGChart(title: "Replication lag per replica (\(target.lagSource))", yLabel: "lag (ms)", xMax: xMax)
        let replicas = names.filter { name in lagSamples.contains { $0.backends.contains { $0.name == name && $0.role != "primary" } } }
        for name in replicas {
            lag.series.append(.init(name: name, color: color(name), points: lagSamples.map { s in
                (s.tMs / 1000, s.backends.first { $0.name == name }?.lagMs)
            }))
        }
        lag.bands = bands
        lag.markers = markers

        var throughput = SVGChart(title: "Throughput", yLabel: "operations / s", xMax: xMax)
        throughput.series = [
            .init(name: "all", color: "#333", points: timeline.buckets.map { (x($0), Double($0.operations) / bucketSeconds) }),
            .init(name: "reads", color: "#1f77b4", points: timeline.buckets.map { (x($0), Double($0.reads) / bucketSeconds) }),
            .init(name: "writes", color: "#ff7f0e", points: timeline.buckets.map { (x($0), Double($0.writes) / bucketSeconds) }),
            .init(name: "errors", color: "#d62728", points: timeline.buckets.map { (x($0), Double($0.errors) / bucketSeconds) }, dashed: true),
        ]
        throughput.bands = bands
        throughput.markers = markers

        var perBackend = SVGChart(title: "Reads per backend (which server answered)", yLabel: "reads / s", xMax: xMax)
        for name in names where timeline.buckets.contains(where: { $0.readsByBackend[name] != nil }) {
            perBackend.series.append(.init(name: name, color: color(name), points: timeline.buckets.map {
                (x($0), Double($0.readsByBackend[name] ?? 0) / bucketSeconds)
            }))
        }
        perBackend.bands = bands
        perBackend.markers = markers

        var stale = SVGChart(title: "Stale reads and regressions", yLabel: "per bucket", xMax: xMax)
        stale.series = [
            .init(name: "stale reads", color: "#d62728", points: timeline.buckets.map { (x($0), Double($0.stale)) }),
            .init(name: "regressions", color: "#9467bd", points: timeline.buckets.map { (x($0), Double($0.regressions)) }, dashed: true),
        ]
        stale.bands = bands
        stale.markers = markers
        return [lag, throughput, perBackend, stale]
    }
}

func htmlTable(_ header: [String], _ rows: [[String]]) -> String {
    var out = "<table><tr>" + header.map { "<th>" + XML.escape($0) + "</th>" }.joined() + "</tr>\n"
    for row in rows { out += "<tr>" + row.map { "<td>" + XML.escape($0) + "</td>" }.joined() + "</tr>\n" }
    return out + "</table>\n"
}
