// Everything that runs on the monitor's thread: the tick timer, one BackendPoller per backend,
// the volatile-function scan, the wake-up handle, and the MonitorModel that turns what they
// report into published Topology snapshots.

import CLibUV
import Router

/// Requests from other threads, read by the loop when its uv_async_t fires.
struct MonitorRequests {
    var stop = false
    var pollSoon = false
    /// The whole backend list after a reload, to be applied by the loop.
    var backends: [MonitoredBackend]?
}

final class MonitorCore {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let async: UnsafeMutablePointer<uv_async_t>
    private let requests: Locked<MonitorRequests>
    private let settings: MonitorSettings
    /// By position; a retired backend keeps its place (see `MonitorModel`).
    private var backends: [MonitoredBackend]
    private let box: TopologyBox
    private let log: @Sendable (String) -> Void

    private var model: MonitorModel
    /// By position; nil once retired.
    private var pollers: [BackendPoller?] = []
    private var tickTimer: LoopTimer!

    /// Polls sent by the last tick whose answers (or failures) have not come back yet.
    private var roundPending = Set<Int>()
    private var publishedSinceTick = false
    /// Until when ticks run at the fast interval (after `pollSoon`), and whether they do now.
    private var fastUntil: UInt64 = 0
    private var fast = false

    private var scan: VolatileScan?
    private var nextScanAt: UInt64 = 0
    private var scannedPrimary: Int?
    private var functionsByDatabase: [String: Set<String>] = [:]
    private var lastScanErrors: [String] = []
    private var stopping = false

    init(
        loop: UnsafeMutablePointer<uv_loop_t>, async: UnsafeMutablePointer<uv_async_t>,
        requests: Locked<MonitorRequests>, backends: [MonitoredBackend], settings: MonitorSettings,
        box: TopologyBox, log: @escaping @Sendable (String) -> Void
    ) {
        self.loop = loop
        self.async = async
        self.requests = requests
        self.backends = backends
        self.settings = settings
        self.box = box
        self.log = log
        self.model = MonitorModel(backends: backends)
        self.tickTimer = LoopTimer(loop: loop) { [unowned self] in self.tick() }
    }

    /// On the loop thread, before uv_run: connect everything and start ticking.
    func begin() {
        async.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        for (position, backend) in backends.enumerated() {
            pollers.append(makePoller(position: position, backend: backend))
        }
        let interval = settings.effectiveIntervalMs
        tickTimer.start(timeoutMs: interval, repeatMs: interval)
        log("event=monitor_start backends=\(backends.count) interval_ms=\(interval)")
        for case let poller? in pollers { poller.start() }
    }

    private func makePoller(position: Int, backend: MonitoredBackend) -> BackendPoller {
        let poller = BackendPoller(position: position, backend: backend, settings: settings, loop: loop)
        poller.onSample = { [unowned self] position, sample, sentAt, receivedAt in
            self.sampled(position, sample, sentAt: sentAt, receivedAt: receivedAt)
        }
        poller.onFailure = { [unowned self] position, error in self.failed(position, error) }
        return poller
    }

    /// A reload: backends matched by `index`. One whose address changed is a different server:
    /// retired and added again, so no sample of the old one counts for the new one.
    private func reconfigure(_ wanted: [MonitoredBackend]) {
        let live = backends.indices.filter { pollers[$0] != nil }
        var byIndex: [Int: Int] = [:]
        for position in live { byIndex[backends[position].index] = position }
        let wantedIndexes = Set(wanted.map(\.index))
        for position in live where !wantedIndexes.contains(backends[position].index) {
            retire(position)
        }
        for backend in wanted {
            if let position = byIndex[backend.index] {
                let old = backends[position]
                if old.host == backend.host && old.port == backend.port && old.name == backend.name {
                    if old != backend {
                        model.update(position, zone: backend.zone, weight: backend.weight, declaredRole: backend.declaredRole)
                        backends[position] = backend
                        log("event=monitor_backend_changed backend=\(backend.name)")
                    }
                    continue
                }
                retire(position)
            }
            let position = model.add(backend)
            backends.append(backend)
            let poller = makePoller(position: position, backend: backend)
            pollers.append(poller)
            log("event=monitor_backend_added backend=\(backend.name) host=\(backend.host) port=\(backend.port)")
            poller.start()
        }
        publish()
    }

    private func retire(_ position: Int) {
        pollers[position]?.shutdown()
        pollers[position] = nil
        roundPending.remove(position)
        report(model.retire(position))
        log("event=monitor_backend_removed backend=\(backends[position].name)")
    }

    // MARK: - Cross-thread requests

    fileprivate func asyncFired() {
        let pending = requests.withLock { requests -> MonitorRequests in
            let copy = requests
            requests.pollSoon = false
            requests.backends = nil
            return copy
        }
        guard !stopping else { return }
        if pending.stop {
            shutdown()
            return
        }
        if let wanted = pending.backends { reconfigure(wanted) }
        if pending.pollSoon { pollSoon() }
    }

    private func pollSoon() {
        let now = monotonicNanos()
        fastUntil = now + 1_000_000_000
        if !fast {
            fast = true
            let period = settings.fastIntervalMs
            tickTimer.start(timeoutMs: period, repeatMs: period)
        }
        tick()
    }

    /// Closes every handle; uv_run returns once their close callbacks have run.
    private func shutdown() {
        stopping = true
        tickTimer.close()
        scan?.cancel()
        scan = nil
        for case let poller? in pollers { poller.shutdown() }
        pollers.removeAll()
        async.pointee.data = nil
        closeAndFree(async)
        log("event=monitor_stop")
    }

    // MARK: - Ticks

    private func tick() {
        guard !stopping else { return }
        let now = monotonicNanos()
        if fast && now >= fastUntil {
            fast = false
            let interval = settings.effectiveIntervalMs
            tickTimer.start(timeoutMs: interval, repeatMs: interval)
        }
        // At least one snapshot per interval, even when a poll hangs or every backend is down.
        if !publishedSinceTick || !roundPending.isEmpty { publish() }
        publishedSinceTick = false
        roundPending.removeAll(keepingCapacity: true)
        for case let poller? in pollers where poller.tick(now: now) {
            roundPending.insert(poller.position)
        }
        scanVolatileFunctionsIfDue(now: now)
    }

    private func sampled(_ position: Int, _ sample: PollSample, sentAt: UInt64, receivedAt: UInt64) {
        let events = model.recordPoll(position, sample, sentAt: sentAt, receivedAt: receivedAt)
        report(events)
        roundPending.remove(position)
        if roundPending.isEmpty || !events.isEmpty { publish() }
        if model.livePrimary != scannedPrimary, scan == nil {
            scanVolatileFunctionsIfDue(now: receivedAt, force: true)
        }
    }

    private func failed(_ position: Int, _ error: String) {
        report(model.recordFailure(position, error: error))
        roundPending.remove(position)
        publish()
    }

    private func publish() {
        publishedSinceTick = true
        box.publish(model.snapshot(now: monotonicNanos()))
    }

    private func report(_ events: [MonitorEvent]) {
        for event in events { log(event.description) }
    }

    // MARK: - Volatile functions

    private func scanVolatileFunctionsIfDue(now: UInt64, force: Bool = false) {
        guard scan == nil, !stopping, let primary = model.livePrimary else { return }
        guard force || now >= nextScanAt || primary != scannedPrimary else { return }
        scannedPrimary = primary
        nextScanAt = now + UInt64(settings.effectiveVolatileRefreshMs) * 1_000_000
        let scan = VolatileScan(loop: loop, primary: backends[primary], settings: settings) { [unowned self] result in
            self.scanned(result)
        }
        self.scan = scan
        scan.start()
    }

    private func scanned(_ result: VolatileScanResult) {
        scan = nil
        if result.errors != lastScanErrors {
            for error in result.errors { log("event=volatile_scan_error error=\(MonitorEvent.quoted(error))") }
            lastScanErrors = result.errors
        }
        guard !result.functionsByDatabase.isEmpty else {
            // Nothing could be read: try again soon rather than after a whole refresh period.
            nextScanAt = min(nextScanAt, monotonicNanos() + 1_000_000_000)
            return
        }
        for (database, names) in result.functionsByDatabase { functionsByDatabase[database] = names }
        if let databases = result.databases {
            functionsByDatabase = functionsByDatabase.filter { databases.contains($0.key) }
        }
        let union = functionsByDatabase.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        if union != model.volatileFunctions {
            model.volatileFunctions = union
            log("event=volatile_functions count=\(union.count) databases=\(functionsByDatabase.count)")
            publish()
        }
    }
}

/// The uv_async_t callback: wake-ups from `LagMonitor.stop()` and `pollSoon()`.
func monitorAsyncFired(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    guard let data = handle?.pointee.data else { return }
    let core = Unmanaged<MonitorCore>.fromOpaque(data).takeUnretainedValue()
    withExtendedLifetime(core) { core.asyncFired() }
}
