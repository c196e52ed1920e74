import CLibUV
import CShims
import Foundation

/// Starts the workers and waits for a signal: SIGTERM lets sessions finish their transactions
/// (bounded by `gracefulTimeout`), SIGINT ends them at once, SIGHUP reloads the configuration.
public final class ProxyServer {
    private let runtime: ProxyRuntime
    private let gracefulTimeoutNanos: UInt64
    private var controls: [WorkerControl] = []
    private let log: Log

    public init(runtime: ProxyRuntime, gracefulTimeoutSeconds: Double = 30) {
        self.runtime = runtime
        gracefulTimeoutNanos = UInt64(gracefulTimeoutSeconds * 1e9)
        log = runtime.log("proxy")
    }

    /// Runs until SIGTERM or SIGINT. Throws if a worker cannot listen.
    public func run() throws {
        cw_ignore_sigpipe()
        // Until the signal loop takes SIGHUP over, a reload request must not end the process.
        signal(SIGHUP, SIG_IGN)
        if let monitor = runtime.monitor {
            monitor.start()
            // Route nothing before the cluster has been looked at once (bounded: a dead cluster
            // must not keep the proxy from starting and reporting it).
            _ = monitor.topology.wait(timeoutMs: 3000) { topology in
                topology.backends.allSatisfy { $0.health != .unknown }
            }
        }
        let files = Self.raiseOpenFileLimit()
        let configured = runtime.config.proxy.workers
        let count = configured > 0 ? configured : max(1, ProcessInfo.processInfo.activeProcessorCount)
        for index in 0..<count {
            let control = WorkerControl()
            controls.append(control)
            let runtime = self.runtime
            let thread = Thread {
                let worker = Worker(index: index, runtime: runtime, control: control)
                worker.run()
            }
            thread.name = "causeway-worker-\(index)"
            thread.start()
            control.ready.wait()
            if let problem = control.startError.withLock({ $0 }) {
                stopAll(.stopNow)
                throw ProxyStartError(problem)
            }
        }
        log.info("listening", ["address": "\(runtime.config.proxy.listen.host):\(runtime.config.proxy.listen.port)",
                               "workers": count, "pool_mode": runtime.config.proxy.poolMode.rawValue, "open_files": files,
                               "backends": runtime.config.backends.map(\.name).joined(separator: ",")])
        waitForSignal()
    }

    /// Every client and every server connection is a descriptor: max_client_conn clients plus
    /// their pools need more than the usual soft limit of 1024, so the soft limit goes up to
    /// the hard one. Returns the limit in force.
    private static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }

    /// Runs a small loop for signals until every worker has finished. SIGTERM starts a graceful
    /// stop and keeps listening, so a later SIGINT can still cut it short.
    private func waitForSignal() {
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        uv_loop_init(loop)
        let box = SignalBox(server: self)
        loop.pointee.data = Unmanaged.passUnretained(box).toOpaque()
        var handles: [UnsafeMutablePointer<uv_signal_t>] = []
        for signal in [SIGTERM, SIGINT, SIGHUP] {
            let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(loop, handle)
            uv_signal_start(handle, proxySignalCallback, signal)
            handles.append(handle)
        }
        let done = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
        uv_async_init(loop, done, proxyDoneCallback)
        box.done = done
        var metrics: MetricsServer?
        if let address = runtime.config.proxy.metricsListen {
            let server = MetricsServer(runtime: runtime, loop: loop)
            do {
                try server.start(address)
                metrics = server
            } catch {
                log.error("metrics_unavailable", ["reason": "\(error)"])
            }
        }
        uv_run(loop, UV_RUN_DEFAULT)
        metrics?.stop()
        for handle in handles {
            handle.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
        done.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        uv_run(loop, UV_RUN_DEFAULT)
        uv_loop_close(loop)
        loop.deallocate()
        runtime.monitor?.stop()
        log.info("stopped")
        withExtendedLifetime(box) {}
    }

    fileprivate func handleSignal(_ signal: Int32, box: SignalBox) {
        if signal == SIGHUP {
            reload()
            return
        }
        runtime.shuttingDown.store(true, ordering: .relaxed)
        if signal == SIGINT {
            log.info("shutdown", ["mode": "immediate"])
            for control in controls { control.send(.stopNow) }
        } else {
            log.info("shutdown", ["mode": "graceful", "timeout_s": Double(gracefulTimeoutNanos) / 1e9])
            let deadline = cw_monotonic_nanos() + gracefulTimeoutNanos
            for control in controls { control.send(.stopGracefully(deadlineNanos: deadline)) }
        }
        guard !box.waiting, let done = box.done else { return }
        box.waiting = true
        // Wait for the workers off the loop so that the loop keeps taking signals.
        let controls = self.controls
        let signal = DoneSignal(done)
        let waiter = Thread {
            for control in controls { control.finished.wait() }
            signal.fire()
        }
        waiter.start()
    }

    /// SIGHUP. The outcome is logged: one line per change, or why the file was refused.
    private func reload() {
        guard !runtime.shuttingDown.load(ordering: .relaxed) else { return }
        do {
            let changes = try runtime.reload()
            log.info("reload", ["trigger": "SIGHUP", "changes": changes.count])
        } catch {
            log.warn("reload_refused", ["trigger": "SIGHUP", "reason": error.description])
        }
    }

    private func stopAll(_ command: WorkerCommand) {
        for control in controls { control.send(command) }
        for control in controls { control.finished.wait() }
        runtime.monitor?.stop()
    }
}

/// Wakes the signal loop from the thread that waited for the workers.
private final class DoneSignal: @unchecked Sendable {
    // Only passed to uv_async_send, which is thread-safe; the loop closes it after it fired.
    private let handle: UnsafeMutablePointer<uv_async_t>
    init(_ handle: UnsafeMutablePointer<uv_async_t>) { self.handle = handle }
    func fire() { uv_async_send(handle) }
}

private final class SignalBox {
    let server: ProxyServer
    var done: UnsafeMutablePointer<uv_async_t>?
    var waiting = false
    init(server: ProxyServer) { self.server = server }
}

private func proxySignalCallback(_ handle: UnsafeMutablePointer<uv_signal_t>?, _ signal: Int32) {
    guard let handle, let loop = handle.pointee.loop else { return }
    let box = Unmanaged<SignalBox>.fromOpaque(loop.pointee.data).takeUnretainedValue()
    box.server.handleSignal(signal, box: box)
}

private func proxyDoneCallback(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    guard let handle, let loop = handle.pointee.loop else { return }
    uv_stop(loop)
}
