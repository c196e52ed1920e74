// The report of one run: a plain value built once at the end, from which the JSON, the HTML page
// and the terminal table are all written (so the three never disagree).

import Histogram

public struct LatencySummary: Codable, Sendable, Equatable {
    public var kind: String
    public var count: Int
    public var meanMs: Double
    public var p50Ms: Double
    public var p90Ms: Double
    public var p99Ms: Double
    public var p999Ms: Double
    public var maxMs: Double

    public init(kind: String, histogram: Histogram<UInt64>) {
        self.kind = kind
        count = Int(histogram.totalCount)
        let ms = { (us: UInt64) in Double(us) / 1000 }
        guard count > 0 else {
            meanMs = 0; p50Ms = 0; p90Ms = 0; p99Ms = 0; p999Ms = 0; maxMs = 0
            return
        }
        meanMs = histogram.mean / 1000
        p50Ms = ms(histogram.valueAtPercentile(50))
        p90Ms = ms(histogram.valueAtPercentile(90))
        p99Ms = ms(histogram.valueAtPercentile(99))
        p999Ms = ms(histogram.valueAtPercentile(99.9))
        maxMs = ms(histogram.max)
    }

    public init(kind: String, count: Int, meanMs: Double, p50Ms: Double, p90Ms: Double, p99Ms: Double, p999Ms: Double, maxMs: Double) {
        self.kind = kind
        self.count = count
        self.meanMs = meanMs
        self.p50Ms = p50Ms
        self.p90Ms = p90Ms
        self.p99Ms = p99Ms
        self.p999Ms = p999Ms
        self.maxMs = maxMs
    }
}

public struct ErrorCount: Codable, Sendable, Equatable {
    public var sqlstate: String
    public var count: Int
    public var message: String

    public init(sqlstate: String, count: Int, message: String) {
        self.sqlstate = sqlstate
        self.count = count
        self.message = message
    }
}

public struct BackendReads: Codable, Sendable, Equatable {
    public var name: String
    public var port: Int
    public var role: String
    public var reads: Int
    public var share: Double
}

public struct TimelineBucket: Codable, Sendable, Equatable {
    public var tMs: Int
    public var operations: Int
    public var reads: Int
    public var writes: Int
    public var errors: Int
    public var stale: Int
    public var regressions: Int
    /// Backend name → reads sent in this bucket.
    public var readsByBackend: [String: Int]
}

public struct Timeline: Codable, Sendable, Equatable {
    public var bucketMs: Int
    public var buckets: [TimelineBucket]
}

public struct LagEvent: Codable, Sendable, Equatable {
    public var tMs: Double
    public var replica: String
    public var action: String
    public var ok: Bool
    public var message: String?

    public init(tMs: Double, replica: String, action: String, ok: Bool, message: String? = nil) {
        self.tMs = tMs
        self.replica = replica
        self.action = action
        self.ok = ok
        self.message = message
    }
}

public struct Totals: Codable, Sendable, Equatable {
    public var operations: Int
    public var reads: Int
    public var writes: Int
    public var errors: Int
    public var staleReads: Int
    public var regressions: Int
    public var reconnects: Int
    public var operationsPerSecond: Double
    public var readsPerSecond: Double
    public var writesPerSecond: Double
}

/// Where the load went, with passwords removed.
public struct TargetDescription: Codable, Sendable, Equatable {
    /// "single" (one URL: Causeway or a plain server) or "split" (writes and reads to different URLs).
    public var mode: String
    public var url: String?
    public var writeURL: String?
    public var readURL: String?
    public var adminURL: String?
    /// How the lag timeline was sampled: "admin console", "servers" or "none".
    public var lagSource: String

    public init(mode: String, url: String? = nil, writeURL: String? = nil, readURL: String? = nil, adminURL: String? = nil, lagSource: String) {
        self.mode = mode
        self.url = url
        self.writeURL = writeURL
        self.readURL = readURL
        self.adminURL = adminURL
        self.lagSource = lagSource
    }
}

/// A backend name and role for a server port (from SHOW BACKENDS, `--replica`, or the URLs).
public struct BackendLabel: Sendable, Equatable {
    public var name: String
    public var role: String
    public init(name: String, role: String) {
        self.name = name
        self.role = role
    }
}

public struct BenchReport: Codable, Sendable, Equatable {
    public var tool = "causeway-bench"
    public var version: String
    public var startedAt: String
    public var target: TargetDescription
    public var workload: Workload
    public var lagSchedule: [LagWindow]
    public var elapsedMs: Int
    public var interrupted: Bool
    public var totals: Totals
    public var latency: [LatencySummary]
    public var errors: [ErrorCount]
    public var backends: [BackendReads]
    public var clients: [ClientTally]
    public var anomalies: [Anomaly]
    public var anomaliesOmitted: Int
    public var timeline: Timeline
    public var lagSamples: [LagSample]
    public var lagEvents: [LagEvent]
    public var notes: [String]

    public var passed: Bool { totals.staleReads == 0 && totals.regressions == 0 }

    public init(version: String, startedAt: String, target: TargetDescription, workload: Workload,
                lagSchedule: [LagWindow], elapsedMs: Int, interrupted: Bool, stats: RunStats,
                labels: [Int: BackendLabel], lagSamples: [LagSample], lagEvents: [LagEvent], notes: [String]) {
        self.version = version
        self.startedAt = startedAt
        self.target = target
        self.workload = workload
        self.lagSchedule = lagSchedule
        self.elapsedMs = elapsedMs
        self.interrupted = interrupted
        self.lagSamples = lagSamples
        self.lagEvents = lagEvents
        self.notes = notes

        func label(_ port: Int) -> BackendLabel {
            if let known = labels[port] { return known }
            let role = stats.recoveryByPort[port].map { $0 ? "replica" : "primary" } ?? "unknown"
            return BackendLabel(name: "port \(port)", role: role)
        }
        let seconds = max(Double(elapsedMs) / 1000, 0.001)
        let t = stats.total
        totals = Totals(operations: t.operations, reads: t.reads, writes: t.writes, errors: t.errors,
                        staleReads: t.stale, regressions: t.regressions, reconnects: stats.reconnects,
                        operationsPerSecond: Double(t.operations) / seconds, readsPerSecond: Double(t.reads) / seconds,
                        writesPerSecond: Double(t.writes) / seconds)
        var all = stats.readLatency
        all.add(stats.writeLatency)
        latency = [LatencySummary(kind: "read", histogram: stats.readLatency),
                   LatencySummary(kind: "write", histogram: stats.writeLatency),
                   LatencySummary(kind: "all", histogram: all)]
        errors = stats.errorsByCode.map { ErrorCount(sqlstate: $0.key, count: $0.value.count, message: $0.value.message) }
            .sorted { ($0.count, $1.sqlstate) > ($1.count, $0.sqlstate) }
        // Every backend known from the labels appears, even with 0 reads: "no reads there" is a finding.
        let ports = Set(labels.keys).union(t.readsByPort.keys)
        backends = ports.map { port in
            let l = label(port)
            let reads = t.readsByPort[port] ?? 0
            return BackendReads(name: l.name, port: port, role: l.role, reads: reads, share: t.reads > 0 ? Double(reads) / Double(t.reads) : 0)
        }.sorted { ($0.role == "primary" ? 0 : 1, $0.name) < ($1.role == "primary" ? 0 : 1, $1.name) }
        clients = stats.clients.values.sorted { $0.client < $1.client }
        anomalies = stats.anomalies.map { var a = $0; a.backend = label(a.port).name; return a }
        anomaliesOmitted = stats.anomaliesOmitted
        let bucketMs = Int(stats.bucketNs / 1_000_000)
        // Buckets past the end hold only operations that finished after the stop.
        let lastBucket = max(0, (elapsedMs + bucketMs - 1) / bucketMs)
        timeline = Timeline(bucketMs: bucketMs, buckets: stats.buckets.prefix(lastBucket + 1).enumerated().map { i, c in
            var byName: [String: Int] = [:]
            for (port, n) in c.readsByPort { byName[label(port).name, default: 0] += n }
            return TimelineBucket(tMs: i * bucketMs, operations: c.operations, reads: c.reads, writes: c.writes,
                                  errors: c.errors, stale: c.stale, regressions: c.regressions, readsByBackend: byName)
        })
    }

    /// Backend names in display order (primary first), for tables and chart legends.
    public var backendNames: [String] {
        var names = backends.map(\.name)
        for sample in lagSamples {
            for point in sample.backends where !names.contains(point.name) { names.append(point.name) }
        }
        return names
    }
}
