// One backend's polling connection: connect, poll when the monitor ticks, report samples and
// failures, reconnect with backoff. Lives on the monitor's loop thread.

import CLibUV
import Router

final class BackendPoller {
    enum State: Equatable {
        /// Waiting for the reconnect timer after a failure.
        case waiting
        case connecting
        case idle
        /// A poll query is in flight since `sentAt`.
        case polling(sentAt: UInt64)
        case stopped
    }

    let position: Int
    let backend: MonitoredBackend
    private let settings: MonitorSettings
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private var connection: PQConnection?
    /// One timer per backend, used for whichever deadline applies: the connect timeout, the
    /// query timeout, or the reconnect delay.
    private var timer: LoopTimer!
    private var backoff = ReconnectBackoff()
    private(set) var state: State = .waiting

    var onSample: (_ position: Int, _ sample: PollSample, _ sentAt: UInt64, _ receivedAt: UInt64) -> Void = { _, _, _, _ in }
    var onFailure: (_ position: Int, _ error: String) -> Void = { _, _ in }

    init(position: Int, backend: MonitoredBackend, settings: MonitorSettings, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.position = position
        self.backend = backend
        self.settings = settings
        self.loop = loop
        self.timer = LoopTimer(loop: loop) { [unowned self] in self.timerFired() }
    }

    /// libpq parameters for this backend and `database`.
    static func parameters(for backend: MonitoredBackend, settings: MonitorSettings, database: String) -> [(String, String)] {
        var parameters = [
            ("host", backend.host),
            ("port", String(backend.port)),
            ("user", settings.user),
            ("dbname", database),
            ("application_name", "causeway-monitor"),
            // Only for blocking connects in libpq; the monitor enforces its own deadline too.
            ("connect_timeout", String(max(1, (settings.effectiveConnectTimeoutMs + 999) / 1000))),
        ]
        if !settings.password.isEmpty { parameters.append(("password", settings.password)) }
        return parameters
    }

    func start() {
        guard state == .waiting else { return }
        connect()
    }

    /// Sends a poll if the connection is idle. A poll still in flight is not duplicated.
    /// Returns whether a poll was sent.
    @discardableResult
    func tick(now: UInt64) -> Bool {
        guard state == .idle, let connection else { return false }
        if let error = connection.send(PollSample.query) {
            failed(error)
            return false
        }
        state = .polling(sentAt: now)
        timer.start(timeoutMs: settings.effectiveConnectTimeoutMs)
        return true
    }

    func shutdown() {
        state = .stopped
        connection?.close()
        connection = nil
        timer.close()
    }

    // MARK: - Internals

    private func connect() {
        let connection = PQConnection(loop: loop)
        connection.handler = { [unowned self] event in self.connectionEvent(event) }
        let parameters = Self.parameters(for: backend, settings: settings, database: settings.database)
        if let error = connection.connect(parameters: parameters) {
            failed(error)
            return
        }
        self.connection = connection
        state = .connecting
        timer.start(timeoutMs: settings.effectiveConnectTimeoutMs)
    }

    private func connectionEvent(_ event: PQEvent) {
        guard state != .stopped else { return }
        switch event {
        case .connected:
            timer.stop()
            state = .idle
            // First sample right away rather than at the next tick.
            tick(now: monotonicNanos())
        case .rows(let rows):
            guard case .polling(let sentAt) = state else { return }
            let receivedAt = monotonicNanos()
            guard rows.count == 1, let sample = PollSample(row: rows[0]) else {
                failed("unexpected answer to the poll query: \(rows.count) row(s)")
                return
            }
            timer.stop()
            state = .idle
            backoff.reset()
            onSample(position, sample, sentAt, receivedAt)
        case .failed(let message):
            failed(message)
        }
    }

    private func timerFired() {
        switch state {
        case .connecting:
            failed("connect timed out after \(settings.effectiveConnectTimeoutMs) ms")
        case .polling:
            failed("poll query timed out after \(settings.effectiveConnectTimeoutMs) ms")
        case .waiting:
            connect()
        case .idle, .stopped:
            break
        }
    }

    /// Drops the connection, schedules the next attempt and reports the failure.
    private func failed(_ error: String) {
        guard state != .stopped else { return }
        connection?.close()
        connection = nil
        state = .waiting
        timer.start(timeoutMs: backoff.nextDelayMs())
        onFailure(position, error)
    }
}
