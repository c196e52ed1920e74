@testable import Proxy
import Router
import Testing

/// What a pooled server connection holds, and how a session brings one to its own settings.
struct ServerSessionStateTests {
    static func set(_ name: String, _ sql: String) -> SessionCommand {
        SessionCommand(action: .set(name: name, value: ""), sql: sql)
    }

    @Test func aBorrowedConnectionGetsOnlyTheSettingsThatDiffer() {
        var session = TrackedSettings()
        session.apply(Self.set("search_path", "SET search_path TO app"))
        session.apply(Self.set("timezone", "SET TIME ZONE 'UTC';"))
        let applied = [TrackedSettings.Command(name: "search_path", sql: "SET search_path TO app"),
                       TrackedSettings.Command(name: "statement_timeout", sql: "SET statement_timeout = '5s'")]
        #expect(session.replaySQL(from: applied) == "RESET statement_timeout; SET TIME ZONE 'UTC'")
        #expect(session.replaySQL(from: session.commands) == nil)
        #expect(TrackedSettings().replaySQL(from: []) == nil)
    }

    @Test func resetForgetsASettingAndResetAllKeepsTheRole() {
        var session = TrackedSettings()
        session.apply(Self.set("role", "SET ROLE reporting"))
        session.apply(Self.set("search_path", "SET search_path TO app"))
        session.apply(SessionCommand(action: .reset(name: "search_path"), sql: "RESET search_path"))
        #expect(session.commands.map(\.name) == ["role"])
        session.apply(Self.set("work_mem", "SET work_mem = '64MB'"))
        session.apply(SessionCommand(action: .resetAll, sql: "RESET ALL"))
        #expect(session.commands.map(\.name) == ["role"])
        // A connection that has the role gets it reset when a session without one borrows it.
        #expect(TrackedSettings().replaySQL(from: session.commands) == "RESET ROLE")
    }

    @Test func resetReturnsToTheSessionsOwnApplicationNameNotTheConnections() {
        var session = TrackedSettings()
        let own = TrackedSettings.Command(name: "application_name", sql: "SET application_name = 'billing'")
        session.setBaseline([own])
        session.apply(Self.set("application_name", "SET application_name = 'renamed'"))
        let reset = SessionCommand(action: .reset(name: "application_name"), sql: "RESET application_name")
        #expect(session.resetsBaseline(reset))
        session.apply(reset)
        #expect(session.commands == [own])
        session.apply(Self.set("work_mem", "SET work_mem = '64MB'"))
        session.apply(SessionCommand(action: .resetAll, sql: "RESET ALL"))
        #expect(session.commands == [own])
        // A connection another client named gets this client's name.
        #expect(session.replaySQL(from: [.init(name: "application_name", sql: "SET application_name = 'reports'")])
            == "SET application_name = 'billing'")
    }

    @Test func setLocalIsNeverKept() {
        var session = TrackedSettings()
        session.apply(SessionCommand(action: .set(name: "work_mem", value: "'1MB'"), sql: "SET LOCAL work_mem = '1MB'", isLocal: true))
        #expect(session.isEmpty)
    }

    @Test func beyondTheCapTheLeastRecentlyUsedGoButNotThoseTheUnitUses() {
        var server = ServerSessionState()
        for id: UInt64 in [1, 2, 3] { server.touch(id) }
        server.touch(1)
        let unitStart = server.nextTick
        server.touch(4)
        #expect(server.evict(toFit: 2, keepFrom: unitStart) == [2, 3])
        #expect(Set(server.statements.keys) == [1, 4])
        // What the unit itself uses stays even beyond the cap.
        let next = server.nextTick
        server.touch(5)
        server.touch(6)
        #expect(server.evict(toFit: 1, keepFrom: next) == [1, 4])
        #expect(Set(server.statements.keys) == [5, 6])
    }

    @Test func theResetQueryLeavesWhatTheRouterSaysItLeaves() {
        var server = ServerSessionState()
        server.touch(7)
        server.unnamed = 8
        server.settings = [.init(name: "search_path", sql: "SET search_path TO app")]
        var afterDeallocate = server
        afterDeallocate.reset(by: QueryClassifier.classify("DEALLOCATE ALL", volatileFunctions: []))
        #expect(afterDeallocate.statements.isEmpty && afterDeallocate.settings.count == 1 && afterDeallocate.lent)
        var afterDiscard = server
        afterDiscard.reset(by: QueryClassifier.classify("DISCARD ALL", volatileFunctions: []))
        #expect(afterDiscard.statements.isEmpty && afterDiscard.unnamed == nil && afterDiscard.settings.isEmpty)
        var afterNothing = server
        afterNothing.reset(by: QueryClassifier.classify("", volatileFunctions: []))
        #expect(afterNothing.has(7) && afterNothing.settings.count == 1)
    }
}
