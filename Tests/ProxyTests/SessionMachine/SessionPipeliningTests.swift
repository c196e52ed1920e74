@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: pipelined units and COPY")
struct SessionPipeliningTests {
    @Test func aWritePipelinedBehindAReplicaReadWaitsUntilTheReplicaHasAnswered() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        // The client does not wait: the write comes right behind the read.
        #expect(session.query("INSERT INTO t VALUES (1)") == [])
        #expect(session.machine.waiting.count == 1)
        #expect(session.machine.headLink == 1)
        // Input stops while a unit waits; what the client sends next stays in the socket.
        #expect(!session.machine.acceptsClientInput)
        #expect(session.ready(1) == ["hold release", "send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        #expect(session.machine.headLink == 0)
    }

    @Test func unitsForTheSameServerArePipelinedWithoutWaiting() {
        var session = SessionHarness(loginLink: 0)
        #expect(session.query("INSERT INTO t VALUES (1)") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        // Nothing new is routed until the commit's LSN is in (the floor is about to rise)...
        #expect(session.query("UPDATE t SET a = 2") == [])
        // ...then the queued write goes.
        _ = session.ready(0)
        #expect(session.captured(0, "0/3000") == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func aQueryBehindAWaitingBatchPartQueuesInArrivalOrder() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM t")
        _ = session.linkUp(1)
        // A batch part for the primary waits behind the replica's read; the query behind it
        // arrives in the same read and joins the queue.
        #expect(session.client(.parse("", "INSERT INTO t VALUES (1)"), .bind(), .execute(), .query("SELECT 2 FROM t"),
                               inputPauses: false) == [])
        #expect(session.machine.waiting.count == 2)
        #expect(session.machine.waiting.map(\.end) == [.partial, .query])
    }

    @Test func copyDataSentRightBehindTheCopyStatementGoesToItsServerAtOnce() {
        var session = SessionHarness(loginLink: 0)
        // asyncpg's copy_records_to_table: the data does not wait for CopyInResponse.
        #expect(session.client(.query("COPY t FROM STDIN"), .copyData([1, 2, 3]), .copyData([4]), .copyDone)
            == ["send 0 Q", "note 0 readies=1", "send 0 d", "send 0 d", "send 0 c"])
        // The commit LSN is captured once COPY is over: a query behind it would be read as data.
        #expect(session.machine.deferredCaptureLink == 0)
        #expect(session.ready(0) == ["send 0 Q", "expect 0 capture"])
    }

    @Test func copyOutFromAReplicaIsHeldUntilItSucceeded() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("COPY t TO STDOUT")
        #expect(session.linkUp(1) == ["send 1 Q", "note 1 readies=1"])
        #expect(session.machine.holdingLink == 1)
        #expect(session.handle(.linkResponse(1, .copyOutStarted)) == [])
        #expect(session.ready(1) == ["hold release"])
    }

    @Test func responsesHeldBeyondTheLimitAreReleasedAndTheRetryGivenUp() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("SELECT * FROM big")
        _ = session.linkUp(1)
        #expect(session.handle(.heldOverflowed) == ["hold release"])
        #expect(session.machine.holdingLink == nil)
        // A refusal now reaches the client as the server sent it.
        #expect(session.serverError(1, "40001") == [])
        #expect(session.ready(1) == [])
    }
}
