// The monitor's thread, loop and libpq connections against servers that misbehave (nothing
// listening, a server that never answers), and its start/stop life cycle.

import CShims
import Foundation
import LagMonitor
import Router
import Testing

/// Collects the monitor's log lines (they arrive on the monitor thread).
final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    var sink: @Sendable (String) -> Void { { [self] line in lock.withLock { lines.append(line) } } }

    var all: [String] { lock.withLock { lines } }

    func contains(_ fragment: String) -> Bool { all.contains { $0.contains(fragment) } }
}

final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Bool] = []
    func append(_ value: Bool) { lock.withLock { stored.append(value) } }
    var values: [Bool] { lock.withLock { stored } }
}

@Suite("LagMonitor life cycle and failing servers")
struct LagMonitorLiveTests {
    @Test("nothing listening: the backend goes down with the connect error, and the loop closes cleanly")
    func refused() {
        let logs = LogLines()
        let monitor = LagMonitor(
            backends: [MonitoredBackend(index: 0, name: "nowhere", host: "127.0.0.1", port: 1, declaredRole: .primary)],
            settings: MonitorSettings(intervalMs: 20, user: "postgres", password: "x"),
            log: logs.sink)
        #expect(monitor.topology.current().backends.map(\.name) == ["nowhere"])
        #expect(monitor.topology.current().backends[0].health == .unknown)
        monitor.start()
        let down = monitor.topology.wait(timeoutMs: 5000) { $0.backends.first?.health == .down }
        #expect(down?.backends[0].lastError?.isEmpty == false)
        #expect(down?.backends[0].role == .primary, "the declared role stays until one is observed")
        // Backoff, not a reconnect per 20 ms tick: a handful of attempts in half a second means
        // at most a few failure snapshots beyond the ticks (which still publish).
        Thread.sleep(forTimeInterval: 0.5)
        #expect(monitor.stop())
        #expect(logs.all.filter { $0.contains("event=backend_down") }.count == 1)
    }

    @Test("a server that accepts but never answers trips the monitor's own connect timeout")
    func silentServer() throws {
        let fd = cw_listen_socket("127.0.0.1", 0, 16)
        try #require(fd >= 0)
        defer { close(fd) }
        let port = Int(cw_socket_port(fd))
        let monitor = LagMonitor(
            backends: [MonitoredBackend(index: 0, name: "silent", host: "127.0.0.1", port: port)],
            settings: MonitorSettings(intervalMs: 50, user: "postgres", connectTimeoutMs: 300),
            log: { _ in })
        let started = Date()
        monitor.start()
        let down = monitor.topology.wait(timeoutMs: 5000) { $0.backends.first?.health == .down }
        let elapsed = Date().timeIntervalSince(started)
        #expect(down?.backends[0].lastError?.contains("timed out") == true, "\(String(describing: down?.backends[0].lastError))")
        #expect(elapsed >= 0.25 && elapsed < 3, "timed out after \(elapsed) s")
        #expect(monitor.stop())
    }

    @Test("stop is safe before start, twice, and from several threads; start after stop does nothing")
    func lifeCycle() {
        let never = LagMonitor(backends: [], settings: MonitorSettings(), log: { _ in })
        #expect(!never.stop(), "never ran")
        never.start()
        #expect(never.topology.generation == 0)

        let monitor = LagMonitor(
            backends: [MonitoredBackend(index: 0, name: "nowhere", host: "127.0.0.1", port: 1)],
            settings: MonitorSettings(intervalMs: 10), log: { _ in })
        monitor.start()
        monitor.start()
        monitor.pollSoon()
        monitor.setDraining("nowhere", true)
        #expect(monitor.topology.current().backends[0].draining)
        #expect(monitor.topology.waitForGeneration(atLeast: 3, timeoutMs: 5000))
        // Four threads stop it at once (real threads: stop() blocks until the loop has closed).
        let results = LockedResults()
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                results.append(monitor.stop())
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(results.values == [true, true, true, true])
        let generation = monitor.topology.generation
        monitor.pollSoon()
        monitor.start()
        Thread.sleep(forTimeInterval: 0.05)
        #expect(monitor.topology.generation == generation, "a stopped monitor publishes nothing")
        #expect(monitor.topology.current().backends[0].draining)
    }

    @Test("a monitor released without stop shuts its thread down")
    func releasedWithoutStop() {
        var monitor: LagMonitor? = LagMonitor(
            backends: [MonitoredBackend(index: 0, name: "nowhere", host: "127.0.0.1", port: 1)],
            settings: MonitorSettings(intervalMs: 10), log: { _ in })
        monitor?.start()
        #expect(monitor?.topology.waitForGeneration(atLeast: 1, timeoutMs: 5000) == true)
        monitor = nil
    }
}
