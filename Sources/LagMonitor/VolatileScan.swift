// Loads the names of user-defined VOLATILE functions from the primary (design §5: a call of one
// sends the statement to the primary). pg_proc is per database, so — unless told otherwise — the
// scan visits every database that accepts connections, one short-lived connection at a time.

import CLibUV
import Router

/// Outcome of one scan.
struct VolatileScanResult {
    /// Lower-cased function names per database that was read successfully.
    var functionsByDatabase: [String: Set<String>] = [:]
    /// Every database the scan knows exists (so names from dropped databases can be forgotten);
    /// nil when the database list could not be read.
    var databases: Set<String>?
    /// One message per database that could not be read.
    var errors: [String] = []
}

final class VolatileScan {
    /// Functions that are not the system's own, declared VOLATILE (any kind: function, procedure,
    /// aggregate), plus the other databases. `'f'` rows are names, `'d'` rows databases.
    static func query(listDatabases: Bool) -> String {
        var sql = """
            SELECT 'f', lower(p.proname) FROM pg_catalog.pg_proc p \
            JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
            WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
            """
        if listDatabases {
            sql += """
                 UNION SELECT 'd', datname FROM pg_catalog.pg_database \
                WHERE datallowconn AND NOT datistemplate AND datname <> current_database()
                """
        }
        return sql
    }

    /// At most this many databases are visited per scan (the list is sorted, so the same ones).
    static let maxDatabases = 256

    private enum Step { case connecting, querying, advancing }

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let backend: MonitoredBackend
    private let settings: MonitorSettings
    private let completion: (VolatileScanResult) -> Void
    /// Connect and query deadlines, and the deferred move to the next database.
    private var timer: LoopTimer!
    private var connection: PQConnection?
    private var pending: [String] = []
    private var current = ""
    private var isFirst = true
    private var step = Step.connecting
    private var result = VolatileScanResult()
    private var finished = false

    init(
        loop: UnsafeMutablePointer<uv_loop_t>, primary: MonitoredBackend, settings: MonitorSettings,
        completion: @escaping (VolatileScanResult) -> Void
    ) {
        self.loop = loop
        self.backend = primary
        self.settings = settings
        self.completion = completion
        self.timer = LoopTimer(loop: loop) { [unowned self] in self.timerFired() }
    }

    /// Starts with the monitor's own database; the completion runs later, on the loop.
    func start() {
        visit(settings.database)
    }

    /// Stops without calling the completion.
    func cancel() {
        finished = true
        connection?.close()
        connection = nil
        timer.close()
    }

    private func visit(_ database: String) {
        current = database
        step = .connecting
        let connection = PQConnection(loop: loop)
        connection.handler = { [unowned self] event in self.event(event) }
        let parameters = BackendPoller.parameters(for: backend, settings: settings, database: database)
        if let error = connection.connect(parameters: parameters) {
            // Move on at the next loop turn, never from inside start().
            result.errors.append("database \(database): \(error)")
            step = .advancing
            timer.start(timeoutMs: 0)
            return
        }
        self.connection = connection
        timer.start(timeoutMs: settings.effectiveConnectTimeoutMs)
    }

    private func timerFired() {
        switch step {
        case .connecting: databaseFailed("connect timed out after \(settings.effectiveConnectTimeoutMs) ms")
        case .querying: databaseFailed("query timed out after \(settings.effectiveConnectTimeoutMs) ms")
        case .advancing: next()
        }
    }

    private func event(_ event: PQEvent) {
        guard !finished else { return }
        switch event {
        case .connected:
            step = .querying
            if let error = connection?.send(Self.query(listDatabases: isFirst && settings.scanAllDatabases)) {
                databaseFailed(error)
                return
            }
            timer.start(timeoutMs: settings.effectiveConnectTimeoutMs)
        case .rows(let rows):
            var names = Set<String>()
            var databases: [String] = []
            for row in rows where row.count == 2 {
                guard let kind = row[0], let value = row[1] else { continue }
                if kind == "f" { names.insert(value) } else if kind == "d" { databases.append(value) }
            }
            result.functionsByDatabase[current] = names
            if isFirst {
                result.databases = Set(databases + [current])
                pending = Array(databases.sorted().prefix(Self.maxDatabases))
                if databases.count > Self.maxDatabases {
                    result.errors.append("only the first \(Self.maxDatabases) of \(databases.count) databases were scanned")
                }
            }
            next()
        case .failed(let message):
            databaseFailed(message)
        }
    }

    private func databaseFailed(_ message: String) {
        guard !finished else { return }
        result.errors.append("database \(current): \(message)")
        next()
    }

    private func next() {
        guard !finished else { return }
        isFirst = false
        connection?.close()
        connection = nil
        timer.stop()
        if pending.isEmpty {
            finished = true
            timer.close()
            completion(result)
            return
        }
        visit(pending.removeFirst())
    }
}
