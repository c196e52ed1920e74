import BenchCore
import Foundation
import XCTest

/// Reports built from hand-made statistics: no server needed.
final class ReportTests: XCTestCase {
    func makeStats() -> RunStats {
        var a = RunStats(bucketMs: 250)
        var b = RunStats(bucketMs: 250)
        a.register(client: 1, queryProtocol: .simple)
        b.register(client: 2, queryProtocol: .prepared)
        a.recordWrite(client: 1, atNs: 10_000_000, latencyNs: 1_500_000)
        a.recordRead(client: 1, atNs: 20_000_000, latencyNs: 700_000, port: 5433, inRecovery: true,
                     ref: KeyRef(owner: 1, key: 0), got: 1, verdict: .ok)
        b.recordRead(client: 2, atNs: 600_000_000, latencyNs: 900_000, port: 5434, inRecovery: true,
                     ref: KeyRef(owner: 2, key: 1), got: 3, verdict: ReadVerdict(staleExpected: 4))
        b.recordError(client: 2, atNs: 700_000_000, code: "40001", message: "could not serialize")
        b.recordError(client: 2, atNs: 710_000_000, code: "40001", message: "another message")
        a.merge(b)
        return a
    }

    func makeReport() -> BenchReport {
        let samples = [
            LagSample(tMs: 0, backends: [LagPoint(name: "primary", role: "primary", lagMs: 0), LagPoint(name: "replica1", role: "replica", lagMs: 1)]),
            LagSample(tMs: 500, backends: [LagPoint(name: "primary", role: "primary", lagMs: 0), LagPoint(name: "replica1", role: "replica", lagMs: 480, lagBytes: 9000)]),
        ]
        let events = [LagEvent(tMs: 200, replica: "replica1", action: "pause", ok: true),
                      LagEvent(tMs: 700, replica: "replica1", action: "resume", ok: true)]
        return BenchReport(version: "test", startedAt: "2026-01-01T00:00:00Z",
                           target: TargetDescription(mode: "single", url: "host=h port=1 user=app", lagSource: "admin console"),
                           workload: Workload(), lagSchedule: [LagWindow(replica: "replica1", startMs: 200, endMs: 700)],
                           elapsedMs: 1000, interrupted: false, stats: makeStats(),
                           labels: [5432: BackendLabel(name: "primary", role: "primary"), 5433: BackendLabel(name: "replica1", role: "replica")],
                           lagSamples: samples, lagEvents: events, notes: ["a <note>"])
    }

    func testTotalsBackendsAndTimeline() {
        let r = makeReport()
        XCTAssertEqual(r.totals.reads, 2)
        XCTAssertEqual(r.totals.writes, 1)
        XCTAssertEqual(r.totals.staleReads, 1)
        XCTAssertEqual(r.totals.errors, 2)
        XCTAssertFalse(r.passed)
        XCTAssertEqual(r.errors, [ErrorCount(sqlstate: "40001", count: 2, message: "could not serialize")])
        // Known backends appear even without reads; an unknown port is named by its number and
        // gets its role from pg_is_in_recovery().
        XCTAssertEqual(r.backends.map(\.name), ["primary", "port 5434", "replica1"])
        XCTAssertEqual(r.backends.first { $0.port == 5434 }?.role, "replica")
        XCTAssertEqual(r.backends.first { $0.name == "primary" }?.reads, 0)
        XCTAssertEqual(r.timeline.bucketMs, 250)
        XCTAssertEqual(r.timeline.buckets[0].readsByBackend, ["replica1": 1])
        XCTAssertEqual(r.timeline.buckets[2].stale, 1)
        XCTAssertEqual(r.anomalies.first?.backend, "port 5434")
        XCTAssertEqual(r.latency.map(\.count), [2, 1, 3])
        XCTAssertEqual(r.latency[1].p50Ms, 1.5, accuracy: 0.01)
    }

    func testJSONRoundTrip() throws {
        let r = makeReport()
        let data = try r.jsonData()
        let back = try BenchReport.decode(data)
        XCTAssertEqual(back, r)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        XCTAssertNotNil(object?["totals"])
        XCTAssertFalse(String(decoding: data, as: UTF8.self).contains("password"))
    }

    func testHTMLIsSelfContainedWithCharts() {
        let html = makeReport().html()
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertEqual(html.components(separatedBy: "<svg ").count - 1, 4, "lag, throughput, reads per backend, stale reads")
        XCTAssertEqual(html.components(separatedBy: "<svg ").count, html.components(separatedBy: "</svg>").count)
        XCTAssertFalse(html.contains("<script"))
        XCTAssertFalse(html.contains("http://") && !html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
        XCTAssertTrue(html.contains("replica1 paused"), "the pause window is shaded")
        XCTAssertTrue(html.contains("class=\"marker\""), "the stale read is marked")
        XCTAssertTrue(html.contains("a &lt;note&gt;"), "text is escaped")
    }

    func testTable() {
        let text = makeReport().table()
        XCTAssertTrue(text.contains("stale reads (read-your-writes)"))
        XCTAssertTrue(text.contains("40001"))
        XCTAssertTrue(text.contains("replica1"))
        XCTAssertTrue(text.contains("1 stale read(s)"))
    }

    func testAnomaliesBeyondTheCapAreStillCounted() {
        var stats = RunStats(bucketMs: 1000)
        stats.register(client: 1, queryProtocol: .extended)
        for i in 0..<(RunStats.anomalyCap + 5) {
            stats.recordRead(client: 1, atNs: Int64(i), latencyNs: 1000, port: 1, inRecovery: nil,
                             ref: KeyRef(owner: 1, key: 0), got: 0, verdict: ReadVerdict(staleExpected: 1))
        }
        XCTAssertEqual(stats.anomalies.count, RunStats.anomalyCap)
        XCTAssertEqual(stats.anomaliesOmitted, 5)
        XCTAssertEqual(stats.total.stale, RunStats.anomalyCap + 5)
        XCTAssertEqual(stats.clients[1]?.stale, RunStats.anomalyCap + 5)
    }

    func testChartScale() {
        var chart = SVGChart(title: "t", yLabel: "y", xMax: 10)
        chart.series = [.init(name: "a & b", color: "#000", points: [(0, 0), (5, nil), (10, 3)])]
        let svg = chart.render()
        XCTAssertTrue(svg.contains("a &amp; b"))
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2, "a missing sample breaks the line")
    }
}

final class CompareReportTests: XCTestCase {
    let input = """
        setting duration_s=10 clients=16
        arm=direct tool=pgbench round=1 tps=1000 p50_ms=0.5 p99_ms=1.0 cpu_us= failed=0
        arm=causeway tool=pgbench round=1 tps=800 p50_ms=0.6 p99_ms=1.2 cpu_us=40 failed=0
        arm=pgbouncer-session tool=pgbench round=1 tps=600 p50_ms=0.8 p99_ms=1.5 cpu_us=50 failed=0
        arm=causeway tool=pgbench round=2 tps=900 p50_ms=0.6 p99_ms=1.4 cpu_us=30 failed=1
        arm=causeway tool=causeway-bench round=1 tps=500 cpu_us=20
        """

    func testMeansAndRatios() throws {
        let r = try CompareReport(parsing: input)
        XCTAssertEqual(r.settings, ["duration_s": "10", "clients": "16"])
        XCTAssertEqual(r.measurements.count, 5)
        let causeway = try XCTUnwrap(r.rows.first { $0.tool == "pgbench" && $0.arm == "causeway" })
        XCTAssertEqual(causeway.tps, 850)
        XCTAssertEqual(causeway.vsDirect ?? 0, 0.85, accuracy: 1e-9)
        XCTAssertEqual(causeway.cpuUsPerTxn, 35)
        XCTAssertEqual(causeway.failed, 1)
        XCTAssertEqual(causeway.runs, 2)
        let bouncer = try XCTUnwrap(r.rows.first { $0.arm == "pgbouncer-session" })
        XCTAssertEqual(bouncer.vsCauseway ?? 0, 600.0 / 850, accuracy: 1e-9)
        XCTAssertEqual(bouncer.cpuVsCauseway ?? 0, 50.0 / 35, accuracy: 1e-9)
        XCTAssertNil(r.rows.first { $0.arm == "direct" }?.cpuUsPerTxn, "no proxy, no proxy CPU")
        XCTAssertEqual(r.tools, ["pgbench", "causeway-bench"])
        let table = r.table()
        XCTAssertTrue(table.contains("pgbouncer-session"))
        XCTAssertTrue(table.contains("0.71"), table)
        let html = r.html()
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 2)
        XCTAssertFalse(html.contains("<script"))
    }

    func testBadLines() {
        XCTAssertThrowsError(try CompareReport(parsing: "arm=x tps=1"))
        XCTAssertThrowsError(try CompareReport(parsing: "arm=x tool=y tps=fast"))
        XCTAssertThrowsError(try CompareReport(parsing: "nonsense"))
    }
}
