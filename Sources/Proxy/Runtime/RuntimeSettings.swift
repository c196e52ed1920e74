import Router

/// A backend under the index it keeps for the life of the process. A reload never renumbers:
/// sessions, server links, counters and the monitor's topology all name backends by this index,
/// so a link opened before a reload still means the same server after it.
public struct BackendSlot: Sendable {
    public let backend: ResolvedBackend
    let counters: BackendCounters
    /// Taken out by a reload: no new units go there, and its connections close at their next
    /// transaction boundary (cut after the removal grace period).
    public var removed: Bool

    var name: String { backend.config.name }
}

/// Everything a reload can change, replaced as a whole: a worker holds one snapshot and sees a
/// newer one at its next request, so no request mixes settings from two configurations.
public final class RuntimeSettings: Sendable {
    public let generation: Int
    /// The configuration in force (settings that need a restart keep their values from start-up).
    public let config: CausewayConfig
    /// By backend index; append-only across generations.
    public let slots: [BackendSlot]
    let policy: RoutingPolicy
    let reportLSN: Bool
    /// SCRAM keys per user: derived from plain passwords (random salt, kept across reloads while
    /// the password is unchanged) or taken from configured verifiers.
    let scramKeys: [String: ScramKeys]
    /// Read on the request path: kept as plain values (reading them through `config` copies
    /// nested structs).
    let transactionPooling: Bool
    let maxPreparedStatements: Int
    let pools: PoolSettings

    init(generation: Int, config: CausewayConfig, slots: [BackendSlot], scramKeys: [String: ScramKeys]) {
        self.generation = generation
        self.config = config
        self.slots = slots
        self.scramKeys = scramKeys
        reportLSN = config.routing.reportLSN
        transactionPooling = config.proxy.poolMode == .transaction
        maxPreparedStatements = config.proxy.pools.maxPreparedStatements
        pools = config.proxy.pools
        policy = RoutingPolicy(
            consistency: config.routing.consistency,
            maxLagMs: config.routing.maxLagMs,
            maxLagBytes: UInt64(max(0, config.routing.maxLagBytes)),
            fallback: config.routing.fallback,
            zone: config.proxy.zone,
            causalWaitMs: config.routing.causalWaitMs)
    }

    /// Indexes of the backends in the configuration now.
    var liveIndexes: [Int] { slots.indices.filter { !slots[$0].removed } }

    /// Backends worth showing an operator: the configured ones, and removed ones still holding
    /// server connections.
    var visibleIndexes: [Int] {
        slots.indices.filter { !slots[$0].removed || slots[$0].counters.serverConnections.load(ordering: .relaxed) > 0 }
    }

    func liveIndex(named name: String) -> Int? {
        slots.indices.first { !slots[$0].removed && slots[$0].name == name }
    }

    /// Whether a removed backend still has connections some session must let go of.
    var hasRemovedConnections: Bool {
        slots.contains { $0.removed && $0.counters.serverConnections.load(ordering: .relaxed) > 0 }
    }

    func isRemoved(_ index: Int) -> Bool { slots.indices.contains(index) && slots[index].removed }

    /// Backends to try for the primary before the monitor has measured the cluster, in order:
    /// those declared primary, then `auto` ones (a standby among them is recognised by its
    /// `in_hot_standby` report and skipped).
    var primaryCandidateIndexes: [Int] {
        let live = liveIndexes
        return live.filter { slots[$0].backend.config.role == .primary } + live.filter { slots[$0].backend.config.role == .auto }
    }

    func counters(_ index: Int) -> BackendCounters? {
        slots.indices.contains(index) ? slots[index].counters : nil
    }
}
