@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: extended-protocol batches, Flush and prepared statements")
struct SessionBatchTests {
    @Test func aFlushSendsThePartSoFarAndBindsTheRestOfTheBatchToThatServer() {
        var session = SessionHarness(loginLink: 0)
        session.env.topology.backends[2].health = .down
        #expect(session.client(.parse("s1", "SELECT * FROM t"), .describe(kind: .statement, name: "s1"), .flush) == ["open 1"])
        #expect(session.linkUp(1) == ["send 1 P D H", "note 1 readies=0 completions=1"])
        #expect(session.machine.boundLink == 1)
        // The replica goes out of favour meanwhile: the batch still ends where it began.
        session.env.publish { $0.backends[1].lagMs = 60_000 }
        #expect(session.client(.bind("s1"), .execute(), .sync) == ["send 1 B E S", "note 1 readies=1"])
        #expect(session.machine.boundLink == nil)
    }

    @Test func aQueryAfterABatchThatRanNothingEndsThatBatchWithTheProxysOwnSync() {
        var session = SessionHarness(loginLink: 0)
        _ = session.client(.parse("s1", "SELECT * FROM t"), .describe(kind: .statement, name: "s1"), .flush)
        _ = session.linkUp(1)
        // asyncpg prepares with Parse/Describe/Flush, then sends COPY as a simple query.
        #expect(session.query("INSERT INTO t VALUES (1)") == ["send 1 S", "batchEnd 1"])
        // The insert waits until the replica's responses are complete, so the order holds.
        #expect(!session.machine.acceptsClientInput)
        #expect(session.handle(.linkResponse(1, .internalDone(tag: SessionMachine.batchEndTag, status: .idle)))
            == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func aParseOfAWriteWithoutExecuteCapturesNothingSoTheUnnamedStatementSurvives() {
        // psql's \gdesc, libpq's PQprepare(""): Parse/Describe/Sync, then Bind/Execute later.
        var session = SessionHarness(loginLink: 0)
        #expect(session.client(.parse("", "INSERT INTO t VALUES ($1)"), .describe(kind: .statement, name: ""), .sync)
            == ["send 0 P D S", "note 0 readies=1 completions=1"])
        _ = session.ready(0)
        #expect(session.machine.links.at(0)?.server.unnamed == session.machine.statements[""]?.id)
        #expect(session.client(.bind(""), .execute(), .sync) == ["send 0 B E S Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func anUnnamedStatementASimpleQueryDestroyedIsPreparedAgainBeforeItsNextBind() {
        var session = SessionHarness(loginLink: 0)
        _ = session.client(.parse("", "INSERT INTO t VALUES ($1)"), .describe(kind: .statement, name: ""), .sync)
        _ = session.ready(0)
        _ = session.client(.bind(""), .execute(), .sync)
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        // The capture's simple query replaced the server's unnamed statement.
        #expect(session.machine.links.at(0)?.server.unnamed == nil)
        #expect(session.client(.bind(""), .execute(), .sync)
            == ["expect 0 injected=1 after=1", "send 0 P B E S Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func aNamedStatementIsPreparedOnEveryServerThatRunsIt() {
        var session = SessionHarness(loginLink: 0)
        _ = session.client(.parse("s1", "SELECT * FROM t"), .sync)
        _ = session.linkUp(1)
        _ = session.ready(1)
        // The replica goes down (and the monitor has seen the other one since, so the move
        // keeps reads monotonic): the statement runs on the other replica, prepared there first.
        session.env.publish { $0.backends[1].health = .down }
        session.env.publish()
        #expect(session.client(.bind("s1"), .execute(), .sync) == ["open 2"])
        // The session reads from one replica at a time: the old link closes.
        #expect(session.linkUp(2) == ["expect 2 injected=1 after=0", "send 2 P B E S", "note 2 readies=1", "close 1"])
    }

    @Test func aStatementRedefinedUnderTheSameNameGetsANewServerNameSoNoServerNeedsAClose() {
        var session = SessionHarness(loginLink: 0)
        _ = session.client(.parse("s1", "SELECT * FROM t"), .sync)
        _ = session.linkUp(1)
        _ = session.ready(1)
        let old = session.machine.statements["s1"]!.id
        _ = session.client(.close(kind: .statement, name: "s1"), .parse("s1", "INSERT INTO t VALUES (1)"), .sync)
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        #expect(session.machine.statements["s1"]!.id != old)
        session.env.setReplay(1, 0x3000)
        #expect(session.client(.parse("s2", "SELECT 2 FROM t"), .sync) == ["send 1 P S", "note 1 readies=1 completions=1"])
    }

    @Test func theRestOfARefusedBatchIsDroppedUpToItsSync() {
        var session = SessionHarness(loginLink: 0)
        // A write with a replica hint is refused; the batch's other messages are skipped.
        #expect(session.client(.parse("", "/* causeway:replica */ INSERT INTO t VALUES (1)"), .bind(), .execute(), inputPauses: true)
            == ["client E"])
        #expect(session.client(.describe(kind: .portal, name: ""), .sync) == ["client Z"])
        #expect(session.machine.acceptsClientInput)
    }
}
