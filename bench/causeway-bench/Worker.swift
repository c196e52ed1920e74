// One load thread: its own libuv loop holding many virtual clients, each with its own
// non-blocking libpq connection(s). Nothing here is shared with other threads except through
// `WorkerShared`.

import BenchCore
import CLibUV
import Foundation

struct WorkerPlan: Sendable {
    var index: Int
    var clientIDs: [Int]
    var workload: Workload
    /// Where writes go (and reads, when `readConninfo` is nil).
    var writeConninfo: String
    /// A separate connection for reads (split target), or nil.
    var readConninfo: String?
}

final class Worker: @unchecked Sendable {
    // Built on the controller's thread before `start`; from then on only the worker thread
    // touches anything but `shared` and `wakeup` (both safe across threads).
    let plan: WorkerPlan
    let shared = WorkerShared()
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let wakeup: LoopWakeup
    private var clients: [VirtualClient] = []
    private var openClients = 0
    private var publishTimer: LoopTimer?
    private var graceTimer: LoopTimer?
    private(set) var stats: RunStats
    private(set) var startNs: UInt64 = 0
    private var stopping = false
    private let done = DispatchSemaphore(value: 0)

    init(plan: WorkerPlan) {
        self.plan = plan
        stats = RunStats(bucketMs: plan.workload.bucketMs)
        loop = makeLoop()
        wakeup = LoopWakeup(loop: loop)
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "bench-worker-\(plan.index)"
        thread.start()
    }

    /// Wakes the worker to read its command (go or stop).
    func poke() { shared.ifWakeupOpen { wakeup.send() } }

    /// Waits until the worker's loop has ended (its final stats are then in `shared`).
    func waitUntilDone(timeout: DispatchTime) -> Bool { done.wait(timeout: timeout) == .success }

    private func run() {
        wakeup.fire = { [unowned self] in command(shared.pendingCommand) }
        let publish = LoopTimer(loop: loop)
        publish.fire = { [unowned self] in shared.publish(stats.total) }
        publish.start(ms: 100, repeatMs: 100)
        publishTimer = publish
        for id in plan.clientIDs {
            let p = plan.workload.queryProtocol.resolved(forClient: id)
            stats.register(client: id, queryProtocol: p)
            let client = VirtualClient(id: id, protocol: p, worker: self, loop: loop)
            clients.append(client)
        }
        openClients = clients.count
        for client in clients { client.connect() }
        _ = uv_run(loop, UV_RUN_DEFAULT)
        shared.publish(stats.total)
        shared.finish(stats)
        freeLoop(loop)
        done.signal()
    }

    private func command(_ c: WorkerShared.Command) {
        switch c {
        case .none: break
        case .go(let start):
            guard startNs == 0, !stopping else { return }
            startNs = start
            for client in clients { client.go() }
        case .stop:
            guard !stopping else { return }
            stopping = true
            for client in clients { client.stop() }
            // Operations still in flight after this long are abandoned (closing their
            // connections); the run is over and their latency would only measure the shutdown.
            let grace = LoopTimer(loop: loop)
            grace.fire = { [unowned self] in
                for client in clients { client.close() }
            }
            grace.start(ms: 3000)
            graceTimer = grace
        }
    }

    // MARK: - Called by clients

    var nanosSinceStart: Int64 { startNs == 0 ? 0 : Int64(bitPattern: nowNanos() &- startNs) }

    func record(_ change: (inout RunStats) -> Void) { change(&stats) }

    func clientConnected() { shared.clientConnected() }

    func clientFailedToConnect(_ message: String) { shared.clientFailedToConnect(message) }

    /// A client did its `count` operations.
    func clientFinished() { shared.clientFinished() }

    /// A client closed its connections for good; when the last one has, the loop may end.
    func clientClosed() {
        openClients -= 1
        guard openClients == 0 else { return }
        publishTimer?.close()
        graceTimer?.close()
        shared.closeWakeup { wakeup.close() }
    }
}
