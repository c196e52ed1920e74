// Routing and consistency rules that depend on what happened in a session (server errors,
// commits, PAUSE, moves between replicas), as pure functions. The session applies them; it does
// not decide them.

extension Router {
    /// A FunctionCall message names a function by OID, unseen by the classifier: it may do
    /// anything, so it is a write and runs on the primary.
    public static let functionCallClassification = Classification(isWrite: true, functions: ["<function call>"])

    /// Whether a replica's refusal of an autocommit read (before anything reached the client)
    /// may be hidden by running the read elsewhere: 25006, the replica says read-only (the
    /// classifier missed a write); 57P04, or 40001 with a recovery conflict, replay got in the way.
    public static func isRetryableElsewhere(sqlState: String, message: String?) -> Bool {
        switch sqlState {
        case "25006", "57P04": true
        case "40001": (message ?? "").contains("conflict with recovery")
        default: false
        }
    }

    /// What is known of a unit that ran on the primary, for the commit-LSN rule.
    public struct PrimaryUnit: Sendable {
        /// It ran something (Query, Execute, FunctionCall), not only Parse/Describe.
        public var executes: Bool
        /// What it ran writes (classification, volatile functions, or a function call).
        public var writes: Bool
        public var transaction: TransactionEffect?
        public var leavesTransactionOpen: Bool
        public var reason: RouteReason

        public init(executes: Bool, writes: Bool, transaction: TransactionEffect? = nil,
                    leavesTransactionOpen: Bool = false, reason: RouteReason) {
            self.executes = executes
            self.writes = writes
            self.transaction = transaction
            self.leavesTransactionOpen = leavesTransactionOpen
            self.reason = reason
        }
    }

    /// Whether the WAL position must be read right after `unit` (to raise the session's floor),
    /// and whether the open transaction has written by now. Only a unit that ends outside a
    /// transaction qualifies — inside one, the position would precede the commit — and only
    /// one that ran: a Parse of an INSERT writes nothing, and a capture behind it would destroy
    /// the unnamed statement the client is about to bind. A read on the primary counts too in
    /// session consistency: a later replica read must not show less than it saw.
    public static func captureCommitLSN(after unit: PrimaryUnit, inTransaction: Bool, transactionWrote: Bool,
                                        consistency: ConsistencyMode, pinned: Bool) -> (capture: Bool, transactionWrote: Bool) {
        let writes = unit.executes && unit.writes
        if !inTransaction {
            if unit.leavesTransactionOpen { return (false, transactionWrote || writes) }
            let readOnPrimary = unit.executes && consistency == .session && !pinned
                && ![RouteReason.write, .pinned, .strong, .noReplica].contains(unit.reason)
            return (writes || readOnPrimary, transactionWrote)
        }
        let wrote = transactionWrote || writes
        switch unit.transaction {
        case .commit?, .prepareTransaction?: return (wrote && !unit.leavesTransactionOpen, wrote)
        default: return (false, wrote)
        }
    }

    /// Whether PAUSE (switchovers) holds this unit: a new write transaction waits — also while
    /// the old primary is gone and the new one not yet seen (the decision is then an error); a
    /// transaction already open finishes, and reads go on.
    public static func pauseHolds(_ decision: RouteDecision, classification: Classification?, inTransaction: Bool) -> Bool {
        guard !inTransaction, decision.isPrimary || decision.error != nil else { return false }
        return decision.reason == .write || decision.reason == .transaction || classification?.leavesTransactionOpen == true
    }

    /// What moving a session-consistency read from the replica it last read on to another one
    /// requires (monotonic reads).
    public enum ReplicaMove: Sendable, Equatable {
        /// No move, or nothing to guard: use the decision as it is.
        case proceed
        /// The new replica must have replayed at least this (what the session could have seen on
        /// the old one): raise the floor and route again.
        case raiseFloor(LSN)
        /// No snapshot is recent enough to tell yet: read from the primary (never behind) and
        /// poll the cluster soon.
        case usePrimary(Int)
    }

    /// `last` is the replica the session last read from and the topology generation of that
    /// read. A snapshot taken two generations later bounds what that read saw: the old
    /// replica's replay position then, or the primary's position if the old replica is gone.
    public static func replicaMove(from last: (index: Int, generation: UInt64), decision: RouteDecision,
                                   topology: Topology, consistency: ConsistencyMode, forcedToReplica: Bool) -> ReplicaMove {
        guard consistency == .session, !forcedToReplica, let target = decision.target, target != last.index,
              !decision.isPrimary, decision.error == nil else { return .proceed }
        if topology.generation >= last.generation + 2 {
            let old = topology.backend(at: last.index)
            let seen = old.flatMap { $0.health == .up ? $0.replayLSN : nil } ?? topology.primary?.currentLSN
            return seen.map { .raiseFloor($0) } ?? .proceed
        }
        return topology.primary.map { .usePrimary($0.index) } ?? .proceed
    }
}
