@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: links opened on demand, reads and writes routed")
struct SessionRoutingTests {
    @Test func aSessionGreetedWithoutAServerOpensTheReplicaItsFirstReadNeeds() {
        var session = SessionHarness()
        #expect(session.machine.links.allSatisfy { $0 == nil })
        #expect(session.query("SELECT * FROM t") == ["open 1"])
        #expect(!session.machine.acceptsClientInput)
        #expect(session.linkUp(1) == ["send 1 Q", "note 1 readies=1"])
        #expect(session.machine.holdingLink == 1)
        #expect(session.ready(1) == ["hold release"])
        #expect(session.machine.acceptsClientInput)
        #expect(session.machine.isQuiet)
    }

    @Test func aWriteOpensThePrimaryAndItsCommitLSNIsCapturedBehindIt() {
        var session = SessionHarness()
        #expect(session.query("INSERT INTO t VALUES (1)") == ["open 0"])
        #expect(session.linkUp(0) == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        #expect(session.ready(0) == [])
        #expect(session.machine.capture == .inFlight(captured: nil))
    }

    @Test func aReadBehindACommitWaitsForItsLSNAndThenGoesWhereTheNewFloorAllows() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("INSERT INTO t VALUES (1)")
        _ = session.ready(0)
        // The LSN is not in yet: the read waits, whatever the replicas look like.
        #expect(session.query("SELECT * FROM t") == [])
        #expect(!session.machine.acceptsClientInput)
        // The commit is at 0/3000 (12288), beyond the replicas' 5000: the read goes to the primary,
        // and what it saw there is captured too (a later replica read must not show less).
        #expect(session.captured(0, "0/3000") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        #expect(session.machine.routing.floor == LSN(0x3000))
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        // Once a replica has replayed the commit, reads go back to it.
        session.env.setReplay(1, 0x3000)
        #expect(session.query("SELECT * FROM t") == ["open 1"])
    }

    @Test func eventualConsistencyReadsGoToReplicasThatHaveNotReplayedTheSessionsWrite() {
        var session = SessionHarness(consistency: .eventual, loginLink: 0)
        // The capture still runs: SHOW causeway.lsn hands out the position as a token.
        #expect(session.query("INSERT INTO t VALUES (1)") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        #expect(session.query("SELECT * FROM t") == ["open 1"])
    }

    @Test func aTransactionStaysOnItsServerAndCapturesOnlyAtItsCommit() {
        var session = SessionHarness(loginLink: 0)
        #expect(session.query("BEGIN") == ["send 0 Q", "note 0 readies=1"])
        _ = session.ready(0, .inTransaction)
        #expect(session.query("INSERT INTO t VALUES (1)") == ["send 0 Q", "note 0 readies=1"])
        _ = session.ready(0, .inTransaction)
        // A read inside the transaction stays on the primary.
        #expect(session.query("SELECT * FROM t") == ["send 0 Q", "note 0 readies=1"])
        _ = session.ready(0, .inTransaction)
        #expect(session.query("COMMIT") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func readsStayOnTheirReplicaAndRaiseTheFloorToWhatItShowed() {
        var session = SessionHarness(loginLink: 0)
        session.env.setReplay(1, 7000)
        _ = session.query("SELECT 1 FROM t")
        _ = session.linkUp(1)
        _ = session.ready(1)
        #expect(session.machine.routing.stickyReplica == 1)
        #expect(session.machine.routing.floor == LSN(7000))
        #expect(session.query("SELECT 2 FROM t") == ["send 1 Q", "note 1 readies=1"])
    }

    @Test func theCancelKeyIsLiveOnlyWhileWorkIsOnAServer() {
        var session = SessionHarness(loginLink: 0)
        let sent = session.handle(.clientMessage(.query("INSERT INTO t VALUES (1)"), type: FrontendMessage.TypeByte.query,
                                                 body: FrontendMessage.query("INSERT INTO t VALUES (1)").encoded()[5...]),
                                  everything: true)
        // The login already pointed the key at this link.
        #expect(!sent.contains("cancel key 0"))
        #expect(sent.last == "running true")
        #expect(session.handle(.linkResponse(0, .clientReady(.idle)), everything: true).last == "running false")
    }

    @Test func theCancelKeyFollowsTheWorkToAnotherServerAndToANewConnectionOfTheSameOne() {
        var session = SessionHarness(consistency: .eventual, loginLink: 0)
        _ = session.query("SELECT * FROM t")
        #expect(session.handle(.linkReady(1, ServerGreeting()), everything: true).contains("cancel key 1"))
        _ = session.ready(1)
        // The replica's connection is lost while idle; the next read opens a new one there.
        _ = session.linkLost(1, endedWhileIdle: true)
        _ = session.query("SELECT * FROM t")
        #expect(session.handle(.linkReady(1, ServerGreeting()), everything: true).contains("cancel key 1"))
    }

    @Test func aClientWhoseInputRunsOutMidBatchHasWhatArrivedSentAtOnce() {
        var session = SessionHarness(loginLink: 0)
        // libpq pipeline mode: Parse/Bind/Execute of a failing statement, no Sync yet.
        #expect(session.client(.parse("", "SELECT 1/0"), .bind(), .execute())
            == ["open 1"])
        #expect(session.linkUp(1) == ["send 1 P B E", "note 1 readies=0 completions=1"])
        // The rest of the batch follows to the same server.
        #expect(session.client(.sync) == ["send 1 S", "note 1 readies=1"])
    }
}
