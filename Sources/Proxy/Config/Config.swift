// The configuration model: what conf/causeway.toml says, validated and with defaults filled in.
// ConfigLoader.swift turns a TOML document into these values; docs/contracts.md lists the schema.

import LagMonitor
import Router

/// A TCP address to listen on: "host:port", or "[ipv6]:port".
public struct ListenAddress: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses "127.0.0.1:6432", "localhost:6432", "[::1]:6432". Returns nil for anything else,
    /// including a port outside 1–65535.
    public init?(parsing text: String) {
        guard case .success(let address) = ListenAddress.parse(text) else { return nil }
        self = address
    }

    /// Like `init?(parsing:)`, with the reason when the text is not an address.
    static func parse(_ text: String) -> Result<ListenAddress, ListenAddressError> {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                return .failure(.init(reason: "missing \"]\" after the IPv6 address"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                return .failure(.init(reason: "expected \":port\" after \"]\""))
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return .failure(.init(reason: "missing \":port\""))
            }
            host = text[..<colon]
            if host.contains(":") {
                return .failure(.init(reason: "write IPv6 addresses in brackets, as in \"[::1]:6432\""))
            }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else {
            return .failure(.init(reason: "missing host (use 0.0.0.0 or [::] for all interfaces)"))
        }
        guard !host.contains(where: { $0 == " " || $0 == "\t" }) else {
            return .failure(.init(reason: "host contains a space"))
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText)
        else {
            return .failure(.init(reason: "port must be a number"))
        }
        guard (1...65535).contains(port) else {
            return .failure(.init(reason: "port must be between 1 and 65535"))
        }
        return .success(ListenAddress(host: String(host), port: port))
    }

    /// "host:port", with brackets around IPv6 hosts.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

struct ListenAddressError: Error {
    var reason: String
}

/// How server connections are shared: one per client session, or borrowed per transaction.
public enum PoolMode: String, Sendable, CaseIterable {
    case session, transaction
}

/// How the proxy authenticates clients.
public enum AuthType: String, Sendable, CaseIterable {
    case trust, md5
    case scramSHA256 = "scram-sha-256"
}

/// Log verbosity, ordered by severity: debug < info < warn < error.
public enum LogLevel: String, Sendable, CaseIterable, Comparable {
    case debug, info, warn, error

    private var severity: Int {
        switch self {
        case .debug: 0
        case .info: 1
        case .warn: 2
        case .error: 3
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.severity < rhs.severity }
}

/// `[proxy]`
public struct ProxySettings: Sendable, Equatable {
    public var listen: ListenAddress
    /// Worker threads; 0 means one per core (resolved by whoever starts the workers, kept as 0 here).
    public var workers: Int
    public var poolMode: PoolMode
    public var zone: String
    public var adminUsers: [String]
    /// nil when metrics are disabled (`metrics_listen = ""`).
    public var metricsListen: ListenAddress?
    public var authType: AuthType
    /// `max_client_conn`
    public var maxClientConnections: Int
    public var logLevel: LogLevel
    /// Server connections: pool sizes, limits and timeouts (PgBouncer's names).
    public var pools: PoolSettings

    public init(
        listen: ListenAddress = ListenAddress(host: "127.0.0.1", port: 6432),
        workers: Int = 0,
        poolMode: PoolMode = .session,
        zone: String = "dc1",
        adminUsers: [String] = ["postgres"],
        metricsListen: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 9930),
        authType: AuthType = .scramSHA256,
        maxClientConnections: Int = 1000,
        logLevel: LogLevel = .info,
        pools: PoolSettings = PoolSettings()
    ) {
        self.listen = listen
        self.workers = workers
        self.poolMode = poolMode
        self.zone = zone
        self.adminUsers = adminUsers
        self.metricsListen = metricsListen
        self.authType = authType
        self.maxClientConnections = maxClientConnections
        self.logLevel = logLevel
        self.pools = pools
    }
}

/// The `[proxy]` pool settings. Sizes count server connections per pool, a pool being one
/// (backend, user, database); limits hold for the whole proxy, whatever the number of workers.
/// Times are in seconds; 0 turns a timeout off.
public struct PoolSettings: Sendable, Equatable {
    /// `default_pool_size`: server connections per pool.
    public var defaultPoolSize: Int = 20
    /// `min_pool_size`: connections a pool that has served a client keeps open even when idle
    /// (opened ahead of need, as the pool's user; not for users known only by a SCRAM verifier).
    public var minPoolSize: Int = 0
    /// `reserve_pool_size`: extra connections a pool may open for clients that waited
    /// `reserve_pool_timeout` seconds.
    public var reservePoolSize: Int = 0
    public var reservePoolTimeout: Double = 5
    /// `max_db_connections` / `max_user_connections`: per backend, over all pools of a database
    /// or a user (0: no limit).
    public var maxDBConnections: Int = 0
    public var maxUserConnections: Int = 0
    /// `server_idle_timeout`: an unused pooled connection closes after this long.
    public var serverIdleTimeout: Double = 600
    /// `server_lifetime`: a connection this old closes when it is next released.
    public var serverLifetime: Double = 3600
    /// `server_connect_timeout`: connecting and logging in to a server must not take longer.
    public var serverConnectTimeout: Double = 15
    /// `query_wait_timeout`: how long a client may wait for a connection of a full pool.
    public var queryWaitTimeout: Double = 120
    /// `server_reset_query`: run on a connection before another client gets it ("" for none).
    public var serverResetQuery: String = "DISCARD ALL"
    /// `max_prepared_statements`: the proxy's prepared statements one server connection keeps;
    /// beyond it the least recently used are closed (they are prepared again when next used).
    public var maxPreparedStatements: Int = 200

    public init() {}
}

/// What one pool may hold, after per-user and per-database overrides.
public struct PoolLimits: Sendable, Equatable {
    public var poolSize: Int
    public var minPoolSize: Int = 0
    public var reservePoolSize: Int
    public var maxDBConnections: Int
    public var maxUserConnections: Int
}

/// `[routing]`
public struct RoutingSettings: Sendable, Equatable {
    public var consistency: ConsistencyMode
    public var maxLagMs: Int
    public var maxLagBytes: Int
    public var causalWaitMs: Int
    public var fallback: FallbackMode
    public var reportLSN: Bool

    public init(
        consistency: ConsistencyMode = .session,
        maxLagMs: Int = 1000,
        maxLagBytes: Int = 16_777_216,
        causalWaitMs: Int = 0,
        fallback: FallbackMode = .primary,
        reportLSN: Bool = false
    ) {
        self.consistency = consistency
        self.maxLagMs = maxLagMs
        self.maxLagBytes = maxLagBytes
        self.causalWaitMs = causalWaitMs
        self.fallback = fallback
        self.reportLSN = reportLSN
    }
}

/// `[monitor]`
public struct MonitorConfig: Sendable, Equatable {
    public var intervalMs: Int
    public var user: String
    /// May be empty (then the server must not ask for one, or libpq finds it in ~/.pgpass).
    public var password: String

    public init(intervalMs: Int = 100, user: String = "postgres", password: String = "") {
        self.intervalMs = intervalMs
        self.user = user
        self.password = password
    }
}

/// One `[[backends]]` entry.
public struct BackendConfig: Sendable, Equatable {
    public var name: String
    public var host: String
    public var port: Int
    public var role: DeclaredRole
    public var zone: String
    public var weight: Int

    public init(
        name: String, host: String, port: Int = 5432, role: DeclaredRole = .auto, zone: String = "dc1",
        weight: Int = 1
    ) {
        self.name = name
        self.host = host
        self.port = port
        self.role = role
        self.zone = zone
        self.weight = weight
    }
}

/// One `[[users]]` entry. Exactly one of `password` and `scram` is set.
public struct UserConfig: Sendable, Equatable {
    public var name: String
    /// Plain password: used for client auth and to log in to the servers.
    public var password: String?
    /// A SCRAM-SHA-256 verifier (as stored in pg_authid) instead of the password.
    public var scram: ScramVerifier?
    /// Per-user override of `proxy.auth_type`.
    public var authType: AuthType?
    /// Per-user default of `routing.consistency`.
    public var consistency: ConsistencyMode?
    /// Per-user `pool_size` (overrides `default_pool_size`) and `max_user_connections`.
    public var poolSize: Int?
    public var maxUserConnections: Int?

    public init(name: String, password: String? = nil, scram: ScramVerifier? = nil, authType: AuthType? = nil,
                consistency: ConsistencyMode? = nil, poolSize: Int? = nil, maxUserConnections: Int? = nil) {
        self.name = name
        self.password = password
        self.scram = scram
        self.authType = authType
        self.consistency = consistency
        self.poolSize = poolSize
        self.maxUserConnections = maxUserConnections
    }
}

/// Per-database settings.
public struct DatabaseConfig: Sendable, Equatable {
    public var name: String
    public var consistency: ConsistencyMode?
    /// Per-database `pool_size` (overrides `default_pool_size`; a user's own setting wins) and
    /// `max_db_connections`.
    public var poolSize: Int?
    public var maxDBConnections: Int?

    public init(name: String, consistency: ConsistencyMode? = nil, poolSize: Int? = nil, maxDBConnections: Int? = nil) {
        self.name = name
        self.consistency = consistency
        self.poolSize = poolSize
        self.maxDBConnections = maxDBConnections
    }
}

/// The whole configuration file.
public struct CausewayConfig: Sendable, Equatable {
    public var proxy: ProxySettings
    public var routing: RoutingSettings
    public var monitor: MonitorConfig
    public var backends: [BackendConfig]
    public var users: [UserConfig]
    public var databases: [DatabaseConfig]

    public init(
        proxy: ProxySettings = ProxySettings(),
        routing: RoutingSettings = RoutingSettings(),
        monitor: MonitorConfig = MonitorConfig(),
        backends: [BackendConfig],
        users: [UserConfig] = [],
        databases: [DatabaseConfig] = []
    ) {
        self.proxy = proxy
        self.routing = routing
        self.monitor = monitor
        self.backends = backends
        self.users = users
        self.databases = databases
    }

    /// The limits of the pools of `user` on `database`: the user's pool_size, else the
    /// database's, else default_pool_size; per-user and per-database connection caps likewise.
    public func poolLimits(user: String, database: String) -> PoolLimits {
        let userConfig = users.first { $0.name == user }
        let databaseConfig = databases.first { $0.name == database }
        let pools = proxy.pools
        return PoolLimits(poolSize: userConfig?.poolSize ?? databaseConfig?.poolSize ?? pools.defaultPoolSize,
                          minPoolSize: pools.minPoolSize, reservePoolSize: pools.reservePoolSize,
                          maxDBConnections: databaseConfig?.maxDBConnections ?? pools.maxDBConnections,
                          maxUserConnections: userConfig?.maxUserConnections ?? pools.maxUserConnections)
    }

    /// A session's starting consistency: the user's setting, else the database's, else the
    /// default (startup parameters and SET override it later), as PostgreSQL layers role and
    /// database settings.
    public func consistency(user: String, database: String) -> ConsistencyMode {
        self.user(named: user)?.consistency
            ?? databases.first { $0.name == database }?.consistency
            ?? routing.consistency
    }

    /// The configured user with this name (names are case-sensitive, as in PostgreSQL).
    public func user(named name: String) -> UserConfig? {
        users.first { $0.name == name }
    }

    /// The configured backend with this name.
    public func backend(named name: String) -> BackendConfig? {
        backends.first { $0.name == name }
    }

    /// The user's own `auth_type`, else `proxy.auth_type`.
    public func effectiveAuthType(for user: UserConfig) -> AuthType {
        user.authType ?? proxy.authType
    }
}

/// A problem in a configuration file. Messages never contain a password.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file name as given to `load(path:)` / `parse(_:fileName:)`.
    public var file: String
    /// 1-based line, when the problem has one.
    public var line: Int?
    /// 1-based column, for syntax errors.
    public var column: Int?
    /// Dotted key, e.g. "proxy.pool_mode" or "backends[2].port" (array indexes count from 0).
    public var key: String?
    public var message: String

    public init(file: String, line: Int? = nil, column: Int? = nil, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
    }

    /// `conf/x.toml:12: proxy.pool_mode: must be one of session, transaction (got "sesion")`
    public var description: String {
        var text = file
        if let line {
            text += ":\(line)"
            if let column { text += ":\(column)" }
        }
        text += ": "
        if let key { text += "\(key): " }
        return text + message
    }
}
