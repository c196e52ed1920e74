@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: units waiting for the cluster (PAUSE, a replica behind the floor) and report_lsn")
struct SessionWaitTests {
    @Test func pauseHoldsANewWriteUntilResume() {
        var session = SessionHarness(loginLink: 0)
        session.env.paused = true
        #expect(session.query("INSERT INTO t VALUES (1)") == ["wait topology"])
        #expect(session.machine.needsTopologyWake)
        // Nothing changed: still waiting.
        #expect(session.handle(.topologyChanged) == [])
        session.env.paused = false
        #expect(session.handle(.topologyChanged) == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        #expect(!session.machine.needsTopologyWake)
    }

    @Test func aWriteHeldByPausePastItsDeadlineIsRefusedWith57P03() {
        var session = SessionHarness(loginLink: 0)
        session.env.paused = true
        session.env.pauseTimeoutNanos = 5_000_000_000
        _ = session.query("INSERT INTO t VALUES (1)")
        session.env.now += 4_000_000_000
        #expect(session.handle(.topologyChanged) == [])
        session.env.now += 2_000_000_000
        #expect(session.handle(.topologyChanged, everything: true).contains("count error 57P03"))
        #expect(session.machine.acceptsClientInput)
    }

    @Test func pauseLetsReadsAndOpenTransactionsGoOn() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        session.env.paused = true
        #expect(session.query("INSERT INTO t VALUES (1)") == ["send 0 Q", "note 0 readies=1"])
        _ = session.ready(0, .inTransaction)
        #expect(session.query("COMMIT") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        session.env.setReplay(1, 0x3000)
        #expect(session.query("SELECT * FROM t") == ["open 1"])
    }

    @Test func aReadWhoseReplicaIsOnlyBehindTheFloorWaitsCausalWaitThenFallsBackToThePrimary() {
        var session = SessionHarness(loginLink: 0) { $0.policy.causalWaitMs = 50 }
        session.machine.routing.floor = LSN(6000)
        #expect(session.query("SELECT * FROM t") == ["wait topology"])
        // A new snapshot with the replica still behind: keep waiting.
        session.env.setReplay(1, 5500)
        #expect(session.handle(.topologyChanged) == ["wait topology"])
        // The replica catches up within the wait: the read goes there.
        session.env.setReplay(1, 6000)
        #expect(session.handle(.topologyChanged) == ["open 1"])
    }

    @Test func aFloorWaitPastCausalWaitGoesToThePrimary() {
        var session = SessionHarness(loginLink: 0) { $0.policy.causalWaitMs = 50 }
        session.machine.routing.floor = LSN(6000)
        _ = session.query("SELECT * FROM t")
        session.env.now += 60_000_000
        #expect(session.handle(.topologyChanged) == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func reportLSNHoldsTheCommitsReadyForQueryUntilItsTokenCanGoInFront() {
        var session = SessionHarness(loginLink: 0) { $0.reportLSN = true }
        _ = session.query("INSERT INTO t VALUES (1)")
        #expect(session.machine.holdingLink == 0)
        #expect(session.ready(0) == ["hold ready"])
        #expect(session.captured(0, "0/3000") == ["token S", "hold release"])
        #expect(session.machine.holdingLink == nil)
    }

    @Test func aCaptureLostWithThePrimaryRaisesTheFloorToThePrimarysLastKnownPosition() {
        var session = SessionHarness(loginLink: 0) { $0.reportLSN = true }
        _ = session.query("INSERT INTO t VALUES (1)")
        _ = session.ready(0)
        // The primary's link dies before the capture's row: the session goes on, conservatively.
        #expect(session.linkLost(0) == ["hold release"])
        #expect(session.machine.capture == .none)
        #expect(session.machine.routing.floor == LSN(5000))
        #expect(session.machine.phase == .relaying)
    }
}
