import Testing

@testable import Proxy

// Tests for Sources/Proxy/Config/ReloadPlan.swift: what a reload keeps, adds, removes and defers.

private func config(backends: String, routing: String = "", proxy: String = "") throws -> CausewayConfig {
    try CausewayConfig.parse("""
        [proxy]
        listen = "127.0.0.1:6432"
        \(proxy)

        [routing]
        \(routing)

        \(backends)

        [[users]]
        name = "app"
        password = "secret"
        """, fileName: "reload.toml")
}

private func backend(_ name: String, port: Int, zone: String = "dc1", weight: Int = 1) -> String {
    """
    [[backends]]
    name = "\(name)"
    host = "127.0.0.1"
    port = \(port)
    zone = "\(zone)"
    weight = \(weight)

    """
}

private let three = backend("primary", port: 5432) + backend("replica1", port: 5433) + backend("replica2", port: 5434)

@Suite("Reload plans")
struct ReloadPlanTests {
    @Test("the same file changes nothing")
    func sameFileIsEmpty() throws {
        let current = try config(backends: three)
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: current)
        #expect(plan.isEmpty)
        #expect(plan.keptIndexes == [0, 1, 2])
        #expect(plan.removedIndexes.isEmpty)
    }

    @Test("an added backend gets a new index and the others keep theirs")
    func addedBackendIsNew() throws {
        let current = try config(backends: three)
        let new = try config(backends: three + backend("replica3", port: 5435))
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: new)
        #expect(plan.keptIndexes == [0, 1, 2, nil])
        #expect(plan.removedIndexes.isEmpty)
        #expect(plan.changes == [ReloadChange(kind: .added, subject: "replica3", detail: "127.0.0.1:5435")])
    }

    @Test("a removed backend is retired by its index, whatever its position in the file")
    func removedBackendIsRetired() throws {
        let current = try config(backends: three)
        let new = try config(backends: backend("replica2", port: 5434) + backend("primary", port: 5432))
        let plan = ReloadPlan.make(current: current, indexes: [0, 4, 7], new: new)
        #expect(plan.keptIndexes == [7, 0])
        #expect(plan.removedIndexes == [4])
        #expect(plan.changes.map(\.kind) == [.removed])
        #expect(plan.changes.first?.subject == "replica1")
    }

    @Test("a backend whose address changed is a different server: old index retired, new one added")
    func movedBackendStartsOver() throws {
        let current = try config(backends: three)
        let new = try config(backends: backend("primary", port: 5432) + backend("replica1", port: 6000) + backend("replica2", port: 5434))
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: new)
        #expect(plan.keptIndexes == [0, nil, 2])
        #expect(plan.removedIndexes == [1])
        #expect(plan.changes.map(\.kind) == [.moved])
        #expect(plan.changes.first?.detail.contains("127.0.0.1:5433 → 127.0.0.1:6000") == true)
    }

    @Test("zone and weight changes keep the backend's index and connections")
    func changedBackendKeepsIndex() throws {
        let current = try config(backends: three)
        let new = try config(backends: backend("primary", port: 5432) + backend("replica1", port: 5433, zone: "dc2", weight: 3)
            + backend("replica2", port: 5434))
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: new)
        #expect(plan.keptIndexes == [0, 1, 2])
        #expect(plan.removedIndexes.isEmpty)
        #expect(plan.changes == [ReloadChange(kind: .changed, subject: "replica1", detail: "zone dc1 → dc2, weight 1 → 3")])
    }

    @Test("routing settings apply; listen, workers and monitor settings wait for a restart and keep their values")
    func restartOnlySettingsAreKept() throws {
        let current = try config(backends: three, routing: "max_lag_ms = 1000", proxy: "workers = 2")
        let new = try config(backends: three, routing: "max_lag_ms = 200\nreport_lsn = true",
                             proxy: "workers = 4\nzone = \"dc2\"")
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: new)
        #expect(plan.config.routing.maxLagMs == 200)
        #expect(plan.config.routing.reportLSN)
        #expect(plan.config.proxy.zone == "dc2")
        #expect(plan.config.proxy.workers == 2, "a worker count cannot change without a restart")
        let byKey = Dictionary(uniqueKeysWithValues: plan.changes.map { ($0.subject, $0.kind) })
        #expect(byKey["proxy.workers"] == .needsRestart)
        #expect(byKey["routing.max_lag_ms"] == .setting)
        #expect(byKey["routing.report_lsn"] == .setting)
        #expect(byKey["proxy.zone"] == .setting)
    }

    @Test("user changes are listed without their passwords")
    func userChangesHidePasswords() throws {
        let current = try config(backends: three)
        let text = """
            [[backends]]
            name = "primary"
            host = "127.0.0.1"

            [[users]]
            name = "app"
            password = "another-secret"

            [[users]]
            name = "reporting"
            password = "hunter2"
            """
        let new = try CausewayConfig.parse(text, fileName: "reload.toml")
        let plan = ReloadPlan.make(current: current, indexes: [0, 1, 2], new: new)
        let userLines = plan.changes.filter { $0.subject.hasPrefix("users.") }
        #expect(userLines.map(\.subject) == ["users.app", "users.reporting"])
        #expect(!plan.changes.contains { $0.detail.contains("another-secret") || $0.detail.contains("hunter2") })
    }
}
