import Foundation
import LagMonitor
import Router

// Turns a TOML document into a validated CausewayConfig.
//
// Every problem is reported with the file, the line and the dotted key ("backends[1].port"; array
// indexes count from 0). All problems are collected and the one earliest in the file is thrown, so
// fixing errors top to bottom works. No message ever quotes a password, a verifier, or the text of a
// value that failed to parse as a string: only enum values, addresses and numbers are echoed.

extension CausewayConfig {
    /// Reads and parses the file at `path`. Errors name `path` as given.
    public static func load(path: String) throws(ConfigError) -> CausewayConfig {
        let text = try ConfigLoader.readFile(at: path)
        return try parse(text, fileName: path)
    }

    /// Parses configuration text; `fileName` is used in error messages.
    public static func parse(_ text: String, fileName: String) throws(ConfigError) -> CausewayConfig {
        let root: TOMLTable
        do {
            root = try TOMLReader.parse(text)
        } catch {
            throw ConfigError(
                file: fileName, line: error.line, column: error.column, key: error.key, message: error.message)
        }
        var loader = ConfigLoader(file: fileName)
        return try loader.load(root)
    }
}

struct ConfigLoader {
    let file: String
    private(set) var problems: [ConfigError] = []
    /// Full keys ("backends[0].host") that an unknown key's "did you mean" already points to; a
    /// missing-key error for them would only repeat the typo report.
    private var suggested: Set<String> = []

    init(file: String) {
        self.file = file
    }

    // MARK: Schema

    /// Sections in file order of the documentation; `true` for arrays of tables.
    static let sections: [(name: String, isArray: Bool)] = [
        ("proxy", false), ("routing", false), ("monitor", false), ("backends", true), ("users", true),
        ("databases", true),
    ]

    static let knownKeys: [String: [String]] = [
        "proxy": [
            "listen", "workers", "pool_mode", "zone", "admin_users", "metrics_listen", "auth_type",
            "max_client_conn", "log_level", "default_pool_size", "min_pool_size", "reserve_pool_size", "reserve_pool_timeout",
            "max_db_connections", "max_user_connections", "server_idle_timeout", "server_lifetime",
            "server_connect_timeout", "query_wait_timeout", "server_reset_query", "max_prepared_statements",
        ],
        "routing": ["consistency", "max_lag_ms", "max_lag_bytes", "causal_wait_ms", "fallback", "report_lsn"],
        "monitor": ["interval_ms", "user", "password"],
        "backends": ["name", "host", "port", "role", "zone", "weight"],
        "users": ["name", "password", "scram", "auth_type", "consistency", "pool_size", "max_user_connections"],
        "databases": ["name", "consistency", "pool_size", "max_db_connections"],
    ]

    static func header(of section: String) -> String {
        sections.first { $0.name == section }?.isArray == true ? "[[\(section)]]" : "[\(section)]"
    }

    // MARK: Reading the file

    static func readFile(at path: String) throws(ConfigError) -> String {
        func failure(_ message: String) -> ConfigError {
            ConfigError(file: path, message: "cannot read the configuration file: \(message)")
        }
        let files = FileManager.default
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw failure("no such file")
        }
        guard !isDirectory.boolValue else { throw failure("it is a directory") }
        guard files.isReadableFile(atPath: path) else { throw failure("permission denied") }
        guard let data = files.contents(atPath: path) else { throw failure("reading it failed") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw failure("it is not UTF-8 text")
        }
        return text
    }

    // MARK: Problems

    mutating func report(line: Int?, key: String?, _ message: String) {
        problems.append(ConfigError(file: file, line: line, key: key, message: message))
    }

    /// The earliest problem in the file (problems without a line come last).
    var firstProblem: ConfigError? {
        problems.min { ($0.line ?? .max) < ($1.line ?? .max) }
    }

    // MARK: Whole document

    mutating func load(_ root: TOMLTable) throws(ConfigError) -> CausewayConfig {
        checkTopLevel(root)
        let proxy = readProxy(table(root, "proxy"))
        let routing = readRouting(table(root, "routing"))
        let monitor = readMonitor(table(root, "monitor"))
        let backends = readBackends(root, proxy: proxy)
        let users = readUsers(root, proxy: proxy, authTypeLine: table(root, "proxy")?["auth_type"]?.line)
        let databases = readDatabases(root)
        if let problem = firstProblem { throw problem }
        return CausewayConfig(proxy: proxy, routing: routing, monitor: monitor, backends: backends, users: users,
                              databases: databases)
    }

    mutating func checkTopLevel(_ root: TOMLTable) {
        for key in root.keys {
            guard let value = root[key] else { continue }
            if let section = Self.sections.first(where: { $0.name == key }) {
                switch (value.kind, section.isArray) {
                case (.table, false), (.tableArray, true):
                    break
                case (.table, true):
                    report(line: value.line, key: key, "write [[\(key)]] (one per entry), not [\(key)]")
                case (.tableArray, false):
                    report(line: value.line, key: key, "write [\(key)], not [[\(key)]] (there is one \(key) section)")
                default:
                    report(
                        line: value.line, key: key,
                        "must be a \(section.isArray ? "list of [[\(key)]] tables" : "[\(key)] table") (got \(value.typeDescription))"
                    )
                }
                continue
            }
            switch value.kind {
            case .table, .tableArray:
                var message = "unknown table"
                let names = Self.sections.map(\.name)
                if let near = Self.closest(to: key, among: names) {
                    message += "; did you mean \(Self.header(of: near))?"
                } else {
                    message += " (known tables: \(Self.sections.map { Self.header(of: $0.name) }.joined(separator: " ")))"
                }
                report(line: value.line, key: key, message)
            default:
                var message = "key outside any table"
                if let home = Self.sectionsContaining(key).first {
                    message += "; \(key) belongs under \(Self.header(of: home))"
                } else if let near = Self.closestAnywhere(to: key) {
                    message += "; did you mean \(near.key) under \(Self.header(of: near.section))?"
                }
                report(line: value.line, key: key, message)
            }
        }
    }

    /// The table `name` if it is one (any other shape was reported by `checkTopLevel`).
    func table(_ root: TOMLTable, _ name: String) -> TOMLTable? {
        guard let value = root[name], case .table(let table) = value.kind else { return nil }
        return table
    }

    func tables(_ root: TOMLTable, _ name: String) -> [TOMLTable] {
        guard let value = root[name], case .tableArray(let tables) = value.kind else { return [] }
        return tables
    }

    /// Reports keys of `table` that `section` doesn't know, suggesting the closest known key.
    mutating func checkKeys(of table: TOMLTable, section: String) {
        let known = Self.knownKeys[section] ?? []
        for key in table.keys where !known.contains(key) {
            guard let value = table[key] else { continue }
            let isTable: Bool
            switch value.kind {
            case .table, .tableArray: isTable = true
            default: isTable = false
            }
            var message = isTable ? "unknown table" : "unknown key"
            let near = Self.suggestions(for: key, among: known)
            if !near.isEmpty {
                message += "; did you mean \(near.joined(separator: " or "))?"
                for candidate in near { suggested.insert(table.path(of: candidate)) }
            } else if let home = Self.sectionsContaining(key).first {
                message += "; \(key) belongs under \(Self.header(of: home))"
            } else {
                message += " (known keys: \(known.joined(separator: ", ")))"
            }
            report(line: value.line, key: table.path(of: key), message)
        }
    }

    // MARK: Sections

    mutating func readProxy(_ t: TOMLTable?) -> ProxySettings {
        if let t { checkKeys(of: t, section: "proxy") }
        let d = ProxySettings()
        var s = d
        s.listen = address(t, "listen", default: d.listen, allowEmpty: false) ?? d.listen
        s.workers = integer(t, "workers", default: d.workers, in: 0...1024, "must be between 0 (one per core) and 1024")
        s.poolMode = choice(t, "pool_mode", default: d.poolMode)
        s.zone = text(t, "zone", default: d.zone)
        s.adminUsers = textList(t, "admin_users", default: d.adminUsers)
        s.metricsListen = address(t, "metrics_listen", default: d.metricsListen, allowEmpty: true)
        s.authType = choice(t, "auth_type", default: d.authType)
        s.maxClientConnections = integer(
            t, "max_client_conn", default: d.maxClientConnections, in: 1...Int.max, "must be at least 1")
        s.logLevel = choice(t, "log_level", default: d.logLevel)
        s.pools = readPools(t)
        if let t, let metrics = s.metricsListen, metrics == s.listen, let line = t["metrics_listen"]?.line {
            report(line: line, key: "proxy.metrics_listen", "must differ from proxy.listen (both are \(metrics))")
        }
        return s
    }

    mutating func readPools(_ t: TOMLTable?) -> PoolSettings {
        let d = PoolSettings()
        var s = d
        s.defaultPoolSize = integer(t, "default_pool_size", default: d.defaultPoolSize, in: 1...100_000, "must be at least 1")
        s.minPoolSize = integer(t, "min_pool_size", default: d.minPoolSize, in: 0...100_000, "must be 0 (none) or more")
        s.reservePoolSize = integer(t, "reserve_pool_size", default: d.reservePoolSize, in: 0...100_000, "must be 0 or more")
        s.reservePoolTimeout = seconds(t, "reserve_pool_timeout", default: d.reservePoolTimeout)
        s.maxDBConnections = integer(t, "max_db_connections", default: d.maxDBConnections, in: 0...Int.max,
                                     "must be 0 (no limit) or more")
        s.maxUserConnections = integer(t, "max_user_connections", default: d.maxUserConnections, in: 0...Int.max,
                                       "must be 0 (no limit) or more")
        s.serverIdleTimeout = seconds(t, "server_idle_timeout", default: d.serverIdleTimeout)
        s.serverLifetime = seconds(t, "server_lifetime", default: d.serverLifetime)
        s.serverConnectTimeout = seconds(t, "server_connect_timeout", default: d.serverConnectTimeout)
        s.queryWaitTimeout = seconds(t, "query_wait_timeout", default: d.queryWaitTimeout)
        s.serverResetQuery = optionalString(t, "server_reset_query")?.value ?? d.serverResetQuery
        s.maxPreparedStatements = integer(t, "max_prepared_statements", default: d.maxPreparedStatements, in: 1...100_000,
                                          "must be between 1 and 100000")
        return s
    }

    /// A duration in whole seconds, 0 or more.
    mutating func seconds(_ t: TOMLTable?, _ key: String, default value: Double) -> Double {
        Double(integer(t, key, default: Int(value), in: 0...Int(Int32.max), "must be 0 (off) or a number of seconds"))
    }

    /// An integer that is absent unless set.
    mutating func optionalInteger(_ t: TOMLTable, _ key: String, in range: ClosedRange<Int>, _ rule: String) -> Int? {
        guard t[key] != nil else { return nil }
        return integer(t, key, default: range.lowerBound, in: range, rule)
    }

    mutating func readRouting(_ t: TOMLTable?) -> RoutingSettings {
        if let t { checkKeys(of: t, section: "routing") }
        let d = RoutingSettings()
        var s = d
        s.consistency = choice(t, "consistency", default: d.consistency)
        s.maxLagMs = integer(t, "max_lag_ms", default: d.maxLagMs, in: 0...Int.max, "must be 0 or more")
        s.maxLagBytes = integer(t, "max_lag_bytes", default: d.maxLagBytes, in: 0...Int.max, "must be 0 or more")
        s.causalWaitMs = integer(t, "causal_wait_ms", default: d.causalWaitMs, in: 0...Int.max, "must be 0 or more")
        s.fallback = choice(t, "fallback", default: d.fallback)
        s.reportLSN = boolean(t, "report_lsn", default: d.reportLSN)
        return s
    }

    mutating func readMonitor(_ t: TOMLTable?) -> MonitorConfig {
        if let t { checkKeys(of: t, section: "monitor") }
        let d = MonitorConfig()
        var s = d
        s.intervalMs = integer(t, "interval_ms", default: d.intervalMs, in: 1...Int.max, "must be greater than 0")
        s.user = text(t, "user", default: d.user)
        s.password = optionalString(t, "password")?.value ?? d.password
        return s
    }

    mutating func readBackends(_ root: TOMLTable, proxy: ProxySettings) -> [BackendConfig] {
        let entries = tables(root, "backends")
        if entries.isEmpty, root["backends"] == nil {
            report(line: nil, key: "backends", "at least one [[backends]] table is required")
        }
        var backends: [BackendConfig] = []
        var firstLineOfName: [String: Int] = [:]
        var primary: (path: String, line: Int)?
        for t in entries {
            checkKeys(of: t, section: "backends")
            let name = required(t, "name", what: "every backend needs a name")
            if let name, let bad = name.value.unicodeScalars.first(where: { !Self.isNameCharacter($0) }) {
                report(
                    line: name.line, key: t.path(of: "name"),
                    "\"\(name.value)\" contains \"\(bad)\"; backend names may use letters, digits, _ - and .")
            }
            if let name {
                if let first = firstLineOfName[name.value] {
                    report(
                        line: name.line, key: t.path(of: "name"),
                        "duplicate backend name \"\(name.value)\" (first used on line \(first))")
                } else {
                    firstLineOfName[name.value] = name.line
                }
            }
            let host = required(t, "host", what: "every backend needs a host")
            let backend = BackendConfig(
                name: name?.value ?? "",
                host: host?.value ?? "",
                port: integer(t, "port", default: 5432, in: 1...65535, "must be between 1 and 65535"),
                role: choice(t, "role", default: .auto),
                zone: text(t, "zone", default: proxy.zone),
                weight: integer(t, "weight", default: 1, in: 0...Int.max, "must be 0 or more"))
            if backend.role == .primary, let line = t["role"]?.line {
                if let primary {
                    report(
                        line: line, key: t.path(of: "role"),
                        "only one backend may have role \"primary\" (\(primary.path) on line \(primary.line) already does);"
                            + " use \"auto\" to follow failovers"
                    )
                } else {
                    primary = (t.path, line)
                }
            }
            backends.append(backend)
        }
        return backends
    }

    mutating func readUsers(_ root: TOMLTable, proxy: ProxySettings, authTypeLine: Int?) -> [UserConfig] {
        let entries = tables(root, "users")
        if entries.isEmpty, root["users"] == nil, proxy.authType != .trust {
            report(
                line: authTypeLine, key: authTypeLine == nil ? "users" : "proxy.auth_type",
                "at least one [[users]] table is required when proxy.auth_type is \"\(proxy.authType.rawValue)\""
                    + " (only \"trust\" works without users)"
            )
        }
        var users: [UserConfig] = []
        var firstLineOfName: [String: Int] = [:]
        for t in entries {
            checkKeys(of: t, section: "users")
            let name = required(t, "name", what: "every user needs a name")
            if let name {
                if let first = firstLineOfName[name.value] {
                    report(
                        line: name.line, key: t.path(of: "name"),
                        "duplicate user name \"\(name.value)\" (first used on line \(first))")
                } else {
                    firstLineOfName[name.value] = name.line
                }
            }
            let password = optionalString(t, "password")
            let scramText = optionalString(t, "scram")
            let authType = optionalChoice(t, "auth_type", AuthType.self)
            let consistency = optionalChoice(t, "consistency", ConsistencyMode.self)
            var user = UserConfig(name: name?.value ?? "", authType: authType?.value, consistency: consistency?.value,
                                  poolSize: optionalInteger(t, "pool_size", in: 1...100_000, "must be at least 1"),
                                  maxUserConnections: optionalInteger(t, "max_user_connections", in: 0...Int.max,
                                                                      "must be 0 (no limit) or more"))
            let effective = authType?.value ?? proxy.authType
            let display = name.map { "user \"\($0.value)\"" } ?? "this user"

            switch (password, scramText) {
            case (nil, nil):
                // Only complain if neither key is present at all (a wrong type was already reported).
                if t["password"] == nil, t["scram"] == nil {
                    report(line: t.line, key: t.path, "set password or scram (\(display) has neither)")
                }
            case (let password?, let scram?):
                let later = password.line >= scram.line ? "password" : "scram"
                report(
                    line: max(password.line, scram.line), key: t.path(of: later),
                    "set either password or scram, not both")
            case (let password?, nil):
                user.password = password.value
                if password.value.isEmpty, effective != .trust {
                    report(
                        line: password.line, key: t.path(of: "password"),
                        "must not be empty (\(effective.rawValue) authentication needs a password)")
                }
            case (nil, let scram?):
                switch ScramVerifier.parse(scram.value) {
                case .success(let verifier):
                    user.scram = verifier
                    if effective == .md5 {
                        if let authType, authType.value == .md5 {
                            report(
                                line: authType.line, key: t.path(of: "auth_type"),
                                "md5 needs the plain password, but \(display) has only a scram verifier;"
                                    + " set password instead of scram, or use \"scram-sha-256\""
                            )
                        } else {
                            report(
                                line: scram.line, key: t.path(of: "scram"),
                                "proxy.auth_type is md5, which needs the plain password; set password instead of scram,"
                                    + " or set auth_type = \"scram-sha-256\" for \(display)"
                            )
                        }
                    }
                case .failure(let problem):
                    report(
                        line: scram.line, key: t.path(of: "scram"),
                        "not a valid SCRAM-SHA-256 verifier (\(problem.reason)); expected"
                            + " SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as in pg_authid"
                    )
                }
            }
            users.append(user)
        }
        return users
    }

    mutating func readDatabases(_ root: TOMLTable) -> [DatabaseConfig] {
        var databases: [DatabaseConfig] = []
        var firstLineOfName: [String: Int] = [:]
        for t in tables(root, "databases") {
            checkKeys(of: t, section: "databases")
            let name = required(t, "name", what: "every [[databases]] entry needs a name")
            if let name {
                if let first = firstLineOfName[name.value] {
                    report(line: name.line, key: t.path(of: "name"),
                           "duplicate database name \"\(name.value)\" (first used on line \(first))")
                } else {
                    firstLineOfName[name.value] = name.line
                }
            }
            let consistency = optionalChoice(t, "consistency", ConsistencyMode.self)
            databases.append(DatabaseConfig(name: name?.value ?? "", consistency: consistency?.value,
                                            poolSize: optionalInteger(t, "pool_size", in: 1...100_000, "must be at least 1"),
                                            maxDBConnections: optionalInteger(t, "max_db_connections", in: 0...Int.max,
                                                                              "must be 0 (no limit) or more")))
        }
        return databases
    }

    static func isNameCharacter(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "a"..."z", "A"..."Z", "0"..."9", "_", "-", ".": true
        default: false
        }
    }

    // MARK: Typed values

    struct Located<Value> {
        var value: Value
        var line: Int
    }

    mutating func typeMismatch(_ t: TOMLTable, _ key: String, _ value: TOMLValue, expected: String) {
        var message = "expected \(expected) (got \(value.typeDescription))"
        if case .string(let s) = value.kind {
            // Only integer and boolean keys get here with a string, and those are never secrets.
            if expected == "an integer", Int(s.filter { $0 != "_" }) != nil {
                message += "; write the number without quotes"
            } else if expected == "a boolean", s == "true" || s == "false" {
                message += "; write \(s) without quotes"
            }
        } else if expected == "a string", case .integer = value.kind {
            message += "; put the value in quotes"
        } else if expected == "a string", case .boolean = value.kind {
            message += "; put the value in quotes"
        }
        report(line: value.line, key: t.path(of: key), message)
    }

    /// A string value, or nil when absent or of the wrong type (reported).
    mutating func optionalString(_ t: TOMLTable?, _ key: String) -> Located<String>? {
        guard let t, let value = t[key] else { return nil }
        guard case .string(let s) = value.kind else {
            typeMismatch(t, key, value, expected: "a string")
            return nil
        }
        return Located(value: s, line: value.line)
    }

    /// A non-empty string that must be present.
    mutating func required(_ t: TOMLTable, _ key: String, what: String) -> Located<String>? {
        guard t[key] != nil else {
            if suggested.contains(t.path(of: key)) { return nil }
            report(line: t.line, key: t.path(of: key), "missing (\(what))")
            return nil
        }
        guard let s = optionalString(t, key) else { return nil }
        guard !s.value.isEmpty else {
            report(line: s.line, key: t.path(of: key), "must not be empty")
            return nil
        }
        return s
    }

    /// A non-empty string with a default.
    mutating func text(_ t: TOMLTable?, _ key: String, default value: String) -> String {
        guard let t, let s = optionalString(t, key) else { return value }
        guard !s.value.isEmpty else {
            report(line: s.line, key: t.path(of: key), "must not be empty")
            return value
        }
        return s.value
    }

    /// An array of non-empty strings with a default.
    mutating func textList(_ t: TOMLTable?, _ key: String, default value: [String]) -> [String] {
        guard let t, let v = t[key] else { return value }
        guard case .array(let elements) = v.kind else {
            typeMismatch(t, key, v, expected: "an array of strings")
            return value
        }
        var result: [String] = []
        for (i, element) in elements.enumerated() {
            let elementKey = "\(t.path(of: key))[\(i)]"
            guard case .string(let s) = element.kind else {
                report(line: element.line, key: elementKey, "expected a string (got \(element.typeDescription))")
                continue
            }
            guard !s.isEmpty else {
                report(line: element.line, key: elementKey, "must not be empty")
                continue
            }
            result.append(s)
        }
        return result
    }

    mutating func integer(
        _ t: TOMLTable?, _ key: String, default value: Int, in range: ClosedRange<Int>, _ rule: String
    ) -> Int {
        guard let t, let v = t[key] else { return value }
        guard case .integer(let n) = v.kind else {
            typeMismatch(t, key, v, expected: "an integer")
            return value
        }
        guard range.contains(n) else {
            report(line: v.line, key: t.path(of: key), "\(rule) (got \(n))")
            return value
        }
        return n
    }

    mutating func boolean(_ t: TOMLTable?, _ key: String, default value: Bool) -> Bool {
        guard let t, let v = t[key] else { return value }
        guard case .boolean(let b) = v.kind else {
            typeMismatch(t, key, v, expected: "a boolean")
            return value
        }
        return b
    }

    mutating func optionalChoice<E: RawRepresentable & CaseIterable>(
        _ t: TOMLTable?, _ key: String, _ type: E.Type
    ) -> Located<E>? where E.RawValue == String {
        guard let t, let v = t[key] else { return nil }
        let allowed = E.allCases.map(\.rawValue).joined(separator: ", ")
        guard case .string(let s) = v.kind else {
            typeMismatch(t, key, v, expected: "one of \(allowed) in quotes")
            return nil
        }
        guard let e = E(rawValue: s) else {
            report(line: v.line, key: t.path(of: key), "must be one of \(allowed) (got \"\(s)\")")
            return nil
        }
        return Located(value: e, line: v.line)
    }

    mutating func choice<E: RawRepresentable & CaseIterable>(
        _ t: TOMLTable?, _ key: String, default value: E
    ) -> E where E.RawValue == String {
        optionalChoice(t, key, E.self)?.value ?? value
    }

    /// "host:port"; with `allowEmpty`, "" means nil (disabled).
    mutating func address(
        _ t: TOMLTable?, _ key: String, default value: ListenAddress?, allowEmpty: Bool
    ) -> ListenAddress? {
        guard let t, let s = optionalString(t, key) else { return value }
        if s.value.isEmpty {
            if allowEmpty { return nil }
            report(line: s.line, key: t.path(of: key), "must not be empty; expected \"host:port\"")
            return value
        }
        switch ListenAddress.parse(s.value) {
        case .success(let address):
            return address
        case .failure(let problem):
            report(
                line: s.line, key: t.path(of: key),
                "expected \"host:port\" or \"[ipv6]:port\": \(problem.reason) (got \"\(s.value)\")")
            return value
        }
    }

    // MARK: Suggestions

    static func sectionsContaining(_ key: String) -> [String] {
        sections.map(\.name).filter { knownKeys[$0]?.contains(key) == true }
    }

    /// The closest key of any section, for a key written outside every table.
    static func closestAnywhere(to word: String) -> (section: String, key: String)? {
        var best: (section: String, key: String, distance: Int)?
        for section in sections.map(\.name) {
            for key in knownKeys[section] ?? [] {
                let d = distance(normalized(word), key)
                if d <= threshold(for: word), d < (best?.distance ?? .max) {
                    best = (section, key, d)
                }
            }
        }
        return best.map { ($0.section, $0.key) }
    }

    /// The candidate nearest to `word` when it is near enough to be a likely typo.
    static func closest(to word: String, among candidates: [String]) -> String? {
        var best: (key: String, distance: Int)?
        for candidate in candidates {
            let d = distance(normalized(word), candidate)
            if d < (best?.distance ?? .max) { best = (candidate, d) }
        }
        guard let best, best.distance <= threshold(for: word) else { return nil }
        return best.key
    }

    /// The likely typo fix for `word`, else the known keys it abbreviates ("max_lag" → max_lag_ms,
    /// max_lag_bytes); empty when nothing is close.
    static func suggestions(for word: String, among candidates: [String]) -> [String] {
        if let near = closest(to: word, among: candidates) { return [near] }
        let stem = normalized(word)
        guard stem.count >= 4 else { return [] }
        return candidates.filter { $0.hasPrefix(stem) }
    }

    static func threshold(for word: String) -> Int { max(1, min(3, word.count / 3)) }

    /// Lowercased, with "-" read as "_" (so `pool-mode` suggests `pool_mode`).
    static func normalized(_ word: String) -> String {
        String(word.lowercased().map { $0 == "-" ? "_" : $0 })
    }

    /// Edit distance counting insertions, deletions, substitutions and adjacent transpositions.
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a)
        let y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var previous2 = [Int](repeating: 0, count: y.count + 1)
        var previous = Array(0...y.count)
        var row = [Int](repeating: 0, count: y.count + 1)
        for i in 1...x.count {
            row[0] = i
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    row[j] = min(row[j], previous2[j - 2] + 1)
                }
            }
            (previous2, previous, row) = (previous, row, previous2)
        }
        return previous[y.count]
    }
}
