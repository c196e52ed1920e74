@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: replica reads retried where the client cannot tell")
struct SessionRetryTests {
    @Test func aReadAReplicaRefusesRunsAgainOnThePrimaryAheadOfTheUnitQueuedBehindIt() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        // A write queued behind the read (another server: it waits).
        _ = session.query("INSERT INTO t VALUES (1)")
        // A recovery conflict: retryable, and nothing of the read reached the client.
        #expect(session.serverError(1, "40001", "canceling statement due to conflict with recovery") == [])
        #expect(session.ready(1, .idle) == ["hold drop", "send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        // The read ran first on the primary; the write stays queued behind it until the capture.
        #expect(session.machine.waiting.count == 1)
        #expect(session.ready(0).isEmpty)
        #expect(session.captured(0, "0/3000") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func anErrorNoRetryCanHideReachesTheClientAtOnce() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM missing")
        _ = session.linkUp(1)
        #expect(session.serverError(1, "42P01", "relation \"missing\" does not exist") == ["hold release"])
        #expect(session.ready(1) == [])
    }

    @Test func aReplicaLostMidReadHasTheReadRunOnAnotherReplica() {
        var session = SessionHarness(consistency: .eventual, loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        #expect(session.linkLost(1) == ["hold drop", "open 2"])
        #expect(session.machine.avoided[1] != nil)
        #expect(session.linkUp(2) == ["send 2 Q", "note 2 readies=1"])
    }

    @Test func aSessionConsistentReadLostWithItsReplicaRunsOnThePrimaryUntilAnotherReplicaIsKnownToBeAhead() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        // The other replica's position is from the same snapshot: it may be behind what the
        // client could have seen on the lost one.
        #expect(session.linkLost(1) == ["hold drop", "send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func aReplicaThatRefusesTheLoginIsAvoidedAndTheUnitRoutedAgain() {
        // CREATE DATABASE not replayed yet on one replica: 3D000 at login.
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT 1")
        #expect(session.linkLost(1, duringLogin: true, sqlState: "3D000") == ["open 2"])
        #expect(session.linkLost(2, duringLogin: true, sqlState: "3D000") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func thePrimaryRefusingTheLoginFailsTheUnitAsAnError() {
        var session = SessionHarness()
        _ = session.query("INSERT INTO t VALUES (1)")
        #expect(session.linkLost(0, duringLogin: true, sqlState: "53300") == ["client E", "client Z"])
        #expect(session.machine.phase == .relaying)
    }

    @Test func anUnreachableReplicaIsAvoidedForTwoSecondsEvenBeforeTheMonitorNotices() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT 1")
        #expect(session.linkLost(1, duringLogin: true) == ["open 2"])
        _ = session.linkUp(2)
        _ = session.ready(2)
        session.env.now += 2_500_000_000
        // The sticky replica is 2 now; the avoidance of 1 has lapsed.
        _ = session.handle(.linkFailed(2, ErrorFields(severity: .fatal, sqlState: "08006", message: "gone"), duringLogin: false,
                                       serverSaidWhy: false, endedWhileIdle: false))
        session.env.publish()
        session.env.publish()
        #expect(session.query("SELECT 2") == ["open 1"])
    }
}
