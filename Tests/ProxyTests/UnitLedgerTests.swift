import Router
import Testing
import Wire
@testable import Proxy

/// Units in flight and held responses, without sockets: which reads are retried and where, when
/// held bytes go to the client, and how a commit's token is waited for.
struct UnitLedgerTests {
    static let replica = 1
    static let primary = 0
    static let otherReplica = 2

    static func unit(_ text: String, end: RequestUnit.End = .query, bytes: Int = 16) -> RequestUnit {
        var unit = RequestUnit()
        unit.bytes = Array(repeating: 0x51, count: bytes)
        unit.end = end
        unit.executes = true
        unit.classification = QueryClassifier.classify(text, volatileFunctions: [])
        return unit
    }

    static func describe(_ action: UnitLedger.Action?) -> String {
        switch action {
        case nil: "none"
        case .releaseHeld?: "release"
        case .awaitToken?: "awaitToken"
        case let .retry(unit, onPrimary)?: "retry \(unit.bytes.count) bytes \(onPrimary ? "on primary" : "elsewhere")"
        }
    }

    @Test func aReplicaReadThatIsRefusedRetryablyIsRunAgainOnThePrimaryUnseen() {
        var ledger = UnitLedger()
        #expect(Self.describe(ledger.sent(.init(unit: Self.unit("SELECT 1"), link: Self.replica, retryable: true, reportsToken: false))) == "none")
        #expect(ledger.holding.link == Self.replica)
        #expect(Self.describe(ledger.serverError(on: Self.replica, retryableElsewhere: true)) == "none")
        let (record, action) = ledger.ready(on: Self.replica, tokenPending: false)
        #expect(record?.sawError == true)
        #expect(Self.describe(action) == "retry 16 bytes on primary")
        #expect(ledger.isEmpty && ledger.holding.isPassing)
    }

    @Test func anErrorNoRetryCanHideReachesTheClientAtOnce() {
        // libpq pipeline mode: `select 1/0` without a sync point waits for its error.
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1/0", end: .partial), link: Self.replica, retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.serverError(on: Self.replica, retryableElsewhere: false)) == "release")
        #expect(ledger.holding.isPassing)
    }

    @Test func aReadSucceedingOnTheReplicaReleasesItsHeldResponses() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1"), link: Self.replica, retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.ready(on: Self.replica, tokenPending: false).action) == "release")
    }

    @Test func aReplicaLostMidReadRunsTheReadElsewhere() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1"), link: Self.replica, retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.linkLost(Self.replica)) == "retry 16 bytes elsewhere")
        #expect(ledger.isEmpty)
    }

    @Test func aLostServerWithWorkThatWasNotHeldIsTheSessionsProblem() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("UPDATE t SET a = 1"), link: Self.primary, retryable: false, reportsToken: false))
        #expect(Self.describe(ledger.linkLost(Self.primary)) == "none")
        #expect(ledger.hasWork(on: Self.primary))
    }

    @Test func aBatchArrivingInPartsIsRetriedWhole() {
        // A read, then (in a later part) a write the replica refuses: the whole batch reruns.
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1", end: .partial, bytes: 10), link: Self.replica, retryable: true, reportsToken: false))
        _ = ledger.sent(.init(unit: Self.unit("INSERT INTO t VALUES (1)", end: .sync, bytes: 20), link: Self.replica,
                              retryable: false, reportsToken: false))
        #expect(ledger.records.count == 1)
        _ = ledger.serverError(on: Self.replica, retryableElsewhere: true)
        #expect(Self.describe(ledger.ready(on: Self.replica, tokenPending: false).action) == "retry 30 bytes on primary")
    }

    @Test func aFlushGivesUpTheRetryBecauseTheClientWaitsForTheResponses() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1", end: .partial), link: Self.replica, retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.sent(.init(unit: Self.unit("SELECT 2", end: .flush), link: Self.replica,
                                                retryable: false, reportsToken: false))) == "release")
    }

    @Test func aRetryCopyStaysBounded() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1", end: .partial, bytes: UnitLedger.holdLimit - 10), link: Self.replica,
                              retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.sent(.init(unit: Self.unit("SELECT 2", end: .partial, bytes: 20), link: Self.replica,
                                                retryable: false, reportsToken: false))) == "release")
        #expect(Self.describe(ledger.heldOverflowed()) == "none")
    }

    @Test func aUnitPipelinedBehindAHeldReadEndsTheHolding() {
        // Responses of two units on one stream can no longer be told apart by position.
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1"), link: Self.replica, retryable: true, reportsToken: false))
        #expect(Self.describe(ledger.sent(.init(unit: Self.unit("SELECT 2"), link: Self.replica, retryable: false,
                                                reportsToken: false))) == "release")
        #expect(ledger.records.count == 2)
    }

    @Test func unitsOnTwoBackendsCompleteInOrderAndOnlyTheHeadsLinkMayAnswer() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("UPDATE t SET a = 1"), link: Self.primary, retryable: false, reportsToken: false))
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1"), link: Self.otherReplica, retryable: false, reportsToken: false))
        #expect(ledger.headLink == Self.primary)
        #expect(ledger.ready(on: Self.primary, tokenPending: false).record != nil)
        #expect(ledger.headLink == Self.otherReplica)
    }

    @Test func aCommitsReadyForQueryWaitsForItsTokenThenGoes() {
        var ledger = UnitLedger()
        #expect(ledger.sent(.init(unit: Self.unit("INSERT INTO t VALUES (1)"), link: Self.primary, retryable: false,
                                  reportsToken: true)) == nil)
        #expect(ledger.holding.link == Self.primary)
        #expect(Self.describe(ledger.ready(on: Self.primary, tokenPending: true).action) == "awaitToken")
        #expect(Self.describe(ledger.tokenResolved()) == "release")
        #expect(ledger.holding.isPassing && ledger.isEmpty)
    }

    @Test func aBatchTheProxyEndsCompletesAtItsSync() {
        var ledger = UnitLedger()
        _ = ledger.sent(.init(unit: Self.unit("SELECT 1", end: .partial), link: Self.replica, retryable: true, reportsToken: false))
        ledger.batchEnded(on: Self.replica)
        #expect(ledger.records.first?.open == false)
        #expect(Self.describe(ledger.ready(on: Self.replica, tokenPending: false).action) == "release")
        #expect(ledger.isEmpty)
    }
}
