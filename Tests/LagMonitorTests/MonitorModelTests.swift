import Foundation
import LagMonitor
import Router
import Testing

private let ms: UInt64 = 1_000_000

private func backends() -> [MonitoredBackend] {
    [
        MonitoredBackend(index: 0, name: "primary", host: "127.0.0.1", port: 5432, zone: "dc1", declaredRole: .primary),
        MonitoredBackend(index: 1, name: "replica1", host: "127.0.0.1", port: 5433, zone: "dc1"),
        MonitoredBackend(index: 2, name: "replica2", host: "127.0.0.1", port: 5434, zone: "dc2", weight: 3),
    ]
}

private func primary(_ lsn: UInt64) -> PollSample {
    PollSample(inRecovery: false, currentLSN: LSN(lsn))
}

private func replica(_ replay: UInt64, paused: Bool = false) -> PollSample {
    PollSample(inRecovery: true, replayLSN: LSN(replay), receiveLSN: LSN(replay), replayPaused: paused)
}

@Suite("Poll samples, backoff and the monitor model")
struct MonitorModelTests {
    @Test("the poll query's row is parsed for a primary and a replica")
    func parseRows() {
        #expect(PollSample(row: ["f", "16/B374D848", nil, nil, "f"])
            == PollSample(inRecovery: false, currentLSN: LSN(0x16_B374_D848)))
        #expect(PollSample(row: ["t", nil, "0/3000148", "0/3000200", "t"])
            == PollSample(inRecovery: true, replayLSN: LSN(0x300_0148), receiveLSN: LSN(0x300_0200), replayPaused: true))
        #expect(PollSample(row: ["t", nil, "0/3000148", nil, "f"])?.receiveLSN == nil)
        #expect(PollSample(row: ["x", nil, nil, nil, "f"]) == nil)
        #expect(PollSample(row: ["f", nil, nil, nil, "f"]) == nil, "a primary must report its position")
        #expect(PollSample(row: ["f", "nonsense", nil, nil, "f"]) == nil)
        #expect(PollSample(row: ["f", "0/1"]) == nil)
        #expect(PollSample.query.contains("pg_is_in_recovery"))
    }

    @Test("reconnect delays double from 100 ms up to 5 s and start over after a success")
    func backoff() {
        var backoff = ReconnectBackoff()
        let delays = (0..<9).map { _ in backoff.nextDelayMs() }
        #expect(delays == [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000])
        for _ in 0..<100 { _ = backoff.nextDelayMs() }
        #expect(backoff.nextDelayMs() == 5000)
        backoff.reset()
        #expect(backoff.nextDelayMs() == 100)
    }

    @Test("settings defaults follow the design")
    func settingsDefaults() {
        #expect(MonitorSettings(intervalMs: 100).intervalMs == 100)
        #expect(MonitorSettings().database == "postgres")
        #expect(MonitorSettings().connectTimeoutMs == 2000)
        #expect(MonitorSettings().volatileRefreshMs == 10_000)
    }

    @Test("before any poll, backends show their declared role and unknown health")
    func initialSnapshot() {
        var model = MonitorModel(backends: backends())
        let topology = model.snapshot(now: 0)
        #expect(topology.backends.map(\.role) == [.primary, .unknown, .unknown])
        #expect(topology.backends.map(\.health) == [.unknown, .unknown, .unknown])
        #expect(topology.backends[2].zone == "dc2" && topology.backends[2].weight == 3)
        #expect(!topology.multiplePrimaries)
    }

    @Test("roles come from pg_is_in_recovery and lag from the primary's history")
    func rolesAndLag() {
        var model = MonitorModel(backends: backends())
        var events = model.recordPoll(0, primary(1000), sentAt: 0, receivedAt: 1 * ms)
        #expect(events == [.up(backend: "primary", role: .primary)])
        events = model.recordPoll(1, replica(1000), sentAt: 0, receivedAt: 1 * ms)
        #expect(events == [.up(backend: "replica1", role: .replica)])
        _ = model.recordPoll(2, replica(1000), sentAt: 0, receivedAt: 1 * ms)
        var topology = model.snapshot(now: 2 * ms)
        #expect(topology.backends.map(\.role) == [.primary, .replica, .replica])
        #expect(topology.backends.allSatisfy { $0.health == .up })
        #expect(topology.backends[1].lagMs == 0 && topology.backends[1].lagBytes == 0)
        #expect(topology.primary?.name == "primary")

        // A write; replica2 pauses and stays at 1000.
        _ = model.recordPoll(0, primary(5000), sentAt: 100 * ms, receivedAt: 101 * ms)
        _ = model.recordPoll(1, replica(5000), sentAt: 100 * ms, receivedAt: 101 * ms)
        _ = model.recordPoll(2, replica(1000, paused: true), sentAt: 100 * ms, receivedAt: 101 * ms)
        topology = model.snapshot(now: 350 * ms)
        #expect(topology.backends[1].lagBytes == 0)
        #expect(topology.backends[2].lagBytes == 4000)
        #expect(topology.backends[2].lagMs == 250)
        #expect(topology.backends[2].replayPaused)
        #expect(topology.backends[2].catchUpEstimateMs == nil)
        #expect(topology.backends[0].currentLSN == LSN(5000))
        #expect(topology.backends[2].replayLSN == LSN(1000))
        // Later snapshots: the paused replica's lag keeps growing.
        #expect(model.snapshot(now: 850 * ms).backends[2].lagMs == 750)
    }

    @Test("a failure marks the backend down with the error, keeps its role, and recovery brings it back")
    func downAndUp() {
        var model = MonitorModel(backends: backends())
        _ = model.recordPoll(1, replica(10), sentAt: 0, receivedAt: 0)
        var events = model.recordFailure(1, error: "connection refused")
        #expect(events == [.down(backend: "replica1", error: "connection refused")])
        #expect(model.recordFailure(1, error: "connection refused again").isEmpty, "already down")
        var status = model.snapshot(now: 0).backends[1]
        #expect(status.health == .down)
        #expect(status.role == .replica)
        #expect(status.lastError == "connection refused again")
        events = model.recordPoll(1, replica(10), sentAt: 0, receivedAt: 0)
        #expect(events == [.up(backend: "replica1", role: .replica)])
        status = model.snapshot(now: 0).backends[1]
        #expect(status.health == .up && status.lastError == nil)
    }

    @Test("a replica reporting primary is a failover; two live primaries are flagged")
    func failoverAndSplitBrain() {
        var model = MonitorModel(backends: backends())
        _ = model.recordPoll(0, primary(1000), sentAt: 0, receivedAt: 0)
        _ = model.recordPoll(1, replica(1000), sentAt: 0, receivedAt: 0)
        #expect(model.lagReference == 0)

        // The old primary dies, replica1 is promoted.
        _ = model.recordFailure(0, error: "server closed the connection unexpectedly")
        var events = model.recordPoll(1, primary(1200), sentAt: 10 * ms, receivedAt: 11 * ms)
        #expect(events.contains(.roleChanged(backend: "replica1", from: .replica, to: .primary)))
        #expect(events.contains(.lagReferenceChanged(backend: "replica1")))
        #expect(model.lagReference == 1)
        var topology = model.snapshot(now: 20 * ms)
        #expect(topology.primary?.name == "replica1")
        #expect(!topology.multiplePrimaries)
        #expect(MonitorEvent.roleChanged(backend: "replica1", from: .replica, to: .primary).description.contains("event=failover"))

        // The old primary comes back, still believing it is primary.
        events = model.recordPoll(0, primary(1100), sentAt: 30 * ms, receivedAt: 31 * ms)
        #expect(events.contains(.multiplePrimaries(backends: ["primary", "replica1"])))
        topology = model.snapshot(now: 40 * ms)
        #expect(topology.multiplePrimaries)
        #expect(topology.hasMultiplePrimaries)
        #expect(topology.primary == nil)
        #expect(model.lagReference == 1, "the live reference keeps anchoring the lag history")

        // It is rebuilt as a replica.
        events = model.recordPoll(0, replica(1100), sentAt: 50 * ms, receivedAt: 51 * ms)
        #expect(events.contains(.roleChanged(backend: "primary", from: .primary, to: .replica)))
        #expect(events.contains(.multiplePrimariesResolved))
        #expect(events.contains(.declaredRoleMismatch(backend: "primary", declared: .primary, observed: .replica)))
        #expect(!model.snapshot(now: 60 * ms).multiplePrimaries)
    }

    @Test("a declared role the server contradicts is reported once")
    func declaredMismatch() {
        var model = MonitorModel(backends: backends())
        var events = model.recordPoll(0, replica(5), sentAt: 0, receivedAt: 0)
        #expect(events.contains(.declaredRoleMismatch(backend: "primary", declared: .primary, observed: .replica)))
        events = model.recordPoll(0, replica(6), sentAt: 0, receivedAt: 0)
        #expect(events.isEmpty)
    }

    @Test("event descriptions are key=value log lines")
    func eventText() {
        #expect(MonitorEvent.down(backend: "r1", error: "could not connect: \"x\"\nsecond line").description
            == #"event=backend_down backend=r1 error="could not connect: \"x\" second line""#)
        #expect(MonitorEvent.up(backend: "r1", role: .replica).description == "event=backend_up backend=r1 role=replica")
    }
}

@Suite("TopologyBox")
struct TopologyBoxTests {
    @Test("each publish is the next generation; drain flags are applied at once and kept")
    func generationsAndDraining() {
        let box = TopologyBox()
        #expect(box.generation == 0)
        let topology = Topology(backends: [
            BackendStatus(index: 0, name: "p", role: .primary), BackendStatus(index: 1, name: "r", role: .replica),
        ])
        box.publish(topology)
        #expect(box.current().generation == 1)
        #expect(box.setDraining("r", true))
        #expect(!box.setDraining("r", true), "no change, no new snapshot")
        #expect(box.current().generation == 2)
        #expect(box.current().backends[1].draining)
        #expect(!box.current().backends[0].draining)
        box.publish(topology)  // built without the flag: the box keeps it
        #expect(box.current().generation == 3)
        #expect(box.current().backends[1].draining)
        #expect(box.drainingNames == ["r"])
        box.setDraining("r", false)
        #expect(!box.current().backends[1].draining)
        #expect(box.generation == 4)
    }

    @Test("waiting for a generation returns when it is published, or false at the timeout")
    func waiting() {
        let box = TopologyBox()
        #expect(!box.waitForGeneration(atLeast: 1, timeoutMs: 20))
        #expect(box.waitForGeneration(atLeast: 0, timeoutMs: 0))
        // A real thread: blocking waits must not depend on the (small) cooperative pool.
        let published = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.03)
            box.publish(Topology(backends: [BackendStatus(index: 0, name: "p", role: .primary)]))
            published.signal()
        }
        #expect(box.waitForGeneration(atLeast: 1, timeoutMs: 5000))
        #expect(box.wait(timeoutMs: 100) { $0.backends.count == 1 }?.generation == 1)
        #expect(box.wait(timeoutMs: 10) { $0.backends.count == 2 } == nil)
        published.wait()
    }
}

@Suite("The monitor model across reloads")
struct MonitorModelReloadTests {
    @Test("an added backend shows up unpolled and takes polls at its own position")
    func addedBackendIsPolled() {
        var model = MonitorModel(backends: Array(backends().prefix(2)))
        let position = model.add(MonitoredBackend(index: 5, name: "replica3", host: "127.0.0.1", port: 5435, zone: "dc1"))
        #expect(position == 2)
        var topology = model.snapshot(now: 0)
        #expect(topology.backend(at: 5)?.health == .unknown)
        _ = model.recordPoll(0, primary(1000), sentAt: 0, receivedAt: 1 * ms)
        _ = model.recordPoll(position, replica(1000), sentAt: 0, receivedAt: 1 * ms)
        topology = model.snapshot(now: 2 * ms)
        #expect(topology.backend(at: 5)?.role == .replica)
        #expect(topology.backend(at: 5)?.health == .up)
    }

    @Test("a retired backend leaves the snapshot and late polls for it are ignored")
    func retiredBackendLeaves() {
        var model = MonitorModel(backends: backends())
        _ = model.recordPoll(1, replica(1000), sentAt: 0, receivedAt: 1 * ms)
        _ = model.retire(1)
        #expect(model.snapshot(now: 2 * ms).backends.map(\.name) == ["primary", "replica2"])
        #expect(model.recordPoll(1, replica(2000), sentAt: 0, receivedAt: 3 * ms).isEmpty)
        #expect(model.recordFailure(1, error: "gone").isEmpty)
        #expect(model.snapshot(now: 4 * ms).backend(at: 1) == nil)
    }

    @Test("retiring the lag reference primary lets the next primary take over without two-primary alarms")
    func retiredPrimaryIsNotCounted() {
        var model = MonitorModel(backends: backends())
        _ = model.recordPoll(0, primary(1000), sentAt: 0, receivedAt: 1 * ms)
        _ = model.retire(0)
        let events = model.recordPoll(1, primary(2000), sentAt: 2 * ms, receivedAt: 3 * ms)
        #expect(!events.contains(.multiplePrimaries(backends: ["primary", "replica1"])))
        #expect(model.livePrimary == 1)
        #expect(model.lagReference == 1)
    }

    @Test("zone, weight and declared role change in place")
    func updatedBackendKeepsState() {
        var model = MonitorModel(backends: backends())
        _ = model.recordPoll(1, replica(1000), sentAt: 0, receivedAt: 1 * ms)
        model.update(1, zone: "dc3", weight: 7, declaredRole: .replica)
        let status = model.snapshot(now: 2 * ms).backend(at: 1)
        #expect(status?.zone == "dc3")
        #expect(status?.weight == 7)
        #expect(status?.health == .up)
        #expect(status?.replayLSN == LSN(1000))
    }
}
