// What the LagMonitor is told: the backends to watch and how to reach and poll them.

import Router

/// The role a backend was given in the configuration. The monitor always trusts what
/// `pg_is_in_recovery()` reports; the declared role is only the role shown before the first
/// successful poll, and a disagreement is logged.
public enum DeclaredRole: String, Sendable, Equatable, CaseIterable {
    case auto, primary, replica

    /// What the topology shows for a backend that has not been polled yet.
    var assumedRole: BackendRoleObserved {
        switch self {
        case .auto: .unknown
        case .primary: .primary
        case .replica: .replica
        }
    }
}

/// One backend to monitor.
public struct MonitoredBackend: Sendable, Equatable {
    /// Stable position in the configuration; becomes `BackendStatus.index`.
    public var index: Int
    public var name: String
    public var host: String
    public var port: Int
    public var zone: String
    public var weight: Int
    public var declaredRole: DeclaredRole

    public init(
        index: Int, name: String, host: String, port: Int = 5432, zone: String = "", weight: Int = 1,
        declaredRole: DeclaredRole = .auto
    ) {
        self.index = index
        self.name = name
        self.host = host
        self.port = port
        self.zone = zone
        self.weight = weight
        self.declaredRole = declaredRole
    }
}

/// How the monitor polls.
public struct MonitorSettings: Sendable, Equatable {
    /// Poll period per backend, in milliseconds (design §7: 100 by default).
    public var intervalMs: Int
    public var user: String
    /// May be empty: then no password is sent (trust, or ~/.pgpass).
    public var password: String
    /// Database the polling connections log in to.
    public var database: String
    /// Limit for establishing a connection, and for one poll query to answer. libpq's own
    /// `connect_timeout` only applies to blocking connects, so the monitor enforces this itself.
    public var connectTimeoutMs: Int
    /// How often the names of user-defined VOLATILE functions are reloaded from the primary.
    public var volatileRefreshMs: Int
    /// `pg_proc` is per database: when true, the volatile-function scan visits every database
    /// that accepts connections (one short-lived connection each, one after another); when false,
    /// only `database` is scanned.
    public var scanAllDatabases: Bool

    public init(
        intervalMs: Int = 100,
        user: String = "postgres",
        password: String = "",
        database: String = "postgres",
        connectTimeoutMs: Int = 2000,
        volatileRefreshMs: Int = 10_000,
        scanAllDatabases: Bool = true
    ) {
        self.intervalMs = intervalMs
        self.user = user
        self.password = password
        self.database = database
        self.connectTimeoutMs = connectTimeoutMs
        self.volatileRefreshMs = volatileRefreshMs
        self.scanAllDatabases = scanAllDatabases
    }

    /// The interval actually used: at least 1 ms.
    var effectiveIntervalMs: Int { max(1, intervalMs) }

    /// The faster period used for about a second after `pollSoon()`: a quarter of the interval,
    /// at least 10 ms (and never slower than the interval itself).
    var fastIntervalMs: Int { min(effectiveIntervalMs, max(10, effectiveIntervalMs / 4)) }

    var effectiveConnectTimeoutMs: Int { max(1, connectTimeoutMs) }

    var effectiveVolatileRefreshMs: Int { max(100, volatileRefreshMs) }
}
