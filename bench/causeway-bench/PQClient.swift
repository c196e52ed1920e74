// One libpq connection driven without ever blocking its loop: PQconnectStart/PQconnectPoll to
// connect, PQsend* + PQflush to send, PQconsumeInput/PQisBusy/PQgetResult to read, all paced by a
// uv_poll_t on PQsocket. A batch of steps runs one after another, or in libpq pipeline mode as
// one round trip.

import CLibPQ
import CLibUV
import Foundation

struct PQFailure: Error {
    /// SQLSTATE, or "connect"/"connection" when libpq had no server error to report.
    var code: String
    var message: String
    /// The connection is gone; the owner must reconnect before using it again.
    var connectionLost: Bool
}

struct PQOutcome {
    /// The columns and rows of the last result that returned rows.
    var columns: [String] = []
    var rows: [[String?]] = []
    var failure: PQFailure?
}

enum PQStep {
    /// PQsendQuery: simple protocol; the text may hold several statements.
    case simple(String)
    /// PQsendQueryParams: extended protocol, unnamed statement.
    case params(String, [String?])
    /// PQsendPrepare (once per connection) then PQsendQueryPrepared.
    case prepared(name: String, sql: String, [String?])
}

final class PQClient {
    private enum Phase { case idle, connecting, ready, busy, closed }
    /// One libpq call to make; `prepared` expands to `.prepare` + `.execPrepared` when needed.
    private enum Call {
        case simple(String)
        case params(String, [String?])
        case prepare(name: String, sql: String, count: Int)
        case execPrepared(name: String, [String?])
    }

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private var conn: OpaquePointer?
    private var poll: UnsafeMutablePointer<uv_poll_t>?
    private var pollFD: Int32 = -1
    private var phase = Phase.idle
    private var needsFlush = false
    private var connectDone: ((PQFailure?) -> Void)?
    private var runDone: ((PQOutcome) -> Void)?
    private var calls: [Call] = []
    private var callIndex = 0
    private var pipelined = false
    private var outcome = PQOutcome()
    private var preparing: [String] = []
    /// Statement names prepared on this connection (a new connection starts empty).
    private(set) var prepared: Set<String> = []

    init(loop: UnsafeMutablePointer<uv_loop_t>) { self.loop = loop }

    deinit { close() }

    var isReady: Bool { phase == .ready }
    var isOpen: Bool { phase == .ready || phase == .busy }
    /// Neither connected nor connecting.
    var isClosed: Bool { phase == .idle || phase == .closed }

    /// Inside a transaction block (or a failed one) after the last result.
    var inTransaction: Bool {
        guard let conn else { return false }
        let status = PQtransactionStatus(conn)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    // MARK: - Connecting

    /// `completion` runs once, on this loop, never from inside `connect`.
    func connect(_ conninfo: String, completion: @escaping (PQFailure?) -> Void) {
        close()
        phase = .idle
        prepared = []
        connectDone = completion
        guard let started = PQconnectStart(conninfo) else {
            deferFailure(PQFailure(code: "connect", message: "libpq could not allocate a connection", connectionLost: true))
            return
        }
        conn = started
        PQsetNoticeProcessor(started, { _, _ in }, nil)
        guard PQstatus(started) != CONNECTION_BAD else {
            deferFailure(PQFailure(code: "connect", message: errorMessage(), connectionLost: true))
            return
        }
        phase = .connecting
        // libpq: before the first PQconnectPoll, act as if it had returned PGRES_POLLING_WRITING.
        if let error = watch(PQsocket(started), writable: true) { deferFailure(error) }
    }

    /// A failure found while still inside `connect` is reported from the next loop turn, so the
    /// caller's state is settled before its completion runs.
    private func deferFailure(_ failure: PQFailure) {
        let timer = LoopTimer(loop: loop)
        timer.fire = { [weak self, timer] in
            timer.close()
            timer.fire = {}  // breaks the timer ↔ closure cycle
            self?.fail(failure)
        }
        timer.start(ms: 0)
    }

    private func continueConnecting() {
        guard let conn, let poll else { return }
        // PQconnectPoll may switch to another socket: stop watching the old one first.
        uv_poll_stop(poll)
        switch PQconnectPoll(conn) {
        case PGRES_POLLING_READING:
            if let error = watch(PQsocket(conn), writable: false) { fail(error) }
        case PGRES_POLLING_WRITING:
            if let error = watch(PQsocket(conn), writable: true) { fail(error) }
        case PGRES_POLLING_OK:
            guard PQsetnonblocking(conn, 1) == 0 else {
                fail(PQFailure(code: "connect", message: errorMessage(), connectionLost: true))
                return
            }
            phase = .ready
            if let error = watch(PQsocket(conn), writable: false) {
                fail(error)
                return
            }
            let done = connectDone
            connectDone = nil
            done?(nil)
        default:
            fail(PQFailure(code: "connect", message: errorMessage(), connectionLost: true))
        }
    }

    // MARK: - Running

    /// Runs `steps` in order and reports once. Stops at the first failing step (the rest are not
    /// sent; in pipeline mode the server skips them). `pipeline` sends everything before reading
    /// (libpq pipeline mode; simple steps cannot be pipelined and run one by one).
    func run(_ steps: [PQStep], pipeline: Bool = false, completion: @escaping (PQOutcome) -> Void) {
        guard phase == .ready, let conn, !steps.isEmpty else {
            completion(PQOutcome(failure: PQFailure(code: "connection", message: "connection not ready", connectionLost: true)))
            return
        }
        calls = []
        preparing = []
        for step in steps {
            switch step {
            case .simple(let sql): calls.append(.simple(sql))
            case .params(let sql, let values): calls.append(.params(sql, values))
            case .prepared(let name, let sql, let values):
                if !prepared.contains(name) && !preparing.contains(name) {
                    calls.append(.prepare(name: name, sql: sql, count: values.count))
                    preparing.append(name)
                }
                calls.append(.execPrepared(name: name, values))
            }
        }
        let canPipeline = pipeline && calls.count > 1 && !calls.contains { if case .simple = $0 { return true } else { return false } }
        callIndex = 0
        outcome = PQOutcome()
        runDone = completion
        phase = .busy
        pipelined = canPipeline
        if canPipeline {
            guard PQenterPipelineMode(conn) == 1 else { return finish(failure: queryFailure()) }
            for call in calls {
                guard send(call) else { return finish(failure: queryFailure()) }
            }
            guard PQpipelineSync(conn) == 1 else { return finish(failure: queryFailure()) }
        } else {
            guard send(calls[0]) else { return finish(failure: queryFailure()) }
        }
        if let error = flush() { finish(failure: error) }
    }

    private func send(_ call: Call) -> Bool {
        guard let conn else { return false }
        switch call {
        case .simple(let sql):
            return PQsendQuery(conn, sql) == 1
        case .params(let sql, let values):
            return withCStrings(values) { PQsendQueryParams(conn, sql, Int32(values.count), nil, $0, nil, nil, 0) } == 1
        case .prepare(let name, let sql, let count):
            return PQsendPrepare(conn, name, sql, Int32(count), nil) == 1
        case .execPrepared(let name, let values):
            return withCStrings(values) { PQsendQueryPrepared(conn, name, Int32(values.count), $0, nil, nil, 0) } == 1
        }
    }

    /// Reads whatever results are complete; advances to the next call, or finishes.
    private func readResults() {
        guard let conn else { return }
        var nulls = 0
        while phase == .busy && PQisBusy(conn) == 0 {
            guard let result = PQgetResult(conn) else {
                if pipelined {
                    // In pipeline mode a NULL ends one query's results; two in a row means
                    // nothing more is ready yet.
                    nulls += 1
                    if nulls > 1 { return }
                    callIndex += 1
                    continue
                }
                // This call is complete.
                callIndex += 1
                if outcome.failure != nil || callIndex >= calls.count {
                    return finish(failure: outcome.failure)
                }
                guard send(calls[callIndex]) else { return finish(failure: queryFailure()) }
                if let error = flush() { return finish(failure: error) }
                continue
            }
            nulls = 0
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_SYNC {
                PQclear(result)
                _ = PQexitPipelineMode(conn)
                return finish(failure: outcome.failure)
            }
            collect(result, status: status)
            PQclear(result)
        }
    }

    private func collect(_ result: OpaquePointer, status: ExecStatusType) {
        switch status {
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            let columns = PQnfields(result)
            outcome.columns = (0..<columns).map { String(cString: PQfname(result, $0)) }
            outcome.rows = (0..<PQntuples(result)).map { row in
                (0..<columns).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                }
            }
        case PGRES_COMMAND_OK:
            if callIndex < calls.count, case .prepare(let name, _, _) = calls[callIndex] { prepared.insert(name) }
        case PGRES_EMPTY_QUERY, PGRES_PIPELINE_ABORTED:
            break
        default:
            if outcome.failure == nil {
                let code = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? "unknown"
                let message = PQresultErrorMessage(result).map { String(cString: $0) } ?? ""
                outcome.failure = PQFailure(code: code, message: Self.oneLine(message), connectionLost: false)
            }
        }
    }

    private func finish(failure: PQFailure?) {
        var failure = failure
        if let conn, PQstatus(conn) == CONNECTION_BAD {
            failure = failure ?? PQFailure(code: "connection", message: errorMessage(), connectionLost: true)
            failure?.connectionLost = true
        }
        if failure?.connectionLost == true {
            closeHandles()
        } else {
            phase = .ready
        }
        var result = outcome
        result.failure = failure
        outcome = PQOutcome()
        calls = []
        let done = runDone
        runDone = nil
        done?(result)
    }

    private func queryFailure() -> PQFailure {
        let lost = conn.map { PQstatus($0) == CONNECTION_BAD } ?? true
        return PQFailure(code: lost ? "connection" : "client", message: errorMessage(), connectionLost: lost)
    }

    // MARK: - Socket

    private func flush() -> PQFailure? {
        guard let conn else { return PQFailure(code: "connection", message: "connection closed", connectionLost: true) }
        switch PQflush(conn) {
        case 0:
            needsFlush = false
            return watch(PQsocket(conn), writable: false)
        case 1:
            needsFlush = true
            return watch(PQsocket(conn), writable: true)
        default:
            return PQFailure(code: "connection", message: errorMessage(), connectionLost: true)
        }
    }

    private func watch(_ fd: Int32, writable: Bool) -> PQFailure? {
        guard fd >= 0 else { return PQFailure(code: "connection", message: "libpq has no socket", connectionLost: true) }
        if let existing = poll, pollFD != fd {
            poll = nil
            pollFD = -1
            closeAndFree(existing)
        }
        if poll == nil {
            let handle = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
            let rc = uv_poll_init(loop, handle, fd)
            guard rc == 0 else {
                handle.deallocate()
                return PQFailure(code: "connection", message: "cannot watch the socket: \(uvError(rc))", connectionLost: true)
            }
            handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            poll = handle
            pollFD = fd
        }
        // While connecting, wait for exactly what PQconnectPoll asked; afterwards always read.
        let events = phase == .connecting
            ? (writable ? UV_WRITABLE.rawValue : UV_READABLE.rawValue)
            : (UV_READABLE.rawValue | (writable ? UV_WRITABLE.rawValue : 0))
        let rc = uv_poll_start(poll, Int32(events), pqPollFired)
        return rc == 0 ? nil : PQFailure(code: "connection", message: "cannot watch the socket: \(uvError(rc))", connectionLost: true)
    }

    fileprivate func pollFired(status: Int32, events: Int32) {
        if status < 0 && phase == .connecting {
            // A refused or reset connection: libpq's own message says it better than libuv's.
            continueConnecting()
            return
        }
        guard status >= 0 else {
            fail(PQFailure(code: "connection", message: "socket error: \(uvError(status))", connectionLost: true))
            return
        }
        switch phase {
        case .connecting:
            continueConnecting()
        case .ready, .busy:
            guard let conn else { return }
            if events & Int32(UV_READABLE.rawValue | UV_DISCONNECT.rawValue) != 0 {
                guard PQconsumeInput(conn) == 1 else {
                    fail(PQFailure(code: "connection", message: errorMessage(), connectionLost: true))
                    return
                }
            }
            if needsFlush, let error = flush() {
                fail(error)
                return
            }
            if phase == .ready {
                // Idle: nothing is expected; notice a connection the server closed.
                if PQstatus(conn) == CONNECTION_BAD { fail(PQFailure(code: "connection", message: errorMessage(), connectionLost: true)) }
                return
            }
            readResults()
        case .idle, .closed:
            break
        }
    }

    // MARK: - Closing and errors

    /// Reports `failure` to whoever waits (connect or run) and closes.
    private func fail(_ failure: PQFailure) {
        let wasConnecting = phase == .connecting || connectDone != nil
        closeHandles()
        if wasConnecting, let done = connectDone {
            connectDone = nil
            done(failure)
        } else if let done = runDone {
            runDone = nil
            var result = outcome
            result.failure = failure
            done(result)
        }
    }

    private func closeHandles() {
        phase = .closed
        if let poll {
            self.poll = nil
            pollFD = -1
            closeAndFree(poll)
        }
        if let conn {
            self.conn = nil
            PQfinish(conn)
        }
    }

    /// Closes without reporting anything to pending completions.
    func close() {
        connectDone = nil
        runDone = nil
        closeHandles()
    }

    private func errorMessage() -> String {
        let text = conn.flatMap { PQerrorMessage($0) }.map { String(cString: $0) } ?? ""
        return Self.oneLine(text.isEmpty ? "connection failed" : text)
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
    }
}

private func pqPollFired(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    guard let data = handle?.pointee.data else { return }
    let client = Unmanaged<PQClient>.fromOpaque(data).takeUnretainedValue()
    withExtendedLifetime(client) { client.pollFired(status: status, events: events) }
}

/// Calls `body` with a C array of the strings (NULL for nil), valid only during the call.
private func withCStrings<R>(_ values: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = values.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
