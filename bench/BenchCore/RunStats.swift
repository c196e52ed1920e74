// What one worker thread measured. Each worker fills its own (no sharing on the hot path); the
// controller merges them once the workers have stopped. Times are nanoseconds since the start of
// the load.

import Histogram

public struct ErrorTally: Codable, Sendable, Equatable {
    public var count: Int
    /// The first message seen with this SQLSTATE, so a reader knows what the code meant here.
    public var message: String
}

public struct TimelineCounts: Sendable, Equatable {
    public var operations = 0
    public var reads = 0
    public var writes = 0
    public var errors = 0
    public var stale = 0
    public var regressions = 0
    public var readsByPort: [Int: Int] = [:]

    public init() {}

    public mutating func add(_ other: TimelineCounts) {
        operations += other.operations
        reads += other.reads
        writes += other.writes
        errors += other.errors
        stale += other.stale
        regressions += other.regressions
        readsByPort.merge(other.readsByPort, uniquingKeysWith: +)
    }
}

public struct ClientTally: Codable, Sendable, Equatable {
    public var client: Int
    public var queryProtocol: QueryProtocol
    public var reads = 0
    public var writes = 0
    public var stale = 0
    public var regressions = 0
    public var errors = 0
    public var reconnects = 0

    public init(client: Int, queryProtocol: QueryProtocol) {
        self.client = client
        self.queryProtocol = queryProtocol
    }

    enum CodingKeys: String, CodingKey {
        case client, queryProtocol = "protocol", reads, writes, stale, regressions, errors, reconnects
    }
}

/// A stale read or a monotonic regression, kept for the report's markers and list.
public struct Anomaly: Codable, Sendable, Equatable {
    public var tMs: Double
    public var client: Int
    public var owner: Int
    public var key: Int
    /// "stale", "regression" or "stale+regression".
    public var kind: String
    /// What the read had to return at least.
    public var expected: Int64
    public var got: Int64
    public var port: Int
    /// Filled in by the report: the backend name for `port`.
    public var backend: String?
}

public struct RunStats: Sendable {
    public static let anomalyCap = 2000

    public let bucketNs: Int64
    public private(set) var readLatency = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    public private(set) var writeLatency = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    public private(set) var total = TimelineCounts()
    public private(set) var buckets: [TimelineCounts] = []
    public private(set) var errorsByCode: [String: ErrorTally] = [:]
    /// What `pg_is_in_recovery()` last said on each port that answered a read.
    public private(set) var recoveryByPort: [Int: Bool] = [:]
    public private(set) var anomalies: [Anomaly] = []
    /// Anomalies counted but not kept in `anomalies` (beyond the cap); the totals include them.
    public private(set) var anomaliesOmitted = 0
    public private(set) var clients: [Int: ClientTally] = [:]
    public private(set) var reconnects = 0

    public init(bucketMs: Int) {
        bucketNs = Int64(bucketMs) * 1_000_000
        readLatency.autoResize = true
        writeLatency.autoResize = true
    }

    public mutating func register(client: Int, queryProtocol: QueryProtocol) {
        clients[client] = ClientTally(client: client, queryProtocol: queryProtocol)
    }

    private mutating func bucket(_ atNs: Int64, _ change: (inout TimelineCounts) -> Void) {
        change(&total)
        let index = Int(max(0, atNs) / bucketNs)
        if index >= buckets.count { buckets.append(contentsOf: repeatElement(TimelineCounts(), count: index - buckets.count + 1)) }
        change(&buckets[index])
    }

    public mutating func recordRead(client: Int, atNs: Int64, latencyNs: Int64, port: Int, inRecovery: Bool?,
                                    ref: KeyRef, got: Int64, verdict: ReadVerdict) {
        _ = readLatency.record(UInt64(max(1, latencyNs / 1000)))
        if let inRecovery { recoveryByPort[port] = inRecovery }
        bucket(atNs) { counts in
            counts.operations += 1
            counts.reads += 1
            counts.readsByPort[port, default: 0] += 1
            if verdict.isStale { counts.stale += 1 }
            if verdict.isRegression { counts.regressions += 1 }
        }
        clients[client]?.reads += 1
        if verdict.isStale { clients[client]?.stale += 1 }
        if verdict.isRegression { clients[client]?.regressions += 1 }
        guard !verdict.isOK else { return }
        guard anomalies.count < Self.anomalyCap else {
            anomaliesOmitted += 1
            return
        }
        let kind = verdict.isStale && verdict.isRegression ? "stale+regression" : verdict.isStale ? "stale" : "regression"
        anomalies.append(Anomaly(tMs: Double(atNs) / 1e6, client: client, owner: ref.owner, key: ref.key, kind: kind,
                                 expected: max(verdict.staleExpected ?? 0, verdict.regressionFrom ?? 0), got: got, port: port))
    }

    public mutating func recordWrite(client: Int, atNs: Int64, latencyNs: Int64) {
        _ = writeLatency.record(UInt64(max(1, latencyNs / 1000)))
        bucket(atNs) { counts in
            counts.operations += 1
            counts.writes += 1
        }
        clients[client]?.writes += 1
    }

    /// `code` is the SQLSTATE, or a word such as "connection" when libpq reported no SQLSTATE.
    public mutating func recordError(client: Int, atNs: Int64, code: String, message: String) {
        bucket(atNs) { $0.errors += 1 }
        clients[client]?.errors += 1
        if errorsByCode[code] == nil {
            errorsByCode[code] = ErrorTally(count: 1, message: message)
        } else {
            errorsByCode[code]?.count += 1
        }
    }

    public mutating func recordReconnect(client: Int) {
        reconnects += 1
        clients[client]?.reconnects += 1
    }

    public mutating func merge(_ other: RunStats) {
        readLatency.add(other.readLatency)
        writeLatency.add(other.writeLatency)
        total.add(other.total)
        if other.buckets.count > buckets.count {
            buckets.append(contentsOf: repeatElement(TimelineCounts(), count: other.buckets.count - buckets.count))
        }
        for (i, counts) in other.buckets.enumerated() { buckets[i].add(counts) }
        for (code, tally) in other.errorsByCode {
            if let mine = errorsByCode[code] {
                errorsByCode[code] = ErrorTally(count: mine.count + tally.count, message: mine.message)
            } else {
                errorsByCode[code] = tally
            }
        }
        recoveryByPort.merge(other.recoveryByPort) { _, theirs in theirs }
        let room = max(0, Self.anomalyCap - anomalies.count)
        anomalies += other.anomalies.prefix(room)
        anomaliesOmitted += other.anomaliesOmitted + max(0, other.anomalies.count - room)
        anomalies.sort { $0.tMs < $1.tMs }
        clients.merge(other.clients) { mine, _ in mine }
        reconnects += other.reconnects
    }
}
