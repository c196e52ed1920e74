// The terminal summary printed at the end of a run.

extension BenchReport {
    public func table() -> String {
        var out: [String] = []
        let seconds = Double(elapsedMs) / 1000
        out.append("causeway-bench \(version): \(workload.clients) clients, \(workload.queryProtocol.rawValue) protocol, \(workload.transactions.rawValue), \(Fmt.fixed(seconds, 1)) s\(interrupted ? " (interrupted)" : "")")
        out.append("target: " + (target.mode == "split" ? "writes \(target.writeURL ?? "?"), reads \(target.readURL ?? "?")" : (target.url ?? "?")))
        out.append("")
        var summary = TextTable(["", "total", "per second"])
        summary.add(["operations", Fmt.count(totals.operations), Fmt.fixed(totals.operationsPerSecond, 1)])
        summary.add(["reads", Fmt.count(totals.reads), Fmt.fixed(totals.readsPerSecond, 1)])
        summary.add(["writes", Fmt.count(totals.writes), Fmt.fixed(totals.writesPerSecond, 1)])
        summary.add(["errors", Fmt.count(totals.errors), ""])
        summary.add(["stale reads (read-your-writes)", Fmt.count(totals.staleReads), ""])
        summary.add(["regressions (monotonic reads)", Fmt.count(totals.regressions), ""])
        if totals.reconnects > 0 { summary.add(["reconnects", Fmt.count(totals.reconnects), ""]) }
        out.append(summary.render())
        out.append("")
        var lat = TextTable(["latency (ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "max"])
        for l in latency {
            lat.add([l.kind, Fmt.count(l.count), Fmt.fixed(l.meanMs, 3), Fmt.fixed(l.p50Ms, 3), Fmt.fixed(l.p90Ms, 3),
                     Fmt.fixed(l.p99Ms, 3), Fmt.fixed(l.p999Ms, 3), Fmt.fixed(l.maxMs, 3)])
        }
        out.append(lat.render())
        out.append("")
        var be = TextTable(["reads per backend", "port", "role", "reads", "share"])
        for b in backends { be.add([b.name, String(b.port), b.role, Fmt.count(b.reads), Fmt.percent(b.share)]) }
        out.append(be.render())
        if !errors.isEmpty {
            out.append("")
            var er = TextTable(["errors by SQLSTATE", "count", "first message"])
            for e in errors { er.add([e.sqlstate, Fmt.count(e.count), String(e.message.prefix(80))]) }
            out.append(er.render())
        }
        if !lagEvents.isEmpty {
            out.append("")
            var ev = TextTable(["lag injection", "at (s)", "action", "result"])
            for e in lagEvents { ev.add([e.replica, Fmt.fixed(e.tMs / 1000, 2), e.action, e.ok ? "ok" : (e.message ?? "failed")]) }
            out.append(ev.render())
        }
        let peaks = peakLag()
        if !peaks.isEmpty {
            out.append("")
            var lagTable = TextTable(["lag (" + target.lagSource + ")", "max ms", "max bytes"])
            for p in peaks { lagTable.add([p.name, p.ms.map { Fmt.fixed($0, 0) } ?? "-", p.bytes.map { Fmt.count(Int($0)) } ?? "-"]) }
            out.append(lagTable.render())
        }
        out.append("")
        let anomalyCount = totals.staleReads + totals.regressions
        out.append(anomalyCount == 0
            ? "verification: no stale read and no regression in \(Fmt.count(totals.reads)) reads"
            : "verification: \(totals.staleReads) stale read(s) and \(totals.regressions) regression(s) in \(Fmt.count(totals.reads)) reads")
        for note in notes { out.append("note: " + note) }
        return out.joined(separator: "\n")
    }

    /// The highest lag seen per replica over the run.
    public func peakLag() -> [(name: String, ms: Double?, bytes: Int64?)] {
        var order: [String] = []
        var ms: [String: Double] = [:]
        var bytes: [String: Int64] = [:]
        for sample in lagSamples {
            for p in sample.backends where p.role != "primary" {
                if !order.contains(p.name) { order.append(p.name) }
                if let v = p.lagMs { ms[p.name] = max(ms[p.name] ?? 0, v) }
                if let v = p.lagBytes { bytes[p.name] = max(bytes[p.name] ?? 0, v) }
            }
        }
        return order.map { ($0, ms[$0], bytes[$0]) }
    }
}
