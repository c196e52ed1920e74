@testable import Proxy
import Router
import Testing
import Wire

@Suite("First login: which server a new kind of login goes to")
struct FirstLoginTests {
    private let cluster = TestEnvironment().topology
    private let unknown = Topology(backends: [BackendStatus(index: 0, name: "pg0", role: .unknown),
                                              BackendStatus(index: 1, name: "pg1", role: .unknown)])

    private func describe(_ actions: [FirstLogin.Action]) -> [String] {
        actions.map { action in
            switch action {
            case let .connect(index): "connect \(index)"
            case let .close(index): "close \(index)"
            case let .greet(link, isPrimary): "greet \(link)" + (isPrimary ? " primary" : " replica")
            case let .refuse(error): "refuse \(error.sqlState ?? "")"
            case let .log(_, event, _): "log \(event)"
            }
        }
    }

    @Test func theMonitorsPrimaryIsTriedFirst() {
        var login = FirstLogin(session: 1)
        #expect(describe(login.start(topology: cluster, configured: [1, 0])) == ["connect 0"])
        #expect(describe(login.linkReady(0, standby: false, label: "pg0", topology: cluster)) == ["greet 0 primary"])
    }

    @Test func beforeTheMonitorHasSeenTheClusterAStandbyAmongTheCandidatesIsSkipped() {
        var login = FirstLogin(session: 1)
        #expect(describe(login.start(topology: unknown, configured: [0, 1])) == ["connect 0"])
        #expect(describe(login.linkReady(0, standby: true, label: "pg0", topology: unknown)) == ["close 0", "connect 1"])
        #expect(describe(login.linkReady(1, standby: false, label: "pg1", topology: unknown)) == ["greet 1 primary"])
        #expect(login.failures == ["pg0 is a standby"])
    }

    @Test func withThePrimaryUnreachableAnUpReplicaLetsTheClientInForReads() {
        var login = FirstLogin(session: 1)
        _ = login.start(topology: cluster, configured: [0])
        let down = ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure, message: "could not connect to pg0")
        #expect(describe(login.linkFailed(0, down, label: "pg0", name: "pg0", topology: cluster))
            == ["log login_without_primary", "connect 1"])
        #expect(describe(login.linkReady(1, standby: true, label: "pg1", topology: cluster)) == ["greet 1 replica"])
    }

    @Test func aServerThatRefusesTheLoginItselfGivesTheClientItsError() {
        var login = FirstLogin(session: 1)
        _ = login.start(topology: cluster, configured: [0])
        let refused = ErrorFields(severity: .fatal, sqlState: "28P01", message: "password authentication failed")
        #expect(describe(login.linkFailed(0, refused, label: "pg0", name: "pg0", topology: cluster))
            == ["log server_login_failed", "refuse 28P01"])
    }

    @Test func noReachableBackendAtAllIsRefusedWithTheReasons() {
        var login = FirstLogin(session: 1)
        let onlyPrimary = Topology(backends: [BackendStatus(index: 0, name: "pg0", role: .primary)])
        _ = login.start(topology: onlyPrimary, configured: [0])
        let down = ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure, message: "could not connect to pg0")
        let actions = login.linkFailed(0, down, label: "pg0", name: "pg0", topology: onlyPrimary)
        #expect(describe(actions) == ["log no_primary_available", "refuse 08006"])
        guard case let .refuse(error)? = actions.last else { return }
        #expect(error.message == "no primary backend available: could not connect to pg0")
    }

    @Test func twoPrimariesAreRefusedRatherThanGuessed() {
        var login = FirstLogin(session: 1)
        var split = cluster
        split.backends[1].role = .primary
        split.multiplePrimaries = true
        #expect(describe(login.start(topology: split, configured: [0, 1])) == ["refuse 08006"])
    }

    @Test func eventsForAnotherLinkAreIgnored() {
        var login = FirstLogin(session: 1)
        _ = login.start(topology: cluster, configured: [0])
        #expect(login.linkReady(2, standby: false, label: "pg2", topology: cluster).isEmpty)
    }
}
