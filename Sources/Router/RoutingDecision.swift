// Where a request unit goes, given its classification, the session's state, the latest topology
// and the routing settings (design §5–6). Pure: no clocks, no I/O.

public enum FallbackMode: String, Sendable, CaseIterable {
    /// No eligible replica: read from the primary.
    case primary
    /// No eligible replica but one could catch up: wait (up to causal_wait_ms), then the primary.
    case wait
    /// No eligible replica: refuse the read with 08006.
    case error
}

public struct RoutingPolicy: Sendable, Equatable {
    /// Default for new sessions; `Router.route` uses `SessionRouting.consistency`.
    public var consistency: ConsistencyMode
    public var maxLagMs: Int
    public var maxLagBytes: UInt64
    public var fallback: FallbackMode
    /// The proxy's own zone; replicas there are preferred. Empty: no preference.
    public var zone: String
    /// With `fallback = primary`, a read blocked only by the session floor still asks the caller
    /// to wait this long before using the primary (design §6). 0: go to the primary at once.
    public var causalWaitMs: Int

    public init(
        consistency: ConsistencyMode = .session,
        maxLagMs: Int = 1000,
        maxLagBytes: UInt64 = 16_777_216,
        fallback: FallbackMode = .primary,
        zone: String = "",
        causalWaitMs: Int = 0
    ) {
        self.consistency = consistency
        self.maxLagMs = maxLagMs
        self.maxLagBytes = maxLagBytes
        self.fallback = fallback
        self.zone = zone
        self.causalWaitMs = causalWaitMs
    }
}

/// The routing-relevant state of one client session.
public struct SessionRouting: Sendable, Equatable {
    /// The last ReadyForQuery said `T` or `E`.
    public var inTransaction: Bool
    /// Backend index serving the open transaction; everything stays there until it ends.
    public var transactionBackend: Int?
    public var pin: PinReason?
    /// `SET causeway.route`.
    public var hint: RouteHint
    /// The replica this session last read from; kept while it stays eligible.
    public var stickyReplica: Int?
    /// Read-your-writes / monotonic-reads floor (session consistency only).
    public var floor: LSN?
    public var consistency: ConsistencyMode
    /// `default_transaction_read_only` is on: a BEGIN without an access mode is read-only.
    public var defaultTransactionReadOnly: Bool

    public init(
        inTransaction: Bool = false,
        transactionBackend: Int? = nil,
        pin: PinReason? = nil,
        hint: RouteHint = .auto,
        stickyReplica: Int? = nil,
        floor: LSN? = nil,
        consistency: ConsistencyMode = .session,
        defaultTransactionReadOnly: Bool = false
    ) {
        self.inTransaction = inTransaction
        self.transactionBackend = transactionBackend
        self.pin = pin
        self.hint = hint
        self.stickyReplica = stickyReplica
        self.floor = floor
        self.consistency = consistency
        self.defaultTransactionReadOnly = defaultTransactionReadOnly
    }
}

/// Why a unit went where it went (metrics label: the raw value).
public enum RouteReason: String, Sendable, CaseIterable {
    case write, read, lag, floor, pinned, hint, drain, fallback, transaction, strong
    case noReplica = "no_replica"
}

public struct RoutingError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// No backend reports being primary, or it is down.
        case noPrimary
        /// Two live backends report being primary.
        case multiplePrimaries
        /// A write was forced to a replica by a hint or `SET causeway.route = replica`.
        case writeOnReplica
        /// No replica can take the read (fallback = error, or forced to a replica).
        case noReplica
        /// The backend holding the session's open transaction left the topology.
        case transactionBackendGone
    }

    public var kind: Kind
    /// 08006 for availability, 25006 for a write forced to a replica.
    public var sqlState: String
    public var message: String

    public init(kind: Kind, sqlState: String, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String { "\(sqlState): \(message)" }
}

public struct RouteDecision: Sendable, Equatable {
    /// Backend index to use; nil only with an error.
    public var target: Int?
    public var isPrimary: Bool
    public var reason: RouteReason
    /// When set, answer the client with this error instead (unless `shouldWait` and time remains).
    public var error: RoutingError?
    /// No replica can take the read yet but one may catch up: wait (bounded by causal_wait_ms)
    /// and route again; when the time is up, use `target` (the primary) or report `error`.
    public var shouldWait: Bool

    public init(target: Int?, isPrimary: Bool, reason: RouteReason, error: RoutingError? = nil, shouldWait: Bool = false) {
        self.target = target
        self.isPrimary = isPrimary
        self.reason = reason
        self.error = error
        self.shouldWait = shouldWait
    }
}

/// Why a replica cannot take a read right now.
public enum ReplicaIneligibility: Sendable, Equatable, CustomStringConvertible {
    case down(lastError: String?)
    case healthUnknown
    case draining
    case lagging(ms: Double, bytes: UInt64, maxMs: Int, maxBytes: UInt64)
    /// Replay is paused while the replica is behind: it will not catch up on its own.
    case replayPaused(bytesBehind: UInt64)
    case behindFloor(replay: LSN?, floor: LSN)

    public var description: String {
        switch self {
        case .down(let lastError): "down" + (lastError.map { " (\($0))" } ?? "")
        case .healthUnknown: "not checked yet"
        case .draining: "draining"
        case let .lagging(ms, bytes, maxMs, maxBytes):
            ms > Double(maxMs)
                ? "lagging \(Int(ms.rounded())) ms (max \(maxMs) ms)"
                : "lagging \(bytes) bytes (max \(maxBytes) bytes)"
        case .replayPaused(let bytes): "replay paused \(bytes) bytes behind"
        case let .behindFloor(replay, floor):
            "behind the session's floor (replayed \(replay?.description ?? "unknown") < \(floor))"
        }
    }

    /// How close the replica came to being eligible: down < draining < lagging < behind floor.
    var stage: Int {
        switch self {
        case .down, .healthUnknown: 0
        case .draining: 1
        case .lagging, .replayPaused: 2
        case .behindFloor: 3
        }
    }
}

public enum Router {
    /// Chooses the backend for one request unit. `load[i]` is the number of outstanding requests
    /// on backend index `i` (missing entries count as 0). In order of precedence:
    ///
    /// 1. An open transaction stays on `transactionBackend` (even a write in a read-only
    ///    transaction on a replica: the server reports that itself, as PostgreSQL would).
    /// 2. A replica hint (the query's comment, else the session's `causeway.route`): a write is
    ///    refused with 25006; a read goes to a replica unless the session is pinned.
    /// 3. Writes (including calls of `topology.volatileFunctions`) → primary.
    /// 4. Pinned session, or a query that pins → primary.
    /// 5. Primary hint → primary. Strong consistency → primary.
    /// 6. A query leaving a transaction open that is not read-only (declared, or by
    ///    `defaultTransactionReadOnly`) → primary.
    /// 7. Otherwise a read: the sticky replica if still eligible, else the best eligible replica
    ///    (zone, weight, load, index), else the fallback mode.
    public static func route(
        _ classification: Classification,
        session: SessionRouting,
        topology: Topology,
        policy: RoutingPolicy,
        load: [Int]
    ) -> RouteDecision {
        // An open transaction stays where it started, whatever it does next.
        if session.inTransaction {
            guard let index = session.transactionBackend else {
                return primary(.transaction, topology, forWrite: true)
            }
            guard let backend = topology.backend(at: index) else {
                return failure(.transactionBackendGone, "08006",
                               "the backend serving this session's open transaction (#\(index)) is no longer configured",
                               reason: .transaction)
            }
            return RouteDecision(target: index, isPrimary: backend.role == .primary, reason: .transaction)
        }

        let isWrite = classification.isWrite(volatileFunctions: topology.volatileFunctions)
        let hint = classification.hint ?? session.hint
        let pinned = session.pin != nil || classification.pin != nil

        if hint == .replica {
            let source = classification.hint == .replica
                ? "the query's /* causeway: replica */ hint" : "SET causeway.route = replica"
            if isWrite {
                return failure(.writeOnReplica, "25006",
                               "cannot execute a write on a replica: the query was routed to replicas by \(source); "
                                   + "use /* causeway: primary */ or SET causeway.route = auto for writes",
                               reason: .hint)
            }
            if !pinned {
                return read(session, topology, policy, load, forcedBy: source)
            }
        }
        if isWrite { return primary(.write, topology, forWrite: true) }
        if pinned { return primary(.pinned, topology, forWrite: false) }
        if hint == .primary { return primary(.hint, topology, forWrite: false) }
        if session.consistency == .strong { return primary(.strong, topology, forWrite: false) }
        if classification.leavesTransactionOpen,
           !(classification.transactionReadOnly ?? session.defaultTransactionReadOnly) {
            return primary(.transaction, topology, forWrite: false)
        }
        return read(session, topology, policy, load, forcedBy: nil)
    }

    /// Why `backend` (a replica) cannot take a read for `session` now; nil when it can.
    public static func ineligibility(of backend: BackendStatus, session: SessionRouting, policy: RoutingPolicy) -> ReplicaIneligibility? {
        ineligibility(of: backend, floor: session.consistency == .session ? session.floor : nil, policy: policy)
    }

    // MARK: - Reads

    private static func read(
        _ session: SessionRouting, _ topology: Topology, _ policy: RoutingPolicy, _ load: [Int], forcedBy source: String?
    ) -> RouteDecision {
        let floor = session.consistency == .session ? session.floor : nil
        let reason: RouteReason = source == nil ? .read : .hint

        if let sticky = session.stickyReplica, let backend = topology.backend(at: sticky), backend.role == .replica,
           ineligibility(of: backend, floor: floor, policy: policy) == nil {
            return RouteDecision(target: sticky, isPrimary: false, reason: reason)
        }
        let backends = topology.backends
        let eligible = backends.indices.lazy.filter {
            backends[$0].role == .replica && ineligibility(of: backends[$0], floor: floor, policy: policy) == nil
        }
        if let best = best(eligible, in: backends, zone: policy.zone, load: load) {
            return RouteDecision(target: backends[best].index, isPrimary: false, reason: reason)
        }

        // Why no replica can serve it, spelled out only for an error message (the common fallback
        // to the primary needs no text).
        func explanation() -> String {
            let refusals = backends.compactMap { backend -> String? in
                guard backend.role == .replica, let why = ineligibility(of: backend, floor: floor, policy: policy) else { return nil }
                return "\(backend.name) \(why)"
            }
            return refusals.isEmpty ? "no replicas are configured" : refusals.joined(separator: ", ")
        }

        if let source {
            // Forced to a replica: a stale one beats none, so only health and draining count.
            let usable = backends.indices.lazy.filter {
                backends[$0].role == .replica && backends[$0].health == .up && !backends[$0].draining
            }
            if let best = best(usable, in: backends, zone: policy.zone, load: load) {
                return RouteDecision(target: backends[best].index, isPrimary: false, reason: .hint)
            }
            return failure(.noReplica, "08006",
                           "no replica is available for a query routed to replicas by \(source): \(explanation())", reason: .hint)
        }

        var stage: Int?
        for backend in backends where backend.role == .replica {
            if let why = ineligibility(of: backend, floor: floor, policy: policy) { stage = max(stage ?? why.stage, why.stage) }
        }
        let fallbackReason: RouteReason = switch stage {
        case nil: .noReplica
        case 3: .floor
        case 2: .lag
        case 1: .drain
        default: .fallback
        }
        // Waiting helps only if some replica is up and merely behind.
        let catchingUp = (stage ?? 0) >= 2

        switch policy.fallback {
        case .error:
            return failure(.noReplica, "08006", "no replica can serve this read (fallback = error): \(explanation())",
                           reason: fallbackReason)
        case .wait, .primary:
            var decision = primary(fallbackReason, topology, forWrite: false)
            if let error = decision.error {
                decision.error?.message = error.message + "; and no replica can serve this read: \(explanation())"
            }
            decision.shouldWait = catchingUp
                && (policy.fallback == .wait || (fallbackReason == .floor && policy.causalWaitMs > 0))
            return decision
        }
    }

    private static func ineligibility(of backend: BackendStatus, floor: LSN?, policy: RoutingPolicy) -> ReplicaIneligibility? {
        switch backend.health {
        case .down: return .down(lastError: backend.lastError)
        case .unknown: return .healthUnknown
        case .up: break
        }
        if backend.draining { return .draining }
        if backend.lagMs > Double(policy.maxLagMs) || backend.lagBytes > policy.maxLagBytes {
            return .lagging(ms: backend.lagMs, bytes: backend.lagBytes, maxMs: policy.maxLagMs, maxBytes: policy.maxLagBytes)
        }
        if backend.replayPaused, backend.lagBytes > 0 { return .replayPaused(bytesBehind: backend.lagBytes) }
        if let floor, (backend.replayLSN.map { $0 < floor } ?? true) {
            return .behindFloor(replay: backend.replayLSN, floor: floor)
        }
        return nil
    }

    /// Prefer the policy zone, then backends with a positive weight, then the least outstanding
    /// requests per unit of weight ((load + 1) / weight, so idle backends still split by weight),
    /// then the lowest index.
    private static func best<C: Sequence<Int>>(_ candidates: C, in backends: [BackendStatus], zone: String, load: [Int]) -> Int? {
        var best: Int?
        for candidate in candidates {
            guard let current = best else {
                best = candidate
                continue
            }
            if isBetter(backends[candidate], than: backends[current], zone: zone, load: load) { best = candidate }
        }
        return best
    }

    private static func isBetter(_ a: BackendStatus, than b: BackendStatus, zone: String, load: [Int]) -> Bool {
        let aLocal = !zone.isEmpty && a.zone == zone, bLocal = !zone.isEmpty && b.zone == zone
        if aLocal != bLocal { return aLocal }
        if (a.weight > 0) != (b.weight > 0) { return a.weight > 0 }
        func outstanding(_ backend: BackendStatus) -> UInt64 {
            UInt64(max(0, load.indices.contains(backend.index) ? load[backend.index] : 0)) + 1
        }
        // (loadA + 1) / weightA < (loadB + 1) / weightB, cross-multiplied without overflow.
        let lhs = outstanding(a).multipliedFullWidth(by: UInt64(max(1, b.weight)))
        let rhs = outstanding(b).multipliedFullWidth(by: UInt64(max(1, a.weight)))
        if lhs != rhs { return lhs < rhs }
        return a.index < b.index
    }

    // MARK: - Primary

    private static func primary(_ reason: RouteReason, _ topology: Topology, forWrite: Bool) -> RouteDecision {
        // The common case in one pass over the backends, without copying their records: exactly
        // one live backend reports being primary.
        var live: Int?
        var liveCount = 0
        for position in topology.backends.indices
        where topology.backends[position].role == .primary && topology.backends[position].health != .down {
            liveCount += 1
            if live == nil { live = position }
        }
        if liveCount == 1, !topology.multiplePrimaries, let live {
            return RouteDecision(target: topology.backends[live].index, isPrimary: true, reason: reason)
        }
        if topology.hasMultiplePrimaries {
            let names = topology.backends.filter { $0.role == .primary && $0.health != .down }.map(\.name)
            let listed = names.count > 1 ? " (\(names.joined(separator: ", ")))" : ""
            let refusal = forWrite ? "refusing writes until one is demoted" : "refusing to pick one until one is demoted"
            return failure(.multiplePrimaries, "08006", "two backends report being primary\(listed); \(refusal)", reason: reason)
        }
        guard let primary = topology.primary else {
            let states = topology.backends.map { backend -> String in
                switch (backend.health, backend.role) {
                case (.down, _): "\(backend.name) is down" + (backend.lastError.map { " (\($0))" } ?? "")
                case (_, .replica): "\(backend.name) is a replica"
                default: "\(backend.name) has not reported its role"
                }
            }
            return failure(.noPrimary, "08006", "no primary available: "
                + (states.isEmpty ? "no backends are configured" : states.joined(separator: ", ")), reason: reason)
        }
        if primary.health == .down {
            return failure(.noPrimary, "08006", "no primary available: primary \(primary.name) is down"
                + (primary.lastError.map { " (\($0))" } ?? ""), reason: reason)
        }
        return RouteDecision(target: primary.index, isPrimary: true, reason: reason)
    }

    private static func failure(_ kind: RoutingError.Kind, _ sqlState: String, _ message: String, reason: RouteReason) -> RouteDecision {
        RouteDecision(target: nil, isPrimary: false, reason: reason,
                      error: RoutingError(kind: kind, sqlState: sqlState, message: message))
    }
}
