@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: DRAIN, lost servers, shutdown and the client leaving")
struct SessionDrainAndEndingTests {
    /// A session that read from replica 1 and is idle.
    private func readingFromReplica1() -> SessionHarness {
        var session = SessionHarness(consistency: .eventual, loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        _ = session.ready(1)
        return session
    }

    @Test func drainClosesAnIdleReplicaLinkAndTheNextReadMovesToAnotherReplica() {
        var session = readingFromReplica1()
        session.env.publish { $0.backends[1].draining = true }
        #expect(session.handle(.drainCheck, everything: true) == ["close 1", "release 1", "log drained_link_closed"])
        #expect(session.machine.routing.stickyReplica == nil)
        #expect(session.query("SELECT * FROM t") == ["open 2"])
    }

    @Test func drainWaitsForABusyLinkAndCutsItWhenTheDrainTimesOut() {
        var session = readingFromReplica1()
        _ = session.query("SELECT pg_sleep(60) FROM t")
        session.env.publish { $0.backends[1].draining = true }
        #expect(session.handle(.drainCheck) == [])
        session.env.expiredDrains = [1]
        #expect(session.handle(.drainCheck) == ["fatal 57P01"])
        #expect(session.machine.phase == .ended)
    }

    @Test func drainLeavesThePrimaryLinkOfAPinnedSessionUntilTheCut() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("CREATE TEMP TABLE tmp(a int)")
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        session.env.publish { $0.backends[0].draining = true }
        #expect(session.handle(.drainCheck) == [])
        #expect(session.machine.links.at(0) != nil)
    }

    @Test func aReplicaLinkLostWhileIdleIsReopenedByTheNextRead() {
        var session = readingFromReplica1()
        #expect(session.linkLost(1, endedWhileIdle: true) == [])
        #expect(session.machine.avoided[1] == nil)
        #expect(session.query("SELECT * FROM t") == ["open 1"])
    }

    @Test func thePrimaryLostMidTransactionEndsTheSessionWithTheServersError() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        #expect(session.linkLost(0) == ["fatal 08006"])
    }

    @Test func aServerThatSaidWhyItEndedTheTransactionEndsTheSessionWithoutAnotherWord() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        #expect(session.linkLost(0, serverSaidWhy: true) == ["end"])
    }

    @Test func aTransactionsServerEndingItWhileIdleIsExplainedWith57P01() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        #expect(session.linkLost(0, endedWhileIdle: true) == ["fatal 57P01"])
    }

    @Test func aClientGoneMidTransactionEndsTheSessionSoItsServersRollBack() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        #expect(session.handle(.clientGone, everything: true) == ["log client_vanished", "end"])
        // Nothing happens after the end.
        #expect(session.query("COMMIT") == [])
    }

    @Test func aClientTerminateEndsTheSession() {
        var session = SessionHarness(loginLink: 0)
        #expect(session.client(.terminate) == ["end"])
    }

    @Test func aGracefulShutdownWaitsForTheOpenTransactionToEnd() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        _ = session.ready(0, .inTransaction)
        #expect(session.handle(.shutdown(immediately: false)) == [])
        #expect(session.query("COMMIT") == ["send 0 Q", "note 0 readies=1"])
        #expect(session.ready(0) == ["fatal 57P01"])
    }

    @Test func anImmediateShutdownEndsTheSessionAtOnce() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("BEGIN")
        #expect(session.handle(.shutdown(immediately: true)) == ["fatal 57P01"])
    }

    @Test func killEndsTheSession() {
        var session = SessionHarness(loginLink: 0)
        #expect(session.handle(.killed) == ["fatal 57P01"])
    }
}

@Suite("Session machine: the state SHOW CLIENTS shows")
struct SessionStatusTests {
    private func describe(_ session: SessionHarness) -> (String, [String]) {
        ClientState.describe(session.machine.statusCode)
    }

    @Test func theStateFollowsTheSessionThroughAUnitAndATransaction() {
        var session = SessionHarness(loginLink: 0)
        #expect(describe(session) == ("idle", []))
        _ = session.query("BEGIN")
        #expect(describe(session) == ("active", []))
        _ = session.ready(0, .inTransaction)
        #expect(describe(session) == ("idle in transaction", []))
        _ = session.query("SELECT 1/0")
        _ = session.ready(0, .failed)
        #expect(describe(session) == ("idle in transaction (aborted)", []))
    }

    @Test func waitingSaysWhatFor() {
        var session = SessionHarness()
        _ = session.query("SELECT * FROM t")
        #expect(describe(session).0 == "waiting for a server connection")
        var paused = SessionHarness(loginLink: 0)
        paused.env.paused = true
        _ = paused.query("INSERT INTO t VALUES (1)")
        #expect(describe(paused).0 == "waiting for RESUME")
    }

    @Test func pinsAreNamed() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("CREATE TEMP TABLE tmp(a int)")
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        _ = session.query("LISTEN channel")
        _ = session.ready(0)
        #expect(describe(session) == ("idle", ["temporaryTable", "listen"]))
    }
}
