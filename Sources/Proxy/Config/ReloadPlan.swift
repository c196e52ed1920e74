/// What a reload will do, worked out from the configuration in force and the new file before
/// anything is touched. Pure: the runtime applies it (and may still refuse it when a new backend's
/// host does not resolve).
///
/// Backends are matched by name. Same name and address: the same server, so its connections,
/// counters and lag history stay, and zone, weight or role changes apply in place. Same name, new
/// address: a different server — the old one is removed and the new one added under a new index.
/// Settings that only take effect when sockets or threads are created keep their old value and are
/// reported as needing a restart, so what SHOW CONFIG prints is always what is in force.
struct ReloadPlan: Equatable {
    /// The configuration that will be in force.
    var config: CausewayConfig
    /// For each backend of `config.backends`, in order: the index it keeps, or nil for a new one.
    var keptIndexes: [Int?]
    /// Indexes of backends that leave.
    var removedIndexes: [Int]
    var changes: [ReloadChange]

    var isEmpty: Bool { changes.isEmpty }

    /// `current` lists the live backends with their indexes.
    static func make(current: CausewayConfig, indexes: [Int], new: CausewayConfig) -> ReloadPlan {
        var changes: [ReloadChange] = []
        var effective = new

        // Sockets, threads and the monitor's connections are set up once.
        func keep<T: Equatable>(_ key: String, _ path: WritableKeyPath<CausewayConfig, T>, _ show: (T) -> String) {
            if current[keyPath: path] != new[keyPath: path] {
                changes.append(ReloadChange(kind: .needsRestart, subject: key,
                                            detail: "\(show(current[keyPath: path])) → \(show(new[keyPath: path])) (kept until restart)"))
                effective[keyPath: path] = current[keyPath: path]
            }
        }
        keep("proxy.listen", \.proxy.listen, \.description)
        keep("proxy.workers", \.proxy.workers) { String($0) }
        keep("proxy.pool_mode", \.proxy.poolMode, \.rawValue)
        keep("proxy.metrics_listen", \.proxy.metricsListen) { $0?.description ?? "off" }
        keep("proxy.log_level", \.proxy.logLevel, \.rawValue)
        keep("monitor.interval_ms", \.monitor.intervalMs) { String($0) }
        keep("monitor.user", \.monitor.user) { $0 }
        keep("monitor.password", \.monitor.password) { _ in "***" }

        // Read at the next login or the next request.
        func note<T: Equatable>(_ key: String, _ path: KeyPath<CausewayConfig, T>, _ show: (T) -> String) {
            if current[keyPath: path] != new[keyPath: path] {
                changes.append(ReloadChange(kind: .setting, subject: key,
                                            detail: "\(show(current[keyPath: path])) → \(show(new[keyPath: path]))"))
            }
        }
        note("proxy.zone", \.proxy.zone) { $0 }
        note("proxy.admin_users", \.proxy.adminUsers) { $0.joined(separator: ",") }
        note("proxy.auth_type", \.proxy.authType, \.rawValue)
        note("proxy.max_client_conn", \.proxy.maxClientConnections) { String($0) }
        note("routing.consistency", \.routing.consistency, \.rawValue)
        note("routing.max_lag_ms", \.routing.maxLagMs) { String($0) }
        note("routing.max_lag_bytes", \.routing.maxLagBytes) { String($0) }
        note("routing.causal_wait_ms", \.routing.causalWaitMs) { String($0) }
        note("routing.fallback", \.routing.fallback, \.rawValue)
        note("routing.report_lsn", \.routing.reportLSN) { String($0) }
        // Pool sizes and timeouts apply to the next connection a pool hands out or opens.
        note("proxy.default_pool_size", \.proxy.pools.defaultPoolSize) { String($0) }
        note("proxy.reserve_pool_size", \.proxy.pools.reservePoolSize) { String($0) }
        note("proxy.reserve_pool_timeout", \.proxy.pools.reservePoolTimeout) { "\($0) s" }
        note("proxy.max_db_connections", \.proxy.pools.maxDBConnections) { String($0) }
        note("proxy.max_user_connections", \.proxy.pools.maxUserConnections) { String($0) }
        note("proxy.server_idle_timeout", \.proxy.pools.serverIdleTimeout) { "\($0) s" }
        note("proxy.server_lifetime", \.proxy.pools.serverLifetime) { "\($0) s" }
        note("proxy.server_connect_timeout", \.proxy.pools.serverConnectTimeout) { "\($0) s" }
        note("proxy.query_wait_timeout", \.proxy.pools.queryWaitTimeout) { "\($0) s" }
        note("proxy.server_reset_query", \.proxy.pools.serverResetQuery) { $0 }
        userChanges(current.users, new.users, into: &changes)
        if current.databases != new.databases {
            changes.append(ReloadChange(kind: .setting, subject: "databases",
                                        detail: "per-database settings changed (consistency applies to new sessions, pool limits to the next connection)"))
        }

        var keptIndexes: [Int?] = []
        var kept = Set<Int>()
        for backend in new.backends {
            guard let position = current.backends.firstIndex(where: { $0.name == backend.name }) else {
                changes.append(ReloadChange(kind: .added, subject: backend.name, detail: "\(backend.host):\(backend.port)"))
                keptIndexes.append(nil)
                continue
            }
            let old = current.backends[position]
            if old.host != backend.host || old.port != backend.port {
                changes.append(ReloadChange(kind: .moved, subject: backend.name,
                                            detail: "\(old.host):\(old.port) → \(backend.host):\(backend.port): connections to the old address close at their next transaction boundary"))
                keptIndexes.append(nil)
                continue
            }
            keptIndexes.append(indexes[position])
            kept.insert(indexes[position])
            var differences: [String] = []
            if old.role != backend.role { differences.append("role \(old.role.rawValue) → \(backend.role.rawValue)") }
            if old.zone != backend.zone { differences.append("zone \(old.zone) → \(backend.zone)") }
            if old.weight != backend.weight { differences.append("weight \(old.weight) → \(backend.weight)") }
            if !differences.isEmpty {
                changes.append(ReloadChange(kind: .changed, subject: backend.name, detail: differences.joined(separator: ", ")))
            }
        }
        var removedIndexes: [Int] = []
        for (position, backend) in current.backends.enumerated() where !kept.contains(indexes[position]) {
            removedIndexes.append(indexes[position])
            if !new.backends.contains(where: { $0.name == backend.name }) {
                changes.append(ReloadChange(kind: .removed, subject: backend.name,
                                            detail: "\(backend.host):\(backend.port): its connections close at their next transaction boundary"))
            }
        }
        return ReloadPlan(config: effective, keptIndexes: keptIndexes, removedIndexes: removedIndexes, changes: changes)
    }

    private static func userChanges(_ old: [UserConfig], _ new: [UserConfig], into changes: inout [ReloadChange]) {
        for user in new {
            guard let before = old.first(where: { $0.name == user.name }) else {
                changes.append(ReloadChange(kind: .setting, subject: "users.\(user.name)", detail: "added"))
                continue
            }
            if before != user {
                changes.append(ReloadChange(kind: .setting, subject: "users.\(user.name)",
                                            detail: "changed (applies to the next login)"))
            }
        }
        for user in old where !new.contains(where: { $0.name == user.name }) {
            changes.append(ReloadChange(kind: .setting, subject: "users.\(user.name)",
                                        detail: "removed (logged-in sessions stay; new logins are refused)"))
        }
    }
}

/// One line of what a reload changed, as RELOAD shows it and the log records it.
public struct ReloadChange: Equatable, Sendable {
    public enum Kind: String, Sendable {
        case added, removed, moved, changed, setting
        case needsRestart = "needs_restart"
    }

    public var kind: Kind
    public var subject: String
    public var detail: String
}
