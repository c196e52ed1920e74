// One non-blocking libpq connection driven by a uv_poll_t on the monitor's loop: connect with
// PQconnectStartParams/PQconnectPoll, run a query with PQsendQuery/PQflush, read the answer with
// PQconsumeInput/PQisBusy/PQgetResult. Nothing here ever blocks the loop.

import CLibPQ
import CLibUV
import Foundation

/// What a `PQConnection` reports to its owner.
enum PQEvent {
    /// The connection is established and idle.
    case connected
    /// The query finished; every row of every result, in text form (NULL as nil).
    case rows([[String?]])
    /// The connection failed, or the query failed. Either way the owner should close it.
    case failed(String)
}

final class PQConnection {
    enum Phase { case idle, connecting, ready, busy, closed }

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private var conn: OpaquePointer?
    /// The poll handle and the socket it watches. libpq may replace the socket while connecting
    /// (another address, SSL retry…): the handle is then closed and a new one made, so there is
    /// never more than one handle per socket.
    private var poll: UnsafeMutablePointer<uv_poll_t>?
    private var pollFD: Int32 = -1
    private var needsFlush = false
    private var rows: [[String?]] = []
    private var queryError: String?

    private(set) var phase: Phase = .idle
    /// Receives every event; set it before `connect`. Never called from inside `connect`/`send`.
    var handler: (PQEvent) -> Void = { _ in }

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        self.loop = loop
    }

    deinit { close() }

    /// Starts connecting. Returns an error message if that failed at once (no event follows then).
    func connect(parameters: [(String, String)]) -> String? {
        guard phase == .idle else { return "connection already used" }
        let keywords = parameters.map { strdup($0.0) } + [nil]
        let values = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let started: OpaquePointer? = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectStartParams(k.baseAddress, v.baseAddress, 0)
            }
        }
        guard let started else {
            phase = .closed
            return "libpq could not allocate a connection"
        }
        conn = started
        PQsetNoticeProcessor(started, ignoreNotice, nil)
        if PQstatus(started) == CONNECTION_BAD {
            let message = errorMessage()
            close()
            return message
        }
        phase = .connecting
        // libpq: before the first PQconnectPoll, behave as if it returned PGRES_POLLING_WRITING.
        if let error = watch(PQsocket(started), events: UV_WRITABLE.rawValue) {
            close()
            return error
        }
        return nil
    }

    /// Sends one (possibly multi-statement) query. Returns an error message if it could not be
    /// sent (no event follows then); otherwise `.rows` or `.failed` follows.
    func send(_ sql: String) -> String? {
        guard phase == .ready, let conn else { return "connection not ready" }
        guard PQsendQuery(conn, sql) == 1 else { return errorMessage() }
        phase = .busy
        rows = []
        queryError = nil
        return flush()
    }

    /// Closes the poll handle first (so libuv stops watching the socket) and then the connection.
    func close() {
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

    // MARK: - Poll handle

    private func watch(_ fd: Int32, events: UInt32) -> String? {
        guard fd >= 0 else { return "libpq has no socket" }
        if let existing = poll, pollFD != fd {
            poll = nil
            pollFD = -1
            closeAndFree(existing)
        }
        let handle: UnsafeMutablePointer<uv_poll_t>
        if let existing = poll {
            handle = existing
        } else {
            handle = .allocate(capacity: 1)
            let rc = uv_poll_init(loop, handle, fd)
            guard rc == 0 else {
                handle.deallocate()
                return "cannot watch the socket: \(uvError(rc))"
            }
            handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            poll = handle
            pollFD = fd
        }
        let rc = uv_poll_start(handle, Int32(bitPattern: events), pqPollFired)
        return rc == 0 ? nil : "cannot watch the socket: \(uvError(rc))"
    }

    fileprivate func pollFired(status: Int32, events: Int32) {
        guard status >= 0 else {
            fail("socket error: \(uvError(status))")
            return
        }
        switch phase {
        case .connecting: continueConnecting()
        case .ready, .busy: socketReady(events: UInt32(bitPattern: events))
        case .idle, .closed: break
        }
    }

    // MARK: - Connecting

    private func continueConnecting() {
        guard let conn, let poll else { return }
        // The socket may change inside PQconnectPoll: stop watching it first.
        uv_poll_stop(poll)
        switch PQconnectPoll(conn) {
        case PGRES_POLLING_READING:
            if let error = watch(PQsocket(conn), events: UV_READABLE.rawValue) { fail(error) }
        case PGRES_POLLING_WRITING:
            if let error = watch(PQsocket(conn), events: UV_WRITABLE.rawValue) { fail(error) }
        case PGRES_POLLING_OK:
            guard PQsetnonblocking(conn, 1) == 0 else {
                fail(errorMessage())
                return
            }
            phase = .ready
            if let error = watch(PQsocket(conn), events: UV_READABLE.rawValue) {
                fail(error)
                return
            }
            handler(.connected)
        default:
            fail(errorMessage())
        }
    }

    // MARK: - Connected

    private func flush() -> String? {
        guard let conn else { return "connection closed" }
        switch PQflush(conn) {
        case 0:
            needsFlush = false
            return watch(PQsocket(conn), events: UV_READABLE.rawValue)
        case 1:
            needsFlush = true
            return watch(PQsocket(conn), events: UV_READABLE.rawValue | UV_WRITABLE.rawValue)
        default:
            return errorMessage()
        }
    }

    private func socketReady(events: UInt32) {
        guard let conn else { return }
        if events & (UV_READABLE.rawValue | UV_DISCONNECT.rawValue) != 0 {
            guard PQconsumeInput(conn) == 1 else {
                fail(errorMessage())
                return
            }
        }
        if needsFlush, let error = flush() {
            fail(error)
            return
        }
        if phase == .ready {
            // Nothing is expected while idle: drop notifications, notice a dead connection.
            while let notify = PQnotifies(conn) { PQfreemem(notify) }
            if PQstatus(conn) == CONNECTION_BAD { fail(errorMessage()) }
            return
        }
        while PQisBusy(conn) == 0 {
            guard let result = PQgetResult(conn) else {
                finishQuery()
                return
            }
            collect(result)
            PQclear(result)
        }
    }

    private func collect(_ result: OpaquePointer) {
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            let columns = PQnfields(result)
            for row in 0..<PQntuples(result) {
                var values: [String?] = []
                values.reserveCapacity(Int(columns))
                for column in 0..<columns {
                    if PQgetisnull(result, row, column) == 1 {
                        values.append(nil)
                    } else {
                        values.append(String(cString: PQgetvalue(result, row, column)))
                    }
                }
                rows.append(values)
            }
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            break
        default:
            if queryError == nil {
                let message = PQresultErrorMessage(result).map { String(cString: $0) } ?? ""
                queryError = Self.oneLine(message.isEmpty ? "query failed" : message)
            }
        }
    }

    private func finishQuery() {
        phase = .ready
        let outcome: PQEvent = queryError.map { .failed($0) } ?? .rows(rows)
        rows = []
        queryError = nil
        handler(outcome)
    }

    // MARK: - Errors

    private func fail(_ message: String) {
        guard phase != .closed else { return }
        close()
        handler(.failed(message))
    }

    private func errorMessage() -> String {
        let text = conn.flatMap { PQerrorMessage($0) }.map { String(cString: $0) } ?? ""
        return Self.oneLine(text.isEmpty ? "connection failed" : text)
    }

    /// libpq messages end with a newline and sometimes span lines; logs want one line.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
            .joined(separator: "; ")
    }
}

private func pqPollFired(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    guard let data = handle?.pointee.data else { return }
    let connection = Unmanaged<PQConnection>.fromOpaque(data).takeUnretainedValue()
    withExtendedLifetime(connection) { connection.pollFired(status: status, events: events) }
}

private func ignoreNotice(_ argument: UnsafeMutableRawPointer?, _ message: UnsafePointer<CChar>?) {}
