// The lag timeline: what each backend's lag was at a moment of the run, from the admin console's
// SHOW BACKENDS, or computed from WAL positions read on the servers themselves.

public struct LagPoint: Codable, Sendable, Equatable {
    public var name: String
    /// "primary", "replica" or "unknown".
    public var role: String
    /// The proxy's state column ("up", "draining" …), or "paused" when replay is paused.
    public var state: String?
    public var lagMs: Double?
    public var lagBytes: Int64?
    /// Reads the proxy counted on this backend so far (admin console only).
    public var reads: Int?

    public init(name: String, role: String, state: String? = nil, lagMs: Double? = nil, lagBytes: Int64? = nil, reads: Int? = nil) {
        self.name = name
        self.role = role
        self.state = state
        self.lagMs = lagMs
        self.lagBytes = lagBytes
        self.reads = reads
    }
}

public struct LagSample: Codable, Sendable, Equatable {
    public var tMs: Double
    public var backends: [LagPoint]

    public init(tMs: Double, backends: [LagPoint]) {
        self.tMs = tMs
        self.backends = backends
    }
}

/// One row of SHOW BACKENDS, parsed by column name so new columns do not break the bench.
public struct AdminBackend: Sendable, Equatable {
    public var name: String
    public var host: String
    public var port: Int
    public var role: String
    public var state: String
    public var lagMs: Double?
    public var lagBytes: Int64?
    public var reads: Int?

    /// `columns` are the result's column names, `row` one row of text values.
    public init?(columns: [String], row: [String?]) {
        func field(_ name: String) -> String? {
            guard let i = columns.firstIndex(of: name), i < row.count else { return nil }
            return row[i]
        }
        guard let name = field("name"), let address = field("address"),
              let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...])
        else { return nil }
        self.name = name
        host = String(address[..<colon])
        self.port = port
        role = field("role") ?? "unknown"
        state = field("state") ?? "unknown"
        lagMs = field("lag_ms").flatMap { Double($0) }
        lagBytes = field("lag_bytes").flatMap { Int64($0) }
        reads = field("reads").flatMap { Int($0) }
    }

    public var point: LagPoint {
        LagPoint(name: name, role: role, state: state, lagMs: role == "primary" ? 0 : lagMs,
                 lagBytes: role == "primary" ? 0 : lagBytes, reads: reads)
    }
}

public enum LSN {
    /// "16/B374D848" → 0x16_B374D848.
    public static func parse(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16),
              high <= 0xFFFF_FFFF, low <= 0xFFFF_FFFF else { return nil }
        return high << 32 | low
    }
}

/// Lag in milliseconds without trusting server clocks (the same idea as Causeway's monitor): keep
/// the times at which the primary was seen at each WAL position; a replica that has replayed up
/// to R is as far behind as the time since the primary was first seen beyond R.
public struct LagEstimator: Sendable {
    private var history: [(tMs: Double, lsn: UInt64)] = []
    private let keepMs: Double

    public init(keepMs: Double = 600_000) { self.keepMs = keepMs }

    public mutating func primary(at tMs: Double, lsn: UInt64) {
        if let last = history.last, last.lsn >= lsn { return }
        history.append((tMs, lsn))
        if let first = history.first, tMs - first.tMs > keepMs, history.count > 2 { history.removeFirst() }
    }

    /// The lag of a replica at `tMs` that has replayed up to `replay`.
    public func lagMs(at tMs: Double, replay: UInt64) -> Double {
        guard let firstBeyond = history.first(where: { $0.lsn > replay }) else { return 0 }
        return max(0, tMs - firstBeyond.tMs)
    }

    public func lagBytes(replay: UInt64) -> Int64 {
        guard let last = history.last, last.lsn > replay else { return 0 }
        return Int64(last.lsn - replay)
    }
}
