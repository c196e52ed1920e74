// The monitor against a real primary and two streaming replicas (the proxy's sandbox).

import Foundation
import LagMonitor
import Router
import Testing

@Suite("LagMonitor against a real cluster", .serialized)
struct LagMonitorClusterTests {
    @Test("roles, idle lag, paused replay, a replica restart, volatile functions, pollSoon", .timeLimit(.minutes(2)))
    func endToEnd() throws {
        let cluster = try TestCluster.start(replicas: 2)
        defer { cluster.down() }
        let primaryPort = cluster.primaryPort
        try cluster.sql(port: primaryPort, database: "app", """
            CREATE FUNCTION cw_app_touch() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
            CREATE FUNCTION cw_app_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
            CREATE FUNCTION "CW_Mixed"() RETURNS int LANGUAGE sql AS 'SELECT 1';
            """)
        try cluster.sql(port: primaryPort, """
            CREATE FUNCTION cw_pg_touch() RETURNS int LANGUAGE sql AS 'SELECT 1';
            CREATE TABLE cw_lag (x int);
            """)

        var backends = [MonitoredBackend(index: 0, name: "primary", host: TestCluster.host, port: primaryPort, zone: "dc1")]
        for (i, port) in cluster.replicaPorts.enumerated() {
            backends.append(MonitoredBackend(index: i + 1, name: cluster.replicaNames[i], host: TestCluster.host, port: port, zone: "dc1"))
        }
        let (r1, r2) = (1, 2)
        let logs = LogLines()
        let monitor = LagMonitor(
            backends: backends,
            settings: MonitorSettings(
                intervalMs: 50, user: TestCluster.user, password: TestCluster.password,
                connectTimeoutMs: 1000, volatileRefreshMs: 500),
            log: logs.sink)
        monitor.start()
        var stopped = false
        defer { if !stopped { monitor.stop() } }
        let box = monitor.topology

        // Roles come from pg_is_in_recovery().
        let ready = box.wait(timeoutMs: 10_000) { t in
            t.backends.allSatisfy { $0.health == .up } && t.backends.map(\.role) == [.primary, .replica, .replica]
        }
        try #require(ready != nil, "not all up: \(box.current().backends)")
        #expect(ready?.primary?.name == "primary")
        #expect(ready?.backends[0].currentLSN != nil)
        #expect(ready?.backends[r1].replayLSN != nil && ready?.backends[r1].receiveLSN != nil)

        // Idle: lag 0.
        let idle = box.wait(timeoutMs: 5000) { t in
            [r1, r2].allSatisfy { t.backends[$0].lagBytes == 0 && t.backends[$0].lagMs == 0 }
        }
        try #require(idle != nil, "replicas never showed 0 lag: \(box.current().backends)")
        var idleLags: [Double] = []
        var idleTrace: [String] = []
        var generation = box.generation
        let idleEnd = Date().addingTimeInterval(1)
        while Date() < idleEnd {
            _ = box.waitForGeneration(atLeast: generation + 1, timeoutMs: 200)
            let t = box.current()
            generation = t.generation
            idleLags += [t.backends[r1].lagMs, t.backends[r2].lagMs]
            idleTrace.append("\(t.backends[0].currentLSN.map(String.init(describing:)) ?? "-") "
                + [r1, r2].map { "\(t.backends[$0].replayLSN.map(String.init(describing:)) ?? "-")/\(t.backends[$0].receiveLSN.map(String.init(describing:)) ?? "-") \(t.backends[$0].lagMs)" }.joined(separator: " "))
        }
        #expect(idleLags.count >= 20)
        // Mostly exactly 0. WAL written asynchronously (autovacuum on the tables just created, the
        // bgwriter's running-xacts record) reaches replicas only at the WAL writer's next round
        // (wal_writer_delay, 200 ms): the replica really lacks it meanwhile, so a short blip is
        // measured, never anything near a second.
        let trace = idleTrace.joined(separator: "\n")
        #expect(Double(idleLags.filter { $0 == 0 }.count) >= Double(idleLags.count) * 0.5, "idle lags:\n\(trace)")
        #expect(idleLags.max() ?? 0 < 1000, "idle lags:\n\(trace)")

        // Paused replay on replica1 plus writes on the primary: lag in bytes, growing lag in ms.
        try cluster.sql(port: cluster.replicaPorts[0], "SELECT pg_catalog.pg_wal_replay_pause()")
        try cluster.sql(port: primaryPort, "INSERT INTO cw_lag SELECT generate_series(1, 10000)")
        let lagging = box.wait(timeoutMs: 5000) { t in t.backends[r1].lagBytes > 0 && t.backends[r1].replayPaused }
        try #require(lagging != nil, "replica1 never lagged: \(box.current().backends[r1])")
        let firstLag = lagging!.backends[r1].lagMs
        Thread.sleep(forTimeInterval: 0.6)
        let later = box.current().backends[r1]
        #expect(later.lagBytes > 0)
        #expect(later.lagMs >= firstLag + 400, "lag went from \(firstLag) to \(later.lagMs) ms in 600 ms")
        #expect(later.catchUpEstimateMs == nil, "paused replay has no catch-up estimate")
        #expect(box.wait(timeoutMs: 3000) { $0.backends[r2].lagBytes == 0 && $0.backends[r2].lagMs == 0 } != nil,
                "replica2 keeps up meanwhile")

        // Resume: back to 0 within a few intervals.
        try cluster.sql(port: cluster.replicaPorts[0], "SELECT pg_catalog.pg_wal_replay_resume()")
        let resumedAt = Date()
        let caughtUp = box.wait(timeoutMs: 5000) { t in
            t.backends[r1].lagBytes == 0 && t.backends[r1].lagMs == 0 && !t.backends[r1].replayPaused
        }
        #expect(caughtUp != nil, "replica1 did not catch up: \(box.current().backends[r1])")
        #expect(Date().timeIntervalSince(resumedAt) < 2)

        // A stopped replica goes down, and comes back up after a restart.
        try cluster.stop(cluster.replicaNames[1])
        let down = box.wait(timeoutMs: 5000) { $0.backends[r2].health == .down }
        #expect(down?.backends[r2].lastError?.isEmpty == false)
        #expect(down?.backends[r2].role == .replica)
        #expect(down?.backends[r1].health == .up)
        try cluster.restart(cluster.replicaNames[1])
        let back = box.wait(timeoutMs: 15_000) { $0.backends[r2].health == .up }
        #expect(back != nil, "replica2 did not come back: \(box.current().backends[r2])")
        #expect(back?.backends[r2].lastError == nil)
        #expect(logs.contains("event=backend_down backend=\(cluster.replicaNames[1])"))

        // User-defined VOLATILE functions from every database, lower-cased; not STABLE ones,
        // not the system's.
        let expected: Set<String> = ["cw_app_touch", "cw_pg_touch", "cw_mixed"]
        let loaded = box.wait(timeoutMs: 5000) { $0.volatileFunctions.isSuperset(of: expected) }
        #expect(loaded != nil, "volatile functions: \(box.current().volatileFunctions.sorted())")
        #expect(!box.current().volatileFunctions.contains("cw_app_stable"))
        #expect(!box.current().volatileFunctions.contains("random"))
        try cluster.sql(port: primaryPort, database: "app", "CREATE FUNCTION cw_late() RETURNS int LANGUAGE sql AS 'SELECT 2'")
        #expect(box.wait(timeoutMs: 5000) { $0.volatileFunctions.contains("cw_late") } != nil)

        #expect(monitor.stop())
        stopped = true

        // pollSoon: a monitor with a 5 s interval answers a pollSoon within a fraction of that.
        let slow = LagMonitor(
            backends: [backends[0]],
            settings: MonitorSettings(intervalMs: 5000, user: TestCluster.user, password: TestCluster.password),
            log: { _ in })
        slow.start()
        defer { slow.stop() }
        try #require(slow.topology.wait(timeoutMs: 5000) { $0.backends[0].health == .up } != nil)
        let before = slow.topology.generation
        let asked = Date()
        slow.pollSoon()
        #expect(slow.topology.waitForGeneration(atLeast: before + 1, timeoutMs: 2000))
        #expect(Date().timeIntervalSince(asked) < 1)
        #expect(slow.stop())
    }
}
