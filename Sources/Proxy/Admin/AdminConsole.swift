import CShims
import Foundation
import Router
import Wire

/// The admin console: psql to database `causeway` as one of `admin_users`. Each command is
/// answered with a real row set (or a command tag), never by a server.
struct AdminConsole {
    let runtime: ProxyRuntime
    let topology: Topology
    var settings: RuntimeSettings { runtime.settings }

    enum Outcome {
        case rows(ResultSet)
        case done(tag: String)
        case error(ErrorFields)
        /// SHUTDOWN: reply, then begin a graceful stop.
        case shutdown
    }

    static let help: [(String, String)] = [
        ("SHOW BACKENDS", "every backend: role, state, lag, replay position, catch-up estimate, sessions, server connections, reads, writes"),
        ("SHOW CLIENTS", "connected client sessions: state (idle, active, idle in transaction, waiting for what) and what pins them to their server connection"),
        ("SHOW POOLS", "server connection pools per backend, database and user: clients active and waiting, connections active, idle, being reset and logging in, the longest wait"),
        ("SHOW SERVERS", "pooled server connections: backend, user, database, state (login, active, idle, resetting), the client using one, the server process"),
        ("SHOW STATS", "routing decisions by reason, retries, clients"),
        ("SHOW CONFIG", "the configuration in force"),
        ("SHOW VERSION", "causeway's version"),
        ("SHOW HELP", "this list"),
        ("DRAIN <backend> [<seconds>]", "move traffic off a replica at transaction boundaries; after <seconds> (default 60) remaining connections are cut"),
        ("UNDRAIN <backend>", "let a drained replica take reads again"),
        ("PAUSE [<seconds>]", "hold new write transactions (reads go on), e.g. during a switchover; a write waits at most <seconds> (default 30)"),
        ("RESUME", "release the writes held by PAUSE, in order"),
        ("RELOAD", "read the configuration file again: add, remove or change backends and routing settings without disturbing other connections"),
        ("KILL <client id>", "disconnect one client (ids from SHOW CLIENTS); its open transaction rolls back"),
        ("SHUTDOWN", "stop gracefully: sessions finish their transactions first"),
    ]

    func execute(_ text: String) -> Outcome {
        var command = text.trimmingCharacters(in: .whitespacesAndNewlines)
        while command.hasSuffix(";") { command = String(command.dropLast()).trimmingCharacters(in: .whitespaces) }
        let words = command.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        guard let verb = words.first?.uppercased() else { return .done(tag: "EMPTY") }
        switch (verb, words.count > 1 ? words[1].uppercased() : "") {
        case ("SHOW", "BACKENDS"): return .rows(backends())
        case ("SHOW", "CLIENTS"): return .rows(clients())
        case ("SHOW", "POOLS"): return .rows(pools())
        case ("SHOW", "SERVERS"): return .rows(servers())
        case ("SHOW", "STATS"): return .rows(stats())
        case ("SHOW", "CONFIG"): return .rows(config())
        case ("SHOW", "VERSION"): return .rows(ResultSet(columns: ["version"], rows: [["causeway \(CausewayVersion.string)"]]))
        case ("SHOW", "HELP"): return .rows(ResultSet(columns: ["command", "description"], rows: Self.help.map { [$0.0, $0.1] }))
        case ("DRAIN", _): return drain(words)
        case ("UNDRAIN", _): return undrain(words)
        case ("SHUTDOWN", _): return .shutdown
        case ("RELOAD", _):
            guard words.count == 1 else { return .error(usage("RELOAD")) }
            return reload()
        case ("PAUSE", _):
            var seconds = 30.0
            if words.count == 2 {
                guard let value = Double(words[1]), value > 0, value <= 3600 else { return .error(usage("PAUSE [<seconds>]")) }
                seconds = value
            } else if words.count > 2 {
                return .error(usage("PAUSE [<seconds>]"))
            }
            runtime.pause(seconds: seconds)
            return .done(tag: "PAUSE")
        case ("KILL", _):
            guard words.count == 2, let id = Int32(words[1]) else { return .error(usage("KILL <client id>")) }
            guard runtime.kill(client: id) else {
                return .error(ErrorFields(severity: .error, sqlState: SQLState.undefinedObject, message: "no client with id \(id)",
                                          hint: "SHOW CLIENTS lists the connected clients."))
            }
            return .done(tag: "KILL")
        case ("RESUME", _):
            runtime.resume()
            return .done(tag: "RESUME")
        default:
            return .error(ErrorFields(severity: .error, sqlState: SQLState.syntaxError,
                                      message: "unknown admin command \"\(command)\"",
                                      hint: "Commands: " + Self.help.map(\.0).joined(separator: ", ") + "."))
        }
    }

    // MARK: - SHOW

    private func backends() -> ResultSet {
        let columns = ["name", "address", "zone", "role", "state", "lag_ms", "lag_bytes", "replay_lsn",
                       "catch_up_ms", "sessions", "server_conns", "reads", "writes"]
        var rows: [[String?]] = []
        let settings = self.settings
        for index in settings.visibleIndexes {
            let slot = settings.slots[index]
            let backend = slot.backend
            let status = slot.removed ? nil : topology.backend(at: index)
            let counters = slot.counters
            let connections = counters.serverConnections.load(ordering: .relaxed)
            rows.append([
                backend.config.name,
                "\(backend.config.host):\(backend.config.port)",
                backend.config.zone,
                status?.role.rawValue ?? "unknown",
                slot.removed ? "removed" : Self.state(status, connections: connections),
                status.map { String(Int($0.lagMs.rounded())) },
                status.map { String($0.lagBytes) },
                (status?.role == .primary ? status?.currentLSN : status?.replayLSN)?.description,
                status?.catchUpEstimateMs.map { String(Int($0.rounded())) },
                String(counters.sessions.load(ordering: .relaxed)),
                String(connections),
                String(counters.reads.load(ordering: .relaxed)),
                String(counters.writes.load(ordering: .relaxed)),
            ])
        }
        return ResultSet(columns: columns, rows: rows)
    }

    static func state(_ status: BackendStatus?, connections: Int) -> String {
        guard let status else { return "unknown" }
        if status.draining { return connections == 0 ? "drained" : "draining" }
        if status.health == .up && status.replayPaused { return "up (replay paused)" }
        return status.health.rawValue
    }

    private func clients() -> ResultSet {
        let now = Date().timeIntervalSince1970
        let rows = runtime.stats.clientList().map { client -> [String?] in
            let (state, pins) = ClientState.describe(client.status.code.load(ordering: .relaxed))
            return [String(client.id), client.user, client.database, client.address, String(client.worker),
                    String(format: "%.1f", now - client.connectedAt), state, pins.isEmpty ? nil : pins.joined(separator: ",")]
        }
        return ResultSet(columns: ["id", "user", "database", "client", "worker", "connected_s", "state", "pinned_by"], rows: rows)
    }

    /// One row per pooled server connection, as PgBouncer's SHOW SERVERS, with the backend.
    private func servers() -> ResultSet {
        let now = Date().timeIntervalSince1970
        let rows = runtime.stats.serverList().map { server -> [String?] in
            let (state, client) = server.status.current
            let pid = server.status.serverPID.load(ordering: .relaxed)
            return [server.backend, server.user, server.database, state.label, client.map(String.init),
                    pid == 0 ? nil : String(pid), String(server.worker), String(format: "%.1f", now - server.connectedAt)]
        }
        return ResultSet(columns: ["backend", "user", "database", "state", "client_id", "server_pid", "worker", "connected_s"],
                         rows: rows)
    }

    /// PgBouncer's columns, one row per (backend, database, user) pool, plus the backend's role.
    /// A backend without pools yet shows one row with no database and user.
    private func pools() -> ResultSet {
        let settings = self.settings
        let now = cw_monotonic_nanos()
        let snapshot = runtime.pools.snapshot()
        var rows: [[String?]] = []
        for index in settings.visibleIndexes {
            let name = settings.slots[index].name
            let role = topology.backend(at: index)?.role.rawValue ?? "unknown"
            let pools = snapshot.filter { $0.key.backend == index }
            if pools.isEmpty {
                rows.append([name, role, nil, nil, "0", "0", "0", "0", "0", "0", "0", settings.config.proxy.poolMode.rawValue])
                continue
            }
            for (key, counts) in pools {
                let longest = counts.waitingSince.min().map { Double(now &- $0) / 1e9 } ?? 0
                rows.append([name, role, key.database, key.user, String(counts.active), String(counts.waitingSince.count),
                             String(counts.active), String(counts.idle), String(counts.resetting), String(counts.loggingIn),
                             String(format: "%.1f", longest), settings.config.proxy.poolMode.rawValue])
            }
        }
        return ResultSet(columns: ["backend", "role", "database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                                   "sv_used", "sv_login", "maxwait", "pool_mode"], rows: rows)
    }

    private func stats() -> ResultSet {
        var rows: [[String?]] = runtime.stats.routeCounts().map { ["route_\($0.0.rawValue)", String($0.1)] }
        rows.append(["retries", String(runtime.stats.retries.load(ordering: .relaxed))])
        rows.append(["errors_from_servers", String(runtime.stats.serverErrors.load(ordering: .relaxed))])
        for (sqlState, count) in runtime.stats.proxyErrorCounts() {
            rows.append(["errors_from_proxy_\(sqlState)", String(count)])
        }
        rows.append(["clients_connected", String(runtime.counters.clientConnections.load(ordering: .relaxed))])
        rows.append(["clients_total", String(runtime.stats.totalClients.load(ordering: .relaxed))])
        rows.append(["uptime_s", String(Int(Date().timeIntervalSince1970 - runtime.startedAt))])
        rows.append(["topology_generation", String(topology.generation)])
        rows.append(["writes_paused", runtime.paused.load(ordering: .relaxed) ? "yes" : "no"])
        return ResultSet(columns: ["stat", "value"], rows: rows)
    }

    private func config() -> ResultSet {
        let c = settings.config
        var rows: [[String?]] = [
            ["proxy.listen", "\(c.proxy.listen.host):\(c.proxy.listen.port)"],
            ["proxy.workers", String(c.proxy.workers)],
            ["proxy.pool_mode", c.proxy.poolMode.rawValue],
            ["proxy.zone", c.proxy.zone],
            ["proxy.admin_users", c.proxy.adminUsers.joined(separator: ",")],
            ["proxy.metrics_listen", c.proxy.metricsListen.map { "\($0.host):\($0.port)" } ?? ""],
            ["proxy.auth_type", c.proxy.authType.rawValue],
            ["proxy.max_client_conn", String(c.proxy.maxClientConnections)],
            ["proxy.log_level", c.proxy.logLevel.rawValue],
            ["routing.consistency", c.routing.consistency.rawValue],
            ["routing.max_lag_ms", String(c.routing.maxLagMs)],
            ["routing.max_lag_bytes", String(c.routing.maxLagBytes)],
            ["routing.causal_wait_ms", String(c.routing.causalWaitMs)],
            ["routing.fallback", c.routing.fallback.rawValue],
            ["routing.report_lsn", String(c.routing.reportLSN)],
            ["monitor.interval_ms", String(c.monitor.intervalMs)],
            ["monitor.user", c.monitor.user],
        ]
        for backend in c.backends {
            rows.append(["backends.\(backend.name)", "\(backend.host):\(backend.port) role=\(backend.role.rawValue) zone=\(backend.zone) weight=\(backend.weight)"])
        }
        rows.append(["users", c.users.map(\.name).joined(separator: ",")])
        rows.append(["config_file", runtime.configPath ?? ""])
        rows.append(["config_generation", String(settings.generation)])
        return ResultSet(columns: ["key", "value"], rows: rows)
    }

    // MARK: - RELOAD

    /// One row per change; an empty set when the file changed nothing. A refused reload is an
    /// error (F0000, config_file_error) saying why, and nothing changes.
    private func reload() -> Outcome {
        do {
            let changes = try runtime.reload()
            return .rows(ResultSet(columns: ["change", "subject", "detail"],
                                   rows: changes.map { [$0.kind.rawValue, $0.subject, $0.detail] },
                                   tag: "RELOAD"))
        } catch {
            runtime.log("reload").warn("reload_refused", ["reason": error.description])
            return .error(ErrorFields(severity: .error, sqlState: SQLState.configFileError, message: error.description,
                                      hint: "Fix the file and run RELOAD again; the previous configuration stays in force."))
        }
    }

    // MARK: - DRAIN

    private func drain(_ words: [String]) -> Outcome {
        guard words.count == 2 || words.count == 3 else {
            return .error(usage("DRAIN <backend> [<seconds>]"))
        }
        guard let index = settings.liveIndex(named: words[1]) else {
            return .error(unknownBackend(words[1]))
        }
        var seconds = 60.0
        if words.count == 3 {
            guard let value = Double(words[2]), value >= 0, value <= 86_400 else { return .error(usage("DRAIN <backend> [<seconds>]")) }
            seconds = value
        }
        if topology.backend(at: index)?.role == .primary {
            return .error(ErrorFields(severity: .error, sqlState: SQLState.objectNotInPrerequisiteState,
                                      message: "cannot drain \(words[1]): it is the primary, and writes have nowhere else to go",
                                      hint: "For a switchover, promote a replica; causeway follows the new primary."))
        }
        runtime.drain(backend: index, seconds: seconds)
        return .done(tag: "DRAIN")
    }

    private func undrain(_ words: [String]) -> Outcome {
        guard words.count == 2 else { return .error(usage("UNDRAIN <backend>")) }
        guard let index = settings.liveIndex(named: words[1]) else {
            return .error(unknownBackend(words[1]))
        }
        runtime.undrain(backend: index)
        return .done(tag: "UNDRAIN")
    }

    private func usage(_ text: String) -> ErrorFields {
        ErrorFields(severity: .error, sqlState: SQLState.syntaxError, message: "usage: \(text)")
    }

    private func unknownBackend(_ name: String) -> ErrorFields {
        ErrorFields(severity: .error, sqlState: SQLState.undefinedObject, message: "no backend named \"\(name)\"",
                    hint: "Backends: " + settings.liveIndexes.map { settings.slots[$0].name }.joined(separator: ", ") + ".")
    }
}
