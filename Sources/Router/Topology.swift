// Value types describing the cluster as the LagMonitor last saw it. The monitor publishes a new
// immutable `Topology` after every poll; workers read the latest one at each routing decision.

/// A WAL position (PostgreSQL `pg_lsn`), written `16/B374D848`: the high and low 32 bits in hex.
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's text form `XXXXXXXX/XXXXXXXX` (1–8 hex digits each side, either case).
    /// Returns nil for anything else, including surrounding spaces.
    public init?(parsing text: String) {
        var high: UInt64 = 0, low: UInt64 = 0
        var digits = 0
        var sawSlash = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: "/") {
                guard !sawSlash, digits > 0 else { return nil }
                sawSlash = true
                digits = 0
                continue
            }
            guard let nibble = LSN.hexValue(byte), digits < 8 else { return nil }
            digits += 1
            if sawSlash { low = low << 4 | nibble } else { high = high << 4 | nibble }
        }
        guard sawSlash, digits > 0 else { return nil }
        self.value = high << 32 | low
    }

    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/"
            + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.value < rhs.value }

    private static func hexValue(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

/// What `pg_is_in_recovery()` last said (or `unknown` before the first successful poll).
public enum BackendRoleObserved: String, Sendable {
    case primary, replica, unknown
}

public enum BackendHealth: String, Sendable {
    case up, down, unknown
}

/// One backend as the monitor last observed it.
public struct BackendStatus: Sendable, Equatable {
    /// Stable position of the backend in the configuration; `RouteDecision.target` and the
    /// `load` array passed to `Router.route` use it.
    public var index: Int
    public var name: String
    public var zone: String
    public var weight: Int
    public var role: BackendRoleObserved
    public var health: BackendHealth
    /// An operator asked to move traffic off this backend (`DRAIN`); no new units go there.
    public var draining: Bool
    /// Primary: `pg_current_wal_lsn()`.
    public var currentLSN: LSN?
    /// Replica: `pg_last_wal_replay_lsn()` — what reads on it can see.
    public var replayLSN: LSN?
    /// Replica: `pg_last_wal_receive_lsn()`.
    public var receiveLSN: LSN?
    public var lagBytes: UInt64
    /// Lag on the proxy's own monotonic clock (design §7); 0 when caught up.
    public var lagMs: Double
    public var replayPaused: Bool
    public var replayRateBytesPerSecond: Double
    public var catchUpEstimateMs: Double?
    public var lastError: String?

    public init(
        index: Int,
        name: String,
        zone: String = "",
        weight: Int = 1,
        role: BackendRoleObserved,
        health: BackendHealth = .up,
        draining: Bool = false,
        currentLSN: LSN? = nil,
        replayLSN: LSN? = nil,
        receiveLSN: LSN? = nil,
        lagBytes: UInt64 = 0,
        lagMs: Double = 0,
        replayPaused: Bool = false,
        replayRateBytesPerSecond: Double = 0,
        catchUpEstimateMs: Double? = nil,
        lastError: String? = nil
    ) {
        self.index = index
        self.name = name
        self.zone = zone
        self.weight = weight
        self.role = role
        self.health = health
        self.draining = draining
        self.currentLSN = currentLSN
        self.replayLSN = replayLSN
        self.receiveLSN = receiveLSN
        self.lagBytes = lagBytes
        self.lagMs = lagMs
        self.replayPaused = replayPaused
        self.replayRateBytesPerSecond = replayRateBytesPerSecond
        self.catchUpEstimateMs = catchUpEstimateMs
        self.lastError = lastError
    }
}

/// An immutable snapshot of the cluster.
public struct Topology: Sendable {
    /// Increases with every snapshot the monitor publishes.
    public var generation: UInt64
    public var backends: [BackendStatus]
    /// Names (`pg_proc.proname`) of user functions declared VOLATILE, loaded from the primary.
    public var volatileFunctions: Set<String>
    /// Set by the monitor when more than one reachable backend reports `pg_is_in_recovery() = false`.
    public var multiplePrimaries: Bool
    /// The primary's timeline and the cluster's system identifier (nil until the monitor has
    /// read them); causal tokens carry both so one from another cluster is refused.
    public var timeline: UInt32?
    public var systemIdentifier: UInt64?

    public init(
        generation: UInt64 = 0,
        backends: [BackendStatus],
        volatileFunctions: Set<String> = [],
        multiplePrimaries: Bool = false
    ) {
        self.generation = generation
        self.backends = backends
        self.volatileFunctions = volatileFunctions
        self.multiplePrimaries = multiplePrimaries
    }

    /// The primary: the one backend reporting that role that is not down. If every backend
    /// reporting primary is down, the first of them (so errors can name it); nil when none reports
    /// primary or when two live backends do.
    public var primary: BackendStatus? {
        var live: BackendStatus?
        var firstDown: BackendStatus?
        for backend in backends where backend.role == .primary {
            if backend.health == .down {
                if firstDown == nil { firstDown = backend }
            } else {
                if live != nil { return nil }
                live = backend
            }
        }
        return live ?? firstDown
    }

    /// True when the monitor flagged two primaries or two live backends report being primary.
    public var hasMultiplePrimaries: Bool {
        multiplePrimaries || backends.lazy.filter { $0.role == .primary && $0.health != .down }.count > 1
    }

    /// The backend whose `index` is `index`, if it is in this snapshot.
    public func backend(at index: Int) -> BackendStatus? {
        if backends.indices.contains(index), backends[index].index == index { return backends[index] }
        return backends.first { $0.index == index }
    }
}

/// A session's consistency position in a form that can travel between connections, proxies and
/// data centres: `<timeline>:<LSN>:<system identifier>`, e.g. `1:0/5EEE588:7439201128390412345`.
/// The LSN alone is meaningful only within one cluster, hence the identifier; the timeline tells
/// whether it may predate a failover.
public struct CausalToken: Sendable, Equatable, CustomStringConvertible {
    public var timeline: UInt32
    public var lsn: LSN
    public var systemIdentifier: UInt64

    public init(timeline: UInt32, lsn: LSN, systemIdentifier: UInt64) {
        self.timeline = timeline
        self.lsn = lsn
        self.systemIdentifier = systemIdentifier
    }

    public init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let timeline = UInt32(parts[0]), timeline > 0,
              let lsn = LSN(parsing: String(parts[1])), let identifier = UInt64(parts[2]) else { return nil }
        self.init(timeline: timeline, lsn: lsn, systemIdentifier: identifier)
    }

    public var description: String { "\(timeline):\(lsn):\(systemIdentifier)" }
}
