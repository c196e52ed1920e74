// The monitor's state as pure values: what a poll returns, what it means for each backend, and
// the `Topology` that follows. The libuv/libpq side only feeds events in and publishes the result.

import Router

/// What one poll query returned for one backend.
public struct PollSample: Sendable, Equatable {
    /// `pg_is_in_recovery()`.
    public var inRecovery: Bool
    /// Primary only: `pg_current_wal_lsn()`.
    public var currentLSN: LSN?
    /// Replica only: `pg_last_wal_replay_lsn()`.
    public var replayLSN: LSN?
    /// Replica only: `pg_last_wal_receive_lsn()` (NULL while not streaming).
    public var receiveLSN: LSN?
    /// Replica only: `pg_is_wal_replay_paused()`.
    public var replayPaused: Bool
    /// Primary only: the timeline it writes (from its current WAL file name).
    public var timeline: UInt32?
    /// Primary only, when the monitor user may read it: `pg_control_system().system_identifier`.
    public var systemIdentifier: UInt64?

    public init(inRecovery: Bool, currentLSN: LSN? = nil, replayLSN: LSN? = nil, receiveLSN: LSN? = nil, replayPaused: Bool = false) {
        self.inRecovery = inRecovery
        self.currentLSN = currentLSN
        self.replayLSN = replayLSN
        self.receiveLSN = receiveLSN
        self.replayPaused = replayPaused
    }

    /// The single poll statement. `pg_current_wal_lsn()` raises an error on a standby and
    /// `pg_is_wal_replay_paused()` on a primary, so both sit behind one evaluation of
    /// `pg_is_in_recovery()` (CASE does not evaluate the branch it does not take).
    public static let query = """
        SELECT r.rec, \
        CASE WHEN r.rec THEN NULL ELSE pg_catalog.pg_current_wal_lsn() END, \
        CASE WHEN r.rec THEN pg_catalog.pg_last_wal_replay_lsn() END, \
        CASE WHEN r.rec THEN pg_catalog.pg_last_wal_receive_lsn() END, \
        CASE WHEN r.rec THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END, \
        CASE WHEN r.rec THEN NULL ELSE pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) END, \
        CASE WHEN NOT r.rec AND pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') \
        THEN (SELECT c.system_identifier FROM pg_catalog.pg_control_system() AS c)::text END \
        FROM (SELECT pg_catalog.pg_is_in_recovery() AS rec) AS r
        """

    /// Parses the single row of `query` (text format: `t`/`f`, LSNs as `X/X`, NULL as nil).
    /// Returns nil when the row does not have that shape.
    public init?(row: [String?]) {
        guard row.count == 5 || row.count == 7, let recovery = Self.bool(row[0]) else { return nil }
        func lsn(_ text: String?) -> LSN?? {
            guard let text else { return .some(nil) }
            guard let value = LSN(parsing: text) else { return nil }
            return .some(value)
        }
        guard let current = lsn(row[1]), let replay = lsn(row[2]), let receive = lsn(row[3]) else { return nil }
        inRecovery = recovery
        currentLSN = current
        replayLSN = replay
        receiveLSN = receive
        replayPaused = row[4].flatMap(Self.bool) ?? false
        if row.count == 7 {
            timeline = row[5].flatMap { UInt32($0, radix: 16) }
            systemIdentifier = row[6].flatMap { UInt64($0) }
        }
        if !recovery && currentLSN == nil { return nil }
    }

    private static func bool(_ text: String?) -> Bool? {
        switch text {
        case "t": true
        case "f": false
        default: nil
        }
    }
}

/// Delay before the next reconnect attempt: doubles from `initialMs` up to `maxMs`, and starts
/// over after a successful poll.
public struct ReconnectBackoff: Sendable, Equatable {
    public let initialMs: Int
    public let maxMs: Int
    public private(set) var failures = 0

    public init(initialMs: Int = 100, maxMs: Int = 5000) {
        self.initialMs = max(1, initialMs)
        self.maxMs = max(self.initialMs, maxMs)
    }

    /// Counts a failure and returns how long to wait before trying again.
    public mutating func nextDelayMs() -> Int {
        let shift = min(failures, 30)
        failures += 1
        let delay = initialMs.multipliedReportingOverflow(by: 1 << shift)
        return delay.overflow ? maxMs : min(delay.partialValue, maxMs)
    }

    public mutating func reset() { failures = 0 }
}

/// Something worth a log line.
public enum MonitorEvent: Sendable, Equatable, CustomStringConvertible {
    /// First successful poll, or the first after being down.
    case up(backend: String, role: BackendRoleObserved)
    /// A connect error, query error or timeout on a backend that was not already down.
    case down(backend: String, error: String)
    /// `pg_is_in_recovery()` changed: a replica promoted (failover) or a primary now in recovery.
    case roleChanged(backend: String, from: BackendRoleObserved, to: BackendRoleObserved)
    /// The configuration says one role, the server reports the other (the server wins).
    case declaredRoleMismatch(backend: String, declared: DeclaredRole, observed: BackendRoleObserved)
    /// More than one reachable backend reports being primary.
    case multiplePrimaries(backends: [String])
    /// Back to at most one primary.
    case multiplePrimariesResolved
    /// The primary whose WAL positions anchor lag measurement changed; the history starts over.
    case lagReferenceChanged(backend: String)

    public var description: String {
        switch self {
        case let .up(backend, role):
            "event=backend_up backend=\(backend) role=\(role.rawValue)"
        case let .down(backend, error):
            "event=backend_down backend=\(backend) error=\(Self.quoted(error))"
        case let .roleChanged(backend, from, to):
            to == .primary
                ? "event=failover backend=\(backend) from=\(from.rawValue) to=\(to.rawValue) detail=\"backend now reports primary; writes follow it\""
                : "event=role_changed backend=\(backend) from=\(from.rawValue) to=\(to.rawValue)"
        case let .declaredRoleMismatch(backend, declared, observed):
            "event=role_mismatch backend=\(backend) declared=\(declared.rawValue) observed=\(observed.rawValue) detail=\"using the observed role\""
        case let .multiplePrimaries(backends):
            "event=multiple_primaries backends=\(backends.joined(separator: ",")) detail=\"writes are refused until only one primary remains\""
        case .multiplePrimariesResolved:
            "event=multiple_primaries_resolved"
        case let .lagReferenceChanged(backend):
            "event=lag_reference_changed primary=\(backend)"
        }
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for character in text {
            switch character {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n", "\r": out += " "
            default: out.append(character)
            }
        }
        return out + "\""
    }
}

/// Everything the monitor knows, updated by poll results and failures; `snapshot(now:)` turns it
/// into a `Topology`. Backends are addressed by their position in the `backends` array given to
/// `init` (which is also their `index` when the configuration numbers them 0, 1, 2…). A reload
/// appends backends and retires others; positions never shift, so a poll answering late for a
/// retired backend cannot land on another one.
public struct MonitorModel: Sendable {
    public private(set) var backends: [BackendStatus]
    public private(set) var calculator: LagCalculator
    public var volatileFunctions: Set<String> = []
    /// The primary's timeline and the cluster's system identifier, once seen.
    public var timeline: UInt32?
    public var systemIdentifier: UInt64?
    public private(set) var multiplePrimaries = false
    /// Position of the primary whose WAL positions are in the lag history.
    public private(set) var lagReference: Int?

    private var declared: [DeclaredRole]
    private var observed: [Bool]
    /// Positions taken out by a reload: kept so positions never shift, left out of snapshots.
    public private(set) var retired: Set<Int> = []

    public init(backends: [MonitoredBackend], calculator: LagCalculator = LagCalculator()) {
        self.backends = backends.map {
            BackendStatus(
                index: $0.index, name: $0.name, zone: $0.zone, weight: $0.weight,
                role: $0.declaredRole.assumedRole, health: .unknown)
        }
        self.declared = backends.map(\.declaredRole)
        self.observed = Array(repeating: false, count: backends.count)
        self.calculator = calculator
    }

    /// Adds a backend at the next position (returned); it shows as not yet polled.
    public mutating func add(_ backend: MonitoredBackend) -> Int {
        backends.append(BackendStatus(
            index: backend.index, name: backend.name, zone: backend.zone, weight: backend.weight,
            role: backend.declaredRole.assumedRole, health: .unknown))
        declared.append(backend.declaredRole)
        observed.append(false)
        return backends.count - 1
    }

    /// Takes backend `position` out of the cluster: it leaves snapshots, primary detection and
    /// the lag history, and later polls for it are ignored.
    public mutating func retire(_ position: Int) -> [MonitorEvent] {
        guard backends.indices.contains(position), retired.insert(position).inserted else { return [] }
        calculator.forgetReplica(position)
        if lagReference == position { lagReference = nil }
        return updatePrimaries()
    }

    /// A reload changed what the configuration says of backend `position`, not where it is.
    public mutating func update(_ position: Int, zone: String, weight: Int, declaredRole: DeclaredRole) {
        guard backends.indices.contains(position), !retired.contains(position) else { return }
        backends[position].zone = zone
        backends[position].weight = weight
        declared[position] = declaredRole
        if !observed[position] { backends[position].role = declaredRole.assumedRole }
    }

    /// Position of the one live primary, if there is exactly one.
    public var livePrimary: Int? {
        let live = backends.indices.filter {
            backends[$0].role == .primary && backends[$0].health == .up && !retired.contains($0)
        }
        return live.count == 1 ? live[0] : nil
    }

    /// A poll of backend `position` sent at `sentAt` answered `sample` at `receivedAt`.
    public mutating func recordPoll(_ position: Int, _ sample: PollSample, sentAt: UInt64, receivedAt: UInt64) -> [MonitorEvent] {
        guard backends.indices.contains(position), !retired.contains(position) else { return [] }
        var events: [MonitorEvent] = []
        var status = backends[position]
        let role: BackendRoleObserved = sample.inRecovery ? .replica : .primary
        if observed[position], status.role != role {
            events.append(.roleChanged(backend: status.name, from: status.role, to: role))
        }
        if status.health != .up {
            events.append(.up(backend: status.name, role: role))
        }
        let expected = declared[position].assumedRole
        if expected != .unknown, expected != role, !observed[position] || status.role != role {
            events.append(.declaredRoleMismatch(backend: status.name, declared: declared[position], observed: role))
        }
        observed[position] = true
        status.role = role
        status.health = .up
        status.lastError = nil
        if role == .primary {
            status.currentLSN = sample.currentLSN
            if let timeline = sample.timeline { self.timeline = timeline }
            if let identifier = sample.systemIdentifier { systemIdentifier = identifier }
            status.replayLSN = nil
            status.receiveLSN = nil
            status.replayPaused = false
            status.lagBytes = 0
            status.lagMs = 0
            status.replayRateBytesPerSecond = 0
            status.catchUpEstimateMs = nil
            calculator.forgetReplica(position)
        } else {
            status.currentLSN = nil
            status.replayLSN = sample.replayLSN
            status.receiveLSN = sample.receiveLSN
            status.replayPaused = sample.replayPaused
            if let replay = sample.replayLSN {
                calculator.recordReplay(replica: position, lsn: replay, at: receivedAt)
            }
            if lagReference == position { lagReference = nil }
        }
        backends[position] = status
        events += updatePrimaries()
        if role == .primary, let lsn = sample.currentLSN {
            if lagReference != position, canTakeOverLagReference(position) {
                if lagReference != nil || calculator.sampleCount > 0 {
                    events.append(.lagReferenceChanged(backend: status.name))
                    calculator.resetHistory()
                }
                lagReference = position
            }
            // The time the query was sent: the position is at least as new as that, so lags
            // measured against it err on the long side, by at most one round trip.
            if lagReference == position { calculator.recordPrimary(lsn, at: sentAt) }
        }
        return events
    }

    /// Backend `position` failed (connect error, query error, timeout). It keeps its last role.
    public mutating func recordFailure(_ position: Int, error: String) -> [MonitorEvent] {
        guard backends.indices.contains(position), !retired.contains(position) else { return [] }
        var events: [MonitorEvent] = []
        if backends[position].health != .down {
            events.append(.down(backend: backends[position].name, error: error))
        }
        backends[position].health = .down
        backends[position].lastError = error
        events += updatePrimaries()
        return events
    }

    /// The cluster as of `now`: lags are computed at this instant, so they keep growing between
    /// polls of a stalled replica. The generation is left at 0 (the `TopologyBox` numbers it).
    public mutating func snapshot(now: UInt64) -> Topology {
        for position in backends.indices where backends[position].role == .replica && !retired.contains(position) {
            guard let replay = backends[position].replayLSN else { continue }
            let lag = calculator.lag(replica: position, replay: replay, now: now)
            backends[position].lagBytes = lag.bytes
            backends[position].lagMs = lag.ms
            backends[position].replayRateBytesPerSecond = lag.replayRateBytesPerSecond
            // A paused replica will not catch up until someone resumes it.
            backends[position].catchUpEstimateMs =
                backends[position].replayPaused && lag.bytes > 0 ? nil : lag.catchUpEstimateMs
        }
        let current = retired.isEmpty ? backends : backends.indices.filter { !retired.contains($0) }.map { backends[$0] }
        var topology = Topology(backends: current, volatileFunctions: volatileFunctions, multiplePrimaries: multiplePrimaries)
        topology.timeline = timeline
        topology.systemIdentifier = systemIdentifier
        return topology
    }

    /// A primary may anchor the lag history when nothing else does, or the current anchor is no
    /// longer a live primary. With two live primaries the first keeps it.
    private func canTakeOverLagReference(_ position: Int) -> Bool {
        guard let current = lagReference, current != position else { return true }
        return !(backends[current].role == .primary && backends[current].health == .up && !retired.contains(current))
    }

    private mutating func updatePrimaries() -> [MonitorEvent] {
        let live = backends.indices.filter { backends[$0].role == .primary && backends[$0].health == .up && !retired.contains($0) }
            .map { backends[$0] }
        if live.count > 1 && !multiplePrimaries {
            multiplePrimaries = true
            return [.multiplePrimaries(backends: live.map(\.name))]
        }
        if live.count <= 1 && multiplePrimaries {
            multiplePrimaries = false
            return [.multiplePrimariesResolved]
        }
        return []
    }
}
