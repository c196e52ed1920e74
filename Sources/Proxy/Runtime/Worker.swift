import CLibUV
import CShims
import Foundation
import Router
import Synchronization
import Wire

/// Cross-thread handle on a worker: the only part of it another thread may touch.
final class WorkerControl: @unchecked Sendable {
    private struct AsyncHandle: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<uv_async_t>
    }

    private struct State: Sendable {
        var command: WorkerCommand?
        var async: AsyncHandle?
    }
    // The async handle is only used under the lock, and detached (under the lock) before the
    // worker closes it, so no thread can signal a freed handle.
    private let state = Mutex<State>(State())
    let ready = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)
    let startError = Mutex<String?>(nil)

    func attach(_ handle: UnsafeMutablePointer<uv_async_t>) {
        let wrapped = AsyncHandle(pointer: handle)
        state.withLock { $0.async = wrapped }
    }

    func detach() {
        state.withLock { $0.async = nil }
    }

    var command: WorkerCommand? { state.withLock { $0.command } }

    func send(_ newCommand: WorkerCommand) {
        state.withLock { current in
            // An immediate stop overrides a graceful one, never the other way round.
            if case .stopNow = current.command {} else { current.command = newCommand }
            if let async = current.async { uv_async_send(async.pointer) }
        }
    }
}

enum WorkerCommand: Sendable {
    case stopGracefully(deadlineNanos: UInt64)
    case stopNow
}

/// One event loop on one thread, owning its listener, its client sessions and their server
/// connections. Nothing in here is touched by another thread.
final class Worker {
    let index: Int
    let loop: UnsafeMutablePointer<uv_loop_t>
    let runtime: ProxyRuntime
    let chunks = ChunkPool()
    let log: Log
    let control: WorkerControl
    private var listener: Listener?
    private var async: UnsafeMutablePointer<uv_async_t>?
    private var timer: UnsafeMutablePointer<uv_timer_t>?
    private(set) var sessions: [Int32: ClientSession] = [:]
    var cancelForwarders: [ObjectIdentifier: CancelForwarder] = [:]
    private var stopDeadline: UInt64?
    /// Salted-password derivations for server logins, keyed by password+salt+iterations:
    /// PBKDF2 is deliberately slow and a server's salt never changes.
    private var derivedKeys: [String: (ScramKeys, [UInt8])] = [:]
    /// Server connections no session holds, and sessions waiting for a full pool.
    private(set) lazy var pools = ServerPool(worker: self, registry: runtime.pools)
    /// Query-text classifications; the Router's work is cached per worker.
    let classifications = ClassificationCache()
    /// The ids of the proxy's names for prepared statements on this worker's connections.
    let statements = StatementCatalog()
    /// Sessions of this worker reading from each backend, for spreading them over replicas.
    private(set) var replicaLoad: [Int]
    private var cachedTopology: Topology?
    private var cachedTopologyGeneration: UInt64 = .max
    private var cachedSettings: RuntimeSettings

    /// The settings in force. A reload installs a new snapshot; one relaxed load tells whether
    /// this worker still holds the latest.
    var settings: RuntimeSettings {
        if runtime.settingsGeneration.load(ordering: .relaxed) != cachedSettings.generation {
            cachedSettings = runtime.settings
            if replicaLoad.count < cachedSettings.slots.count {
                replicaLoad += Array(repeating: 0, count: cachedSettings.slots.count - replicaLoad.count)
            }
        }
        return cachedSettings
    }

    /// The cluster snapshot for routing, re-read from the monitor only when it has published a
    /// new one (one atomic load tells): no lock and no copy per request, and no staleness.
    var topology: Topology {
        refreshTopology()
        return cachedTopology!
    }

    /// The live primary of the current snapshot (nil when there is none or two).
    var topologyPrimary: Int? {
        refreshTopology()
        return cachedPrimary
    }

    private var cachedPrimary: Int?

    /// The proxy's one clock in nanoseconds: CLOCK_MONOTONIC (the clock of cw_monotonic_nanos),
    /// as the loop read it at the start of this iteration, so reading it costs no system call.
    var now: UInt64 { uv_now(loop) &* 1_000_000 }

    private func refreshTopology() {
        let generation = runtime.topologyGeneration
        if generation != cachedTopologyGeneration || cachedTopology == nil {
            let topology = runtime.topology()
            cachedTopology = topology
            cachedTopologyGeneration = topology.generation
            if let primary = topology.primary, primary.health != .down, !topology.hasMultiplePrimaries {
                cachedPrimary = primary.index
            } else {
                cachedPrimary = nil
            }
        }
    }


    init(index: Int, runtime: ProxyRuntime, control: WorkerControl) {
        self.index = index
        self.runtime = runtime
        self.control = control
        log = runtime.log("worker")
        cachedSettings = runtime.settings
        replicaLoad = Array(repeating: 0, count: cachedSettings.slots.count)
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
        loop.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    func run() {
        let asyncHandle = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
        uv_async_init(loop, asyncHandle, workerAsyncCallback)
        asyncHandle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        async = asyncHandle
        control.attach(asyncHandle)
        if let problem = listen() {
            control.startError.withLock { $0 = problem }
            closeHandles()
            control.ready.signal()
            uv_run(loop, UV_RUN_DEFAULT)
            finish()
            return
        }
        let maintenance = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop, maintenance)
        maintenance.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_timer_start(maintenance, workerMaintenanceCallback, 100, 100)
        // The maintenance tick must not keep the loop alive once everything else has closed.
        maintenance.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_unref($0) }
        maintenanceTimer = maintenance
        control.ready.signal()
        uv_run(loop, UV_RUN_DEFAULT)
        finish()
    }

    private var maintenanceTimer: UnsafeMutablePointer<uv_timer_t>?

    /// Every 100 ms: pool upkeep; sessions let go of server connections to draining or removed
    /// backends.
    fileprivate func maintain() {
        if runtime.killPending.load(ordering: .relaxed) {
            for session in Array(sessions.values) where runtime.takeKillRequest(session.id) {
                log.info("client_killed", ["session": session.id])
                session.kill()
            }
        }
        pools.maintain()
        let topology = self.topology
        let settings = self.settings
        guard topology.backends.contains(where: { $0.draining }) || settings.hasRemovedConnections else { return }
        for session in Array(sessions.values) { session.drainCheck() }
    }

    private func finish() {
        if let maintenanceTimer {
            self.maintenanceTimer = nil
            maintenanceTimer.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
            uv_run(loop, UV_RUN_DEFAULT)
        }
        let status = uv_loop_close(loop)
        if status != 0 { log.warn("loop_close_busy", ["worker": index, "status": status]) }
        loop.deallocate()
        control.finished.signal()
    }

    private func listen() -> String? {
        let address = runtime.config.proxy.listen
        let listener = Listener(loop: loop, chunks: chunks) { [unowned self] stream in
            stream.setNoDelay()
            let session = ClientSession(worker: self, client: stream)
            sessions[session.id] = session
            session.start()
        }
        self.listener = listener
        return listener.listen(host: address.host, port: address.port, backlog: 1024)
    }

    func sessionEnded(_ session: ClientSession) {
        sessions.removeValue(forKey: session.id)
        if stopDeadline != nil && sessions.isEmpty { closeHandles() }
    }

    private var topologyWaiters: [Int32: ClientSession] = [:]
    private var waitTimer: UnsafeMutablePointer<uv_timer_t>?

    /// Wakes `session` when the topology changes (or its wait deadline passes).
    func waitForTopology(_ session: ClientSession) {
        topologyWaiters[session.id] = session
        requestFastPoll()
        if waitTimer == nil {
            let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
            uv_timer_init(loop, handle)
            handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            waitTimer = handle
        }
        if let waitTimer, uv_is_active(UnsafeMutableRawPointer(waitTimer).assumingMemoryBound(to: uv_handle_t.self)) == 0 {
            uv_timer_start(waitTimer, workerWaitTimerCallback, 2, 2)
        }
    }

    fileprivate func checkWaiters() {
        // Oldest wait first, so writes held by PAUSE are released in the order they arrived.
        let waiting = topologyWaiters.values.sorted { ($0.machine.unitWait.releaseOrder.0, $0.machine.unitWait.releaseOrder.1, $0.id) < ($1.machine.unitWait.releaseOrder.0, $1.machine.unitWait.releaseOrder.1, $1.id) }
        for session in waiting where session.phase == .finished || session.topologyChanged() {
            topologyWaiters.removeValue(forKey: session.id)
        }
        if topologyWaiters.isEmpty, let waitTimer { uv_timer_stop(waitTimer) }
    }

    private var lastFastPollRequest: UInt64 = 0

    /// Asks the monitor to poll faster, at most once per 10 ms of loop time: every read that
    /// waits or falls back for its floor asks, and one wake-up of the monitor serves them all.
    func requestFastPoll() {
        let now = uv_now(loop)
        guard now &- lastFastPollRequest >= 10 || lastFastPollRequest == 0 else { return }
        lastFastPollRequest = now
        runtime.requestFastPoll()
    }

    func adoptReplica(_ index: Int) {
        if replicaLoad.indices.contains(index) {
            replicaLoad[index] += 1
            settings.counters(index)?.sessions.add(1, ordering: .relaxed)
        }
    }

    func releaseReplica(_ index: Int) {
        if replicaLoad.indices.contains(index), replicaLoad[index] > 0 {
            replicaLoad[index] -= 1
            settings.counters(index)?.sessions.subtract(1, ordering: .relaxed)
        }
    }

    func deriveScram(password: String, salt: [UInt8], iterations: Int) -> (ScramKeys, [UInt8]) {
        let key = "\(iterations):\(Crypto.base64(salt)):\(password)"
        if let known = derivedKeys[key] { return known }
        let derived = ScramKeys.derive(password: password, salt: salt, iterations: iterations)
        derivedKeys[key] = derived
        return derived
    }

    fileprivate func handleCommand() {
        guard let command = control.command else { return }
        switch command {
        case .stopNow:
            stopListening()
            for session in Array(sessions.values) { session.shutDown(immediately: true) }
            closeHandles()
        case let .stopGracefully(deadline):
            stopListening()
            stopDeadline = deadline
            for session in Array(sessions.values) { session.shutDown(immediately: false) }
            if sessions.isEmpty {
                closeHandles()
            } else if timer == nil {
                let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
                uv_timer_init(loop, handle)
                handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
                uv_timer_start(handle, workerTimerCallback, 100, 100)
                timer = handle
            }
        }
    }

    fileprivate func checkDeadline() {
        guard let stopDeadline, cw_monotonic_nanos() >= stopDeadline else { return }
        log.warn("shutdown_timeout", ["worker": index, "sessions_cut": sessions.count])
        for session in Array(sessions.values) { session.shutDown(immediately: true) }
        closeHandles()
    }

    private func stopListening() {
        listener?.close()
        listener = nil
    }

    private func closeHandles() {
        stopListening()
        pools.closeAll()
        if let async {
            self.async = nil
            control.detach()
            async.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
        if let waitTimer {
            self.waitTimer = nil
            waitTimer.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
        if let timer {
            self.timer = nil
            timer.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
    }

    static func from(_ pointer: UnsafeMutableRawPointer?) -> Worker {
        Unmanaged<Worker>.fromOpaque(pointer!).takeUnretainedValue()
    }
}

private func workerAsyncCallback(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    Worker.from(handle?.pointee.data).handleCommand()
}

private func workerMaintenanceCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    Worker.from(handle?.pointee.data).maintain()
}

private func workerWaitTimerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    Worker.from(handle?.pointee.data).checkWaiters()
}

private func workerTimerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    Worker.from(handle?.pointee.data).checkDeadline()
}

/// Frees a handle allocated with `UnsafeMutablePointer.allocate`; libuv is done with it here.
func freeHandleCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    handle?.deallocate()
}
