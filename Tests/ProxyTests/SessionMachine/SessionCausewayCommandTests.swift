@testable import Proxy
import Router
import Testing
import Wire

@Suite("Session machine: causeway.* commands answered by the proxy")
struct SessionCausewayCommandTests {
    @Test func setCausewayRouteIsAnsweredWithoutAServerAndSteersTheNextRead() {
        var session = SessionHarness()
        #expect(session.query("SET causeway.route = primary") == ["client C Z"])
        #expect(session.machine.routing.hint == .primary)
        #expect(session.query("SELECT 1") == ["open 0"])
    }

    @Test func showCausewayLSNThroughTheExtendedProtocolIsAnsweredMessageByMessage() {
        var session = SessionHarness()
        session.machine.routing.floor = LSN(0x3000)
        #expect(session.client(.parse("", "SHOW causeway.lsn"), .bind(), .describe(kind: .portal, name: ""), .execute(), .sync)
            == ["client 1 2 T D C Z"])
    }

    @Test func aCausewayCommandMixedWithOtherStatementsInOneBatchIsRefused() {
        var session = SessionHarness()
        #expect(session.client(.parse("a", "SET causeway.route = replica"), .parse("b", "SELECT 1"), .sync)
            == ["client 1 E Z"])
    }

    @Test func aCausewayCommandBehindWorkInFlightWaitsForItsAnswer() {
        var session = SessionHarness(loginLink: 0)
        _ = session.query("UPDATE t SET a = 1")
        #expect(session.query("SHOW causeway.consistency") == [])
        _ = session.ready(0)
        #expect(session.captured(0, "0/3000") == ["client T D C Z"])
    }

    @Test func resetCausewayConsistencyReturnsToTheConfiguredMode() {
        var session = SessionHarness(consistency: .strong)
        _ = session.query("SET causeway.consistency = eventual")
        #expect(session.machine.routing.consistency == .eventual)
        _ = session.query("RESET causeway.consistency")
        #expect(session.machine.routing.consistency == .strong)
    }

    @Test func aTokenFromAnotherClusterIsRefused() {
        var session = SessionHarness()
        session.env.topology.systemIdentifier = 42
        session.env.topology.timeline = 1
        let token = CausalToken(timeline: 1, lsn: LSN(0x3000), systemIdentifier: 7)
        #expect(session.query("SET causeway.min_lsn = '\(token)'") == ["client E Z"])
        #expect(session.machine.routing.floor == nil)
    }
}
