// The LagMonitor: one thread with its own uv_loop_t polling every backend on a non-blocking
// libpq connection (design §3, §7), publishing `Topology` snapshots through a `TopologyBox`.

import CLibUV
import Dispatch
import Foundation
import Router

public final class LagMonitor: Sendable {
    public let backends: [MonitoredBackend]
    public let settings: MonitorSettings
    /// Where snapshots are published; workers read `topology.current()`.
    public let topology: TopologyBox
    private let log: @Sendable (String) -> Void
    /// Shared with the loop: the flags its uv_async_t callback reads.
    private let requests = Locked(MonitorRequests())
    /// A reconfiguration asked for before `start()`.
    private let pendingBackends = Locked<[MonitoredBackend]?>(nil)
    private let lifecycle = Locked(Lifecycle())

    private enum Phase { case notStarted, running, stopped }

    private struct Lifecycle {
        var phase = Phase.notStarted
        /// The loop's wake-up handle while it may be signalled. Cleared (under this lock) by the
        /// one `stop()` that sends the stop request, so nothing signals a handle being closed.
        var async: UnsafeMutablePointer<uv_async_t>?
        var thread: pthread_t?
        var context: MonitorThread?
    }

    /// `backends` keep their `index`; the published snapshot lists them in this order.
    public init(backends: [MonitoredBackend], settings: MonitorSettings, log: @escaping @Sendable (String) -> Void) {
        self.backends = backends
        self.settings = settings
        self.log = log
        var model = MonitorModel(backends: backends)
        self.topology = TopologyBox(model.snapshot(now: monotonicNanos()))
    }

    deinit { stop() }

    /// Starts the monitor thread and returns once its loop is about to run. Calling it again,
    /// or after `stop()`, does nothing (a monitor runs once).
    public func start() {
        let context: MonitorThread? = lifecycle.withLock { state in
            guard state.phase == .notStarted else { return nil }
            let context = MonitorThread(
                backends: pendingBackends.withLock { $0 } ?? backends, settings: settings, box: topology, requests: requests, log: log)
            guard context.prepare() else {
                state.phase = .stopped
                return nil
            }
            var thread = pthread_t()
            let retained = Unmanaged.passRetained(context).toOpaque()
            let rc = pthread_create(&thread, nil, monitorThreadMain, retained)
            guard rc == 0 else {
                Unmanaged<MonitorThread>.fromOpaque(retained).release()
                context.discard()
                log("event=monitor_start_failed error=\"pthread_create: \(rc)\"")
                state.phase = .stopped
                return nil
            }
            state.phase = .running
            state.async = context.async
            state.thread = thread
            state.context = context
            return context
        }
        context?.running.wait()
    }

    /// Stops the loop and joins its thread; every handle is closed and the loop is closed.
    /// Returns true when `uv_loop_close` succeeded (false also when the monitor never ran).
    /// Safe from any thread except the monitor's own (its `log` callback must not call it).
    @discardableResult
    public func stop() -> Bool {
        let (thread, context): (pthread_t?, MonitorThread?) = lifecycle.withLock { state in
            switch state.phase {
            case .notStarted:
                state.phase = .stopped
                return (nil, nil)
            case .stopped:
                return (nil, state.context)
            case .running:
                state.phase = .stopped
                requests.withLock { $0.stop = true }
                if let async = state.async { uv_async_send(async) }
                state.async = nil
                let thread = state.thread
                state.thread = nil
                return (thread, state.context)
            }
        }
        if let thread { pthread_join(thread, nil) }
        guard let context else { return false }
        context.finished.wait()
        context.finished.signal()
        return context.loopCloseResult == 0
    }

    /// Polls every connected backend now (a poll already in flight is not repeated) and keeps
    /// polling at a quarter of the interval (at least 10 ms) for about a second. For sessions
    /// waiting for a replica to reach their LSN.
    public func pollSoon() {
        lifecycle.withLock { state in
            guard state.phase == .running, let async = state.async else { return }
            let alreadyAsked = requests.withLock { requests in
                defer { requests.pollSoon = true }
                return requests.pollSoon
            }
            if !alreadyAsked { uv_async_send(async) }
        }
    }

    /// A reload: the monitor now watches `backends`, matched to the current ones by `index`. New
    /// ones start polling, missing ones stop and leave the topology, and ones whose host or port
    /// changed start over; the others keep their connection and history. Applied on the monitor's
    /// loop, which publishes a snapshot right after. Before `start()`, the list is used at start.
    public func reconfigure(_ backends: [MonitoredBackend]) {
        lifecycle.withLock { state in
            switch state.phase {
            case .notStarted:
                pendingBackends.withLock { $0 = backends }
            case .running:
                requests.withLock { $0.backends = backends }
                if let async = state.async { uv_async_send(async) }
            case .stopped:
                break
            }
        }
    }

    /// Marks a backend draining (or not). The flag is in the very next snapshot, which is
    /// published at once, and in every later one.
    public func setDraining(_ name: String, _ draining: Bool) {
        if topology.setDraining(name, draining) {
            log("event=\(draining ? "drain" : "undrain") backend=\(name)")
        }
    }
}

/// What the monitor thread owns. Created by `start()` and handed to the thread (retained); read
/// back by `stop()` only after the thread has finished.
final class MonitorThread {
    let backends: [MonitoredBackend]
    let settings: MonitorSettings
    let box: TopologyBox
    let requests: Locked<MonitorRequests>
    let log: @Sendable (String) -> Void
    let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
    let async = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
    /// Signalled once the loop is about to run.
    let running = DispatchSemaphore(value: 0)
    /// Signalled once the loop is closed (each waiter signals it again for the next).
    let finished = DispatchSemaphore(value: 0)
    /// `uv_loop_close`'s result, valid after `finished`.
    private(set) var loopCloseResult: Int32 = -1

    init(
        backends: [MonitoredBackend], settings: MonitorSettings, box: TopologyBox,
        requests: Locked<MonitorRequests>, log: @escaping @Sendable (String) -> Void
    ) {
        self.backends = backends
        self.settings = settings
        self.box = box
        self.requests = requests
        self.log = log
    }

    /// Initialises the loop and the wake-up handle (on the caller's thread: the loop does not run
    /// yet, and the thread creation that follows publishes them to the monitor thread).
    func prepare() -> Bool {
        var rc = uv_loop_init(loop)
        guard rc == 0 else {
            log("event=monitor_start_failed error=\"uv_loop_init: \(uvError(rc))\"")
            loop.deallocate()
            async.deallocate()
            return false
        }
        rc = uv_async_init(loop, async, monitorAsyncFired)
        guard rc == 0 else {
            log("event=monitor_start_failed error=\"uv_async_init: \(uvError(rc))\"")
            _ = uv_loop_close(loop)
            loop.deallocate()
            async.deallocate()
            return false
        }
        async.pointee.data = nil
        return true
    }

    /// Undoes `prepare()` when the thread could not be created.
    func discard() {
        closeAndFree(async)
        uv_run(loop, UV_RUN_DEFAULT)
        if uv_loop_close(loop) == 0 { loop.deallocate() }
    }

    /// The thread body.
    func run() {
        let core = MonitorCore(
            loop: loop, async: async, requests: requests, backends: backends, settings: settings, box: box, log: log)
        core.begin()
        running.signal()
        uv_run(loop, UV_RUN_DEFAULT)
        var rc = uv_loop_close(loop)
        if rc != 0 {
            // Should not happen: every handle is closed on stop. Let pending closes finish.
            uv_run(loop, UV_RUN_NOWAIT)
            rc = uv_loop_close(loop)
        }
        if rc == 0 {
            loop.deallocate()
        } else {
            log("event=monitor_loop_close_failed error=\(MonitorEvent.quoted(uvError(rc)))")
        }
        withExtendedLifetime(core) {}
        loopCloseResult = rc
        finished.signal()
    }
}

private func monitorThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let argument else { return nil }
    let context = Unmanaged<MonitorThread>.fromOpaque(argument).takeRetainedValue()
    context.run()
    return nil
}
