@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: transaction pooling (connections lent between transactions)")
struct SessionTransactionPoolingTests {
    static func pooled(_ env: inout TestEnvironment) {
        env.transactionPooling = true
        primaryOnly(&env)
    }

    /// Everything on backend 0, so that tests of statements and settings need no replica.
    static func primaryOnly(_ env: inout TestEnvironment) {
        env.topology.backends[1].health = .down
        env.topology.backends[2].health = .down
    }

    @Test func theLoginConnectionGoesBackToItsPoolAsSoonAsTheClientIsGreeted() {
        let session = SessionHarness(loginLink: 0, configure: Self.pooled)
        #expect(session.machine.links.at(0) == nil)
        #expect(session.lent[0] != nil)
    }

    @Test func anAutocommitWriteBorrowsAConnectionAndLendsItBackOnceItsLSNIsIn() {
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        #expect(session.query("INSERT INTO t VALUES (1)") == ["open 0"])
        #expect(session.linkUp(0) == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
        // The commit's LSN is still on its way on this connection: it stays.
        #expect(session.ready(0).isEmpty)
        #expect(session.captured(0, "0/3000") == ["lend 0"])
    }

    @Test func aTransactionKeepsItsConnectionUntilCommit() {
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        _ = session.query("BEGIN")
        _ = session.linkUp(0)
        #expect(session.ready(0, .inTransaction).isEmpty)
        #expect(session.query("SELECT * FROM t") == ["send 0 Q", "note 0 readies=1"])
        #expect(session.ready(0, .inTransaction).isEmpty)
        #expect(session.query("COMMIT") == ["send 0 Q", "note 0 readies=1"])
        #expect(session.ready(0) == ["lend 0"])
    }

    @Test func stateThatCannotMoveKeepsTheConnectionUntilItIsReleased() {
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        _ = session.query("CREATE TEMP TABLE scratch (i int)")
        _ = session.linkUp(0)
        _ = session.ready(0)
        #expect(session.captured(0, "0/3000").isEmpty)
        #expect(session.machine.pins == [.temporaryTable])
        // Reads stay with the temp table, on the same connection.
        #expect(session.query("SELECT * FROM scratch") == ["send 0 Q", "note 0 readies=1"])
        #expect(session.ready(0).isEmpty)
        _ = session.query("DISCARD ALL")
        #expect(session.ready(0) == ["lend 0"])
    }

    @Test func aCancelOnItsWayKeepsTheConnectionUntilTheServerHasIt() {
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        _ = session.query("BEGIN")
        _ = session.linkUp(0)
        _ = session.ready(0, .inTransaction)
        _ = session.query("SELECT pg_sleep(10)")
        session.env.cancelInFlight = true
        _ = session.ready(0, .inTransaction)
        _ = session.query("ROLLBACK")
        // Lent now, the late cancel could hit another client's query: kept, and the session asks
        // to be woken to look again.
        #expect(session.ready(0) == ["wait topology"])
        #expect(session.machine.view.heldForCancel)
        #expect(session.handle(.topologyChanged).isEmpty)
        session.env.cancelInFlight = false
        #expect(session.handle(.topologyChanged) == ["lend 0"])
        #expect(!session.machine.view.heldForCancel)
    }

    @Test func settingsAreBroughtToABorrowedConnectionOnlyWhereTheyDiffer() {
        var first = SessionHarness(loginLink: 0, id: 4_200_001, configure: Self.pooled)
        _ = first.query("SET search_path TO app, public")
        _ = first.linkUp(0)
        _ = first.ready(0)
        #expect(first.captured(0, "0/3000") == ["lend 0"])
        let holding = first.lent[0]!
        #expect(holding.settings.map(\.name) == ["search_path"])

        // A client without that setting gets it reset; one with the same gets nothing sent.
        var plain = SessionHarness(id: 4_200_002, configure: Self.pooled)
        _ = plain.query("INSERT INTO t VALUES (1)")
        #expect(plain.linkUp(0, holding: holding) == ["expect 0 settings", "send 0 Q Q Q", "note 0 readies=1", "expect 0 capture"])
        #expect(plain.sentMessages(0).first == "Q RESET search_path")

        var same = SessionHarness(id: 4_200_003, configure: Self.pooled)
        _ = same.query("SET search_path TO app, public")
        _ = same.linkUp(0)
        _ = same.ready(0)
        _ = same.captured(0, "0/3000")
        _ = same.query("INSERT INTO t VALUES (1)")
        #expect(same.linkUp(0, holding: holding) == ["send 0 Q Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func statementsGoToServersUnderTheProxysNamesAndAClosedOneStaysForOthers() {
        var session = SessionHarness(loginLink: 0) { $0.topology.backends[2].health = .down }
        _ = session.client(.parse("s1", "SELECT * FROM t WHERE i = $1"), .sync)
        _ = session.linkUp(1)
        let id = session.machine.statements["s1"]!.id
        #expect(session.sentMessages(1) == ["P causeway_\(id)", "S"])
        _ = session.ready(1)
        _ = session.client(.bind("s1"), .execute(), .close(kind: .statement, name: "s1"), .sync)
        #expect(session.sentMessages(1) == ["B causeway_\(id)", "E", "C S causeway_0", "S"])
        #expect(session.machine.statements["s1"] == nil)
        #expect(session.machine.links.at(1)?.server.has(id) == true)
    }

    @Test func aParseOfAStatementAnotherClientLeftOnTheConnectionIsPrecededByItsClose() {
        var first = SessionHarness(loginLink: 0, configure: Self.pooled)
        _ = first.client(.parse("a", "SELECT * FROM t WHERE i = $1"), .bind("a"), .execute(), .sync)
        _ = first.linkUp(0)
        _ = first.ready(0)
        #expect(first.captured(0, "0/3000") == ["lend 0"])

        var second = SessionHarness(id: 4_200_002, configure: Self.pooled)
        second.env = first.env
        _ = second.client(.parse("b", "SELECT * FROM t WHERE i = $1"), .bind("b"), .execute(), .sync)
        let id = first.machine.statements["a"]!.id
        #expect(second.linkUp(0, holding: first.lent[0]!)
            == ["expect 0 injected=1 after=0", "send 0 C P B E S Q", "note 0 readies=1 completions=1", "expect 0 capture"])
        #expect(second.sentMessages(0).prefix(5) == ["C S causeway_\(id)", "P causeway_\(id)", "B causeway_\(id)", "E", "S"])
    }

    @Test func onlyPreparingOutsideATransactionIsAnsweredWithoutBorrowingAConnection() {
        // pgbench -M prepared prepares synchronously: waiting for a connection its own other
        // clients hold would never end.
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        #expect(session.client(.parse("P_0", "UPDATE t SET v = v + $1"), .sync) == ["client 1", "client Z"])
        #expect(session.machine.statements["P_0"] != nil)
        #expect(session.client(.bind("P_0"), .execute(), .sync) == ["open 0"])
        #expect(session.linkUp(0) == ["expect 0 injected=1 after=0", "send 0 P B E S Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func aStatementTheBorrowedConnectionLacksIsPreparedBeforeItsBind() {
        var session = SessionHarness(loginLink: 0, configure: Self.pooled)
        _ = session.client(.parse("s1", "INSERT INTO t VALUES ($1)"), .sync)
        _ = session.linkUp(0)
        _ = session.ready(0)
        // The next transaction borrows a connection that never saw the statement.
        #expect(session.client(.bind("s1"), .execute(), .sync) == ["open 0"])
        #expect(session.linkUp(0, holding: ServerSessionState())
            == ["expect 0 injected=1 after=0", "send 0 P B E S Q", "note 0 readies=1", "expect 0 capture"])
    }

    @Test func statementsADiscardAllMayHaveDroppedAreClosedBeforeTheyArePreparedAgain() {
        // DISCARD ALL inside a transaction block fails: the statements may still be there.
        var session = SessionHarness(loginLink: 0, configure: Self.primaryOnly)
        _ = session.client(.parse("s1", "INSERT INTO t VALUES ($1)"), .sync)
        _ = session.ready(0)
        let id = session.machine.statements["s1"]!.id
        _ = session.query("DISCARD ALL")
        #expect(session.machine.links.at(0)?.server.isUncertain(id) == true)
        _ = session.ready(0)
        _ = session.captured(0, "0/3000")
        _ = session.client(.bind("s1"), .execute(), .sync)
        #expect(session.sentMessages(0).prefix(2) == ["C S causeway_\(id)", "P causeway_\(id)"])
    }

    @Test func beyondTheCapTheLeastRecentlyUsedStatementsAreClosed() {
        var session = SessionHarness(loginLink: 0) {
            $0.maxPreparedStatements = 2
            Self.primaryOnly(&$0)
        }
        for (name, text) in [("s1", "INSERT INTO t VALUES (1)"), ("s2", "INSERT INTO t VALUES (2)")] {
            _ = session.client(.parse(name, text), .sync)
            _ = session.ready(0)
        }
        let first = session.machine.statements["s1"]!.id
        #expect(session.client(.parse("s3", "INSERT INTO t VALUES (3)"), .sync)
            == ["expect 0 closes", "send 0 C S P S", "note 0 readies=1 completions=1"])
        #expect(session.sentMessages(0).first == "C S causeway_\(first)")
        #expect(session.machine.links.at(0)?.server.statements.count == 2)
    }

    @Test func deallocateOfAProtocolLevelStatementIsAnsweredByTheProxy() {
        var session = SessionHarness(loginLink: 0, configure: Self.primaryOnly)
        _ = session.client(.parse("_pg3_0", "SELECT 1"), .sync)
        _ = session.ready(0)
        #expect(session.query("DEALLOCATE _pg3_0") == ["client C", "client Z"])
        #expect(session.machine.statements["_pg3_0"] == nil)
        // A name the client never prepared through the protocol is the server's to answer.
        #expect(session.query("DEALLOCATE other").first == "send 0 Q Q")
    }
}
