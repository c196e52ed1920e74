// The only state a worker thread and the controller both touch, behind one lock: commands in,
// readiness and progress out, and the final statistics once the worker's loop has ended.

import BenchCore
import Foundation

final class WorkerShared: @unchecked Sendable {
    enum Command: Equatable { case none, go(startNs: UInt64), stop }

    private let lock = NSLock()
    private var command = Command.none
    private var connected = 0
    private var connectFailures = 0
    private var firstConnectError: String?
    private var finishedClients = 0
    private var progress = TimelineCounts()
    private var finalStats: RunStats?
    private var wakeupClosed = false

    func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    // Controller → worker
    func send(_ c: Command) { locked { command = c } }
    var pendingCommand: Command { locked { command } }

    /// Runs `send` unless the worker's wakeup handle is closed: a uv_async_send after uv_close
    /// would touch freed memory, and the lock orders the two.
    func ifWakeupOpen(_ send: () -> Void) { locked { if !wakeupClosed { send() } } }
    func closeWakeup(_ close: () -> Void) {
        locked {
            wakeupClosed = true
            close()
        }
    }

    // Worker → controller
    func clientConnected() { locked { connected += 1 } }
    func clientFailedToConnect(_ message: String) {
        locked {
            connectFailures += 1
            if firstConnectError == nil { firstConnectError = message }
        }
    }
    func clientFinished() { locked { finishedClients += 1 } }
    func publish(_ counts: TimelineCounts) { locked { progress = counts } }
    func finish(_ stats: RunStats) { locked { finalStats = stats } }

    struct Snapshot {
        var connected: Int
        var connectFailures: Int
        var firstConnectError: String?
        var finishedClients: Int
        var progress: TimelineCounts
        var stats: RunStats?
    }

    var snapshot: Snapshot {
        locked { Snapshot(connected: connected, connectFailures: connectFailures, firstConnectError: firstConnectError,
                          finishedClients: finishedClients, progress: progress, stats: finalStats) }
    }
}
