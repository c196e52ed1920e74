import Router
import Testing

// Rules that depend on what happened in a session: which refusals may be retried elsewhere,
// when a commit's LSN is captured, what PAUSE holds, and what moving between replicas needs.

private func classify(_ text: String) -> Classification { QueryClassifier.classify(text, volatileFunctions: []) }

struct RetryableErrorTests {
    @Test(arguments: [
        ("25006", "cannot execute INSERT in a read-only transaction", true),
        ("57P04", "terminating connection due to conflict with recovery", true),
        ("40001", "canceling statement due to conflict with recovery", true),
        ("40001", "could not serialize access due to concurrent update", false),
        ("22012", "division by zero", false),
        ("23505", "duplicate key value violates unique constraint", false),
    ])
    func aReplicaRefusalIsRetriedElsewhereOnlyWhenReplayOrReadOnlyCausedIt(_ state: String, _ message: String, _ retryable: Bool) {
        #expect(Router.isRetryableElsewhere(sqlState: state, message: message) == retryable)
    }
}

struct CommitCaptureTests {
    private func capture(_ text: String, executes: Bool = true, inTransaction: Bool = false, wrote: Bool = false,
                         consistency: ConsistencyMode = .session, reason: RouteReason = .write,
                         pinned: Bool = false) -> (capture: Bool, transactionWrote: Bool) {
        let c = classify(text)
        return Router.captureCommitLSN(
            after: .init(executes: executes, writes: c.isWrite, transaction: c.transaction,
                         leavesTransactionOpen: c.leavesTransactionOpen, reason: reason),
            inTransaction: inTransaction, transactionWrote: wrote, consistency: consistency, pinned: pinned)
    }

    @Test func anAutocommitWriteThatRanIsCaptured() {
        #expect(capture("INSERT INTO t VALUES (1)") == (true, false))
    }

    @Test func aPreparedWriteThatNeverRanIsNotCapturedInAnyMode() {
        // psql's \gdesc, PQprepare: the capture would destroy the unnamed statement.
        for mode in ConsistencyMode.allCases {
            #expect(capture("INSERT INTO t VALUES (1)", executes: false, consistency: mode, reason: .write) == (false, false))
        }
    }

    @Test func aWriteInsideATransactionWaitsForTheCommit() {
        #expect(capture("BEGIN") == (false, false))
        #expect(capture("UPDATE t SET a = 1", inTransaction: true) == (false, true))
        #expect(capture("SELECT 1", inTransaction: true, wrote: true, reason: .transaction) == (false, true))
        #expect(capture("COMMIT", inTransaction: true, wrote: true, reason: .transaction) == (true, true))
    }

    @Test func aReadOnlyTransactionsCommitIsNotCaptured() {
        #expect(capture("COMMIT", inTransaction: true, wrote: false, reason: .transaction) == (false, false))
    }

    @Test func aBeginThatWritesInTheSameTextMarksTheTransaction() {
        #expect(capture("BEGIN; INSERT INTO t VALUES (1)") == (false, true))
    }

    @Test func aReadThatFellBackToThePrimaryRaisesTheFloorOnlyInSessionConsistency() {
        #expect(capture("SELECT 1", reason: .fallback) == (true, false))
        #expect(capture("SELECT 1", consistency: .eventual, reason: .fallback) == (false, false))
        #expect(capture("SELECT 1", reason: .strong) == (false, false))
        #expect(capture("SELECT 1", reason: .fallback, pinned: true) == (false, false))
    }
}

struct PauseTests {
    private let write = RouteDecision(target: 0, isPrimary: true, reason: .write)

    @Test func pauseHoldsANewWriteTransaction() {
        #expect(Router.pauseHolds(write, classification: classify("INSERT INTO t VALUES (1)"), inTransaction: false))
        #expect(Router.pauseHolds(RouteDecision(target: 0, isPrimary: true, reason: .transaction),
                                  classification: classify("BEGIN"), inTransaction: false))
    }

    @Test func pauseHoldsAFunctionCall() {
        #expect(Router.pauseHolds(write, classification: Router.functionCallClassification, inTransaction: false))
    }

    @Test func pauseHoldsAWriteWhileNoPrimaryIsVisible() {
        let gone = RouteDecision(target: nil, isPrimary: true, reason: .write,
                                 error: RoutingError(kind: .noPrimary, sqlState: "08006", message: "no primary"))
        #expect(Router.pauseHolds(gone, classification: classify("DELETE FROM t"), inTransaction: false))
    }

    @Test func pauseLetsAnOpenTransactionFinishAndReadsGoOn() {
        #expect(!Router.pauseHolds(write, classification: classify("INSERT INTO t VALUES (1)"), inTransaction: true))
        #expect(!Router.pauseHolds(RouteDecision(target: 1, isPrimary: false, reason: .read),
                                   classification: classify("SELECT 1"), inTransaction: false))
        #expect(!Router.pauseHolds(RouteDecision(target: 0, isPrimary: true, reason: .fallback),
                                   classification: classify("SELECT 1"), inTransaction: false))
    }
}

struct ReplicaMoveTests {
    private func topology(generation: UInt64, oldReplay: LSN? = LSN(300), oldHealth: BackendHealth = .up) -> Topology {
        Topology(generation: generation, backends: [
            BackendStatus(index: 0, name: "pg0", role: .primary, currentLSN: LSN(500)),
            BackendStatus(index: 1, name: "pg1", role: .replica, health: oldHealth, replayLSN: oldReplay),
            BackendStatus(index: 2, name: "pg2", role: .replica, replayLSN: LSN(400)),
        ])
    }

    private let toReplica2 = RouteDecision(target: 2, isPrimary: false, reason: .read)

    @Test func stayingOnTheSameReplicaNeedsNothing() {
        let same = RouteDecision(target: 1, isPrimary: false, reason: .read)
        #expect(Router.replicaMove(from: (1, 10), decision: same, topology: topology(generation: 20),
                                   consistency: .session, forcedToReplica: false) == .proceed)
    }

    @Test func aMoveRaisesTheFloorToWhatTheOldReplicaHadOnceASnapshotBoundsIt() {
        #expect(Router.replicaMove(from: (1, 10), decision: toReplica2, topology: topology(generation: 12),
                                   consistency: .session, forcedToReplica: false) == .raiseFloor(LSN(300)))
    }

    @Test func aMoveFromAReplicaThatIsGoneUsesThePrimarysPosition() {
        #expect(Router.replicaMove(from: (1, 10), decision: toReplica2, topology: topology(generation: 12, oldHealth: .down),
                                   consistency: .session, forcedToReplica: false) == .raiseFloor(LSN(500)))
    }

    @Test func aMoveBeforeASnapshotCanTellReadsFromThePrimary() {
        #expect(Router.replicaMove(from: (1, 10), decision: toReplica2, topology: topology(generation: 11),
                                   consistency: .session, forcedToReplica: false) == .usePrimary(0))
    }

    @Test func eventualConsistencyAndForcedReplicasMoveFreely() {
        #expect(Router.replicaMove(from: (1, 10), decision: toReplica2, topology: topology(generation: 11),
                                   consistency: .eventual, forcedToReplica: false) == .proceed)
        #expect(Router.replicaMove(from: (1, 10), decision: toReplica2, topology: topology(generation: 11),
                                   consistency: .session, forcedToReplica: true) == .proceed)
    }
}
