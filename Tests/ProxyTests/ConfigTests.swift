import Foundation
import Testing

@testable import Proxy

// Tests for Sources/Proxy/Config: the TOML subset reader, the configuration model and its validation.

// MARK: - Helpers

private let fileName = "conf/x.toml"

/// One backend and one user: the smallest valid file under the default auth_type.
private let minimalTail = """
    [[backends]]
    name = "pg1"
    host = "127.0.0.1"

    [[users]]
    name = "app"
    password = "secret"
    """

private func parse(_ text: String) throws(ConfigError) -> CausewayConfig {
    try CausewayConfig.parse(text, fileName: fileName)
}

/// The error `text` produces, or nil when it parses.
private func failure(_ text: String) -> ConfigError? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error
    }
}

private func tomlFailure(_ text: String) -> TOMLError? {
    do {
        _ = try TOMLReader.parse(text)
        return nil
    } catch {
        return error
    }
}

private func verifierText(iterations: Int = 4096, saltBytes: Int = 16, storedBytes: Int = 32, serverBytes: Int = 32)
    -> String
{
    let salt = Data(repeating: 7, count: saltBytes).base64EncodedString()
    let stored = Data(repeating: 1, count: storedBytes).base64EncodedString()
    let server = Data(repeating: 2, count: serverBytes).base64EncodedString()
    return "SCRAM-SHA-256$\(iterations):\(salt)$\(stored):\(server)"
}

/// conf/ in the repository, found from this file's path (Tests/ProxyTests/ConfigTests.swift).
private func repositoryFile(_ relative: String, from filePath: String = #filePath) -> String {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(relative).path
}

// MARK: - The example file and defaults

@Test func exampleConfigFileParsesAndSetsEveryOption() throws {
    let config = try CausewayConfig.load(path: repositoryFile("conf/causeway.toml"))
    #expect(config.proxy.listen == ListenAddress(host: "127.0.0.1", port: 6432))
    #expect(config.proxy.workers == 0)
    #expect(config.proxy.poolMode == .session)
    #expect(config.proxy.zone == "dc1")
    #expect(config.proxy.adminUsers == ["postgres"])
    #expect(config.proxy.metricsListen == ListenAddress(host: "127.0.0.1", port: 9930))
    #expect(config.proxy.authType == .scramSHA256)
    #expect(config.proxy.maxClientConnections == 1000)
    #expect(config.proxy.logLevel == .info)
    #expect(config.routing == RoutingSettings())
    #expect(config.monitor == MonitorConfig())
    #expect(config.backends.map(\.name) == ["primary", "replica1"])
    #expect(config.backends[1].role == .replica)
    #expect(config.backends[1].port == 5433)
    #expect(config.users.map(\.name) == ["app", "app_scram"])
    #expect(config.users[0].password == "secret")
    #expect(config.users[0].authType == .scramSHA256)
    #expect(config.users[1].password == nil)
    #expect(config.users[1].scram?.iterations == 4096)
    #expect(config.users[1].scram?.salt == Array(1...16))
}

@Test func exampleConfigFileMentionsEveryKnownKey() throws {
    let text = try String(contentsOfFile: repositoryFile("conf/causeway.toml"), encoding: .utf8)
    let root = try TOMLReader.parse(text)
    for (section, keys) in ConfigLoader.knownKeys {
        guard let value = root[section] else {
            Issue.record("conf/causeway.toml lacks [\(section)]")
            continue
        }
        let tables: [TOMLTable]
        switch value.kind {
        case .table(let table): tables = [table]
        case .tableArray(let all): tables = all
        default: tables = []
        }
        for key in keys {
            #expect(tables.contains { $0[key] != nil }, "conf/causeway.toml lacks \(section).\(key)")
        }
    }
}

@Test func omittedTablesAndKeysTakeTheDocumentedDefaults() throws {
    let config = try parse(minimalTail)
    #expect(config.proxy == ProxySettings())
    #expect(config.proxy.listen.description == "127.0.0.1:6432")
    #expect(config.proxy.metricsListen?.description == "127.0.0.1:9930")
    #expect(config.proxy.authType == .scramSHA256)
    #expect(config.routing.consistency == .session)
    #expect(config.routing.maxLagMs == 1000)
    #expect(config.routing.maxLagBytes == 16_777_216)
    #expect(config.routing.causalWaitMs == 0)
    #expect(config.routing.fallback == .primary)
    #expect(config.routing.reportLSN == false)
    #expect(config.monitor.intervalMs == 100)
    #expect(config.monitor.user == "postgres")
    #expect(config.monitor.password == "")
    #expect(config.backends == [BackendConfig(name: "pg1", host: "127.0.0.1")])
    #expect(config.backends[0].port == 5432)
    #expect(config.backends[0].role == .auto)
    #expect(config.backends[0].weight == 1)
    #expect(config.users == [UserConfig(name: "app", password: "secret")])
}

@Test func backendZoneDefaultsToTheProxyZone() throws {
    let config = try parse(
        """
        [proxy]
        zone = "eu-west"
        auth_type = "trust"

        [[backends]]
        name = "a"
        host = "h1"

        [[backends]]
        name = "b"
        host = "h2"
        zone = "us-east"
        """)
    #expect(config.backends.map(\.zone) == ["eu-west", "us-east"])
}

@Test func everyValueIsReadIntoTheModel() throws {
    var pools = PoolSettings()
    pools.defaultPoolSize = 7
    pools.reservePoolSize = 2
    pools.reservePoolTimeout = 3
    pools.maxDBConnections = 40
    pools.maxUserConnections = 30
    pools.serverIdleTimeout = 60
    pools.serverLifetime = 0
    pools.serverConnectTimeout = 4
    pools.queryWaitTimeout = 9
    pools.serverResetQuery = ""
    let config = try parse(
        """
        [proxy]
        listen = "[::1]:7000"
        workers = 4
        pool_mode = "session"
        zone = "z2"
        admin_users = ["root", "ops"]
        metrics_listen = ""
        auth_type = "md5"
        max_client_conn = 50
        log_level = "debug"
        default_pool_size = 7
        reserve_pool_size = 2
        reserve_pool_timeout = 3
        max_db_connections = 40
        max_user_connections = 30
        server_idle_timeout = 60
        server_lifetime = 0
        server_connect_timeout = 4
        query_wait_timeout = 9
        server_reset_query = ""

        [routing]
        consistency = "strong"
        max_lag_ms = 250
        max_lag_bytes = 1_000
        causal_wait_ms = 30
        fallback = "error"
        report_lsn = true

        [monitor]
        interval_ms = 20
        user = "mon"
        password = "pw"

        [[backends]]
        name = "p"
        host = "db1.internal"
        port = 6543
        role = "primary"
        zone = "z1"
        weight = 0

        [[users]]
        name = "app"
        password = "secret"
        auth_type = "trust"
        """)
    #expect(
        config.proxy
            == ProxySettings(
                listen: ListenAddress(host: "::1", port: 7000), workers: 4, poolMode: .session, zone: "z2",
                adminUsers: ["root", "ops"], metricsListen: nil, authType: .md5, maxClientConnections: 50,
                logLevel: .debug, pools: pools))
    #expect(
        config.routing
            == RoutingSettings(
                consistency: .strong, maxLagMs: 250, maxLagBytes: 1000, causalWaitMs: 30, fallback: .error,
                reportLSN: true))
    #expect(config.monitor == MonitorConfig(intervalMs: 20, user: "mon", password: "pw"))
    #expect(
        config.backends == [
            BackendConfig(name: "p", host: "db1.internal", port: 6543, role: .primary, zone: "z1", weight: 0)
        ])
    #expect(config.users == [UserConfig(name: "app", password: "secret", authType: .trust)])
}

@Test func usersMayBeOmittedOnlyWithTrust() throws {
    let backendOnly = """
        [[backends]]
        name = "pg1"
        host = "127.0.0.1"
        """
    let trusted = try parse("[proxy]\nauth_type = \"trust\"\n" + backendOnly)
    #expect(trusted.users.isEmpty)

    let e = try #require(failure(backendOnly))
    #expect(e.key == "users")
    #expect(e.line == nil)
    #expect(e.message.contains("at least one [[users]]"))

    let md5 = try #require(failure("[proxy]\nauth_type = \"md5\"\n" + backendOnly))
    #expect(md5.line == 2)
    #expect(md5.key == "proxy.auth_type")
}

@Test func atLeastOneBackendIsRequired() throws {
    let e = try #require(failure("[proxy]\nauth_type = \"trust\"\n"))
    #expect(e.key == "backends")
    #expect(e.description == "conf/x.toml: backends: at least one [[backends]] table is required")
}

// MARK: - Lookups and small types

@Test func userNamedFindsTheConfiguredUser() throws {
    let config = try parse(minimalTail)
    #expect(config.user(named: "app")?.password == "secret")
    #expect(config.user(named: "App") == nil)
    #expect(config.user(named: "nobody") == nil)
}

@Test func effectiveAuthTypeFallsBackToTheProxySetting() throws {
    let config = try parse(
        """
        [proxy]
        auth_type = "md5"

        [[backends]]
        name = "pg1"
        host = "h"

        [[users]]
        name = "a"
        password = "x"

        [[users]]
        name = "b"
        password = "y"
        auth_type = "scram-sha-256"
        """)
    #expect(config.effectiveAuthType(for: config.users[0]) == .md5)
    #expect(config.effectiveAuthType(for: config.users[1]) == .scramSHA256)
}

@Test func logLevelIsOrderedBySeverity() {
    #expect(LogLevel.debug < .info)
    #expect(LogLevel.info < .warn)
    #expect(LogLevel.warn < .error)
    #expect(!(LogLevel.error < .debug))
    #expect(LogLevel.allCases.sorted() == [.debug, .info, .warn, .error])
}

@Test func listenAddressParsesHostPortAndBracketedIPv6() {
    #expect(ListenAddress(parsing: "127.0.0.1:6432") == ListenAddress(host: "127.0.0.1", port: 6432))
    #expect(ListenAddress(parsing: "localhost:1") == ListenAddress(host: "localhost", port: 1))
    #expect(ListenAddress(parsing: "[::1]:6432") == ListenAddress(host: "::1", port: 6432))
    #expect(ListenAddress(parsing: "[::]:65535") == ListenAddress(host: "::", port: 65535))
    #expect(ListenAddress(host: "::1", port: 6432).description == "[::1]:6432")
    #expect(ListenAddress(host: "0.0.0.0", port: 80).description == "0.0.0.0:80")
    for bad in ["", "6432", "host:", ":6432", "::1:6432", "[::1]6432", "[::1:6432", "h:0", "h:65536", "h:-1", "h:12a",
        "a b:1"]
    {
        #expect(ListenAddress(parsing: bad) == nil, "\(bad) should not parse")
    }
}

@Test func malformedListenAddressIsRejectedWithItsLine() throws {
    let e = try #require(failure("[proxy]\nzone = \"a\"\nlisten = \"::1:6432\"\n" + minimalTail))
    #expect(e.line == 3)
    #expect(e.key == "proxy.listen")
    #expect(e.message.contains("brackets"))
    #expect(e.message.contains("(got \"::1:6432\")"))

    let port = try #require(failure("[proxy]\nlisten = \"127.0.0.1:70000\"\n" + minimalTail))
    #expect(port.message.contains("between 1 and 65535"))
    let empty = try #require(failure("[proxy]\nlisten = \"\"\n" + minimalTail))
    #expect(empty.key == "proxy.listen")
}

@Test func emptyMetricsListenDisablesMetrics() throws {
    let config = try parse("[proxy]\nmetrics_listen = \"\"\n" + minimalTail)
    #expect(config.proxy.metricsListen == nil)
}

@Test func metricsListenMustDifferFromListen() throws {
    let e = try #require(
        failure("[proxy]\nlisten = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n" + minimalTail))
    #expect(e.line == 3)
    #expect(e.key == "proxy.metrics_listen")
}

// MARK: - Unknown tables and keys

@Test func unknownKeyIsRejectedWithItsLine() throws {
    let e = try #require(failure("[proxy]\nlisten = \"127.0.0.1:6432\"\ncolour = \"blue\"\n" + minimalTail))
    #expect(e.line == 3)
    #expect(e.key == "proxy.colour")
    #expect(e.message.hasPrefix("unknown key"))
    #expect(e.message.contains("known keys: listen, workers"))
}

@Test func unknownKeySuggestsTheClosestKnownKey() throws {
    let typo = try #require(failure("[proxy]\npool_mod = \"session\"\n" + minimalTail))
    #expect(typo.description == "conf/x.toml:2: proxy.pool_mod: unknown key; did you mean pool_mode?")

    let dashes = try #require(failure("[routing]\nmax-lag-ms = 5\n" + minimalTail))
    #expect(dashes.message.contains("did you mean max_lag_ms?"))

    let abbreviated = try #require(failure("[routing]\nmax_lag = 5\n" + minimalTail))
    #expect(abbreviated.message == "unknown key; did you mean max_lag_ms or max_lag_bytes?")

    let swapped = try #require(failure(minimalTail.replacingOccurrences(of: "host =", with: "hsot =")))
    #expect(swapped.key == "backends[0].hsot")
    #expect(swapped.message.contains("did you mean host?"))
}

@Test func keyInTheWrongTableNamesTheRightTable() throws {
    let e = try #require(failure("[routing]\nlog_level = \"debug\"\n" + minimalTail))
    #expect(e.key == "routing.log_level")
    #expect(e.message.contains("belongs under [proxy]"))

    let outside = try #require(failure("listen = \"127.0.0.1:1\"\n" + minimalTail))
    #expect(outside.line == 1)
    #expect(outside.key == "listen")
    #expect(outside.message.contains("outside any table"))
    #expect(outside.message.contains("belongs under [proxy]"))
}

@Test func unknownTableIsRejectedWithASuggestion() throws {
    let e = try #require(failure("[proxyy]\nlisten = \"127.0.0.1:1\"\n" + minimalTail))
    #expect(e.line == 1)
    #expect(e.key == "proxyy")
    #expect(e.message == "unknown table; did you mean [proxy]?")

    let array = try #require(failure("[[backend]]\nname = \"x\"\n" + minimalTail))
    #expect(array.message.contains("did you mean [[backends]]?"))

    let far = try #require(failure("[tls]\n" + minimalTail))
    #expect(far.message.contains("known tables: [proxy] [routing] [monitor] [[backends]] [[users]]"))

    let nested = try #require(failure("[proxy.extra]\nx = 1\n" + minimalTail))
    #expect(nested.key == "proxy.extra")
    #expect(nested.message.hasPrefix("unknown table"))
}

@Test func tableWrittenWithTheWrongBracketsIsRejected() throws {
    let single = try #require(failure("[backends]\nname = \"x\"\nhost = \"h\"\n"))
    #expect(single.line == 1)
    #expect(single.message.contains("write [[backends]]"))

    let double = try #require(failure("[[proxy]]\nzone = \"a\"\n" + minimalTail))
    #expect(double.message.contains("write [proxy], not [[proxy]]"))

    let scalar = try #require(failure("routing = 1\n" + minimalTail))
    #expect(scalar.key == "routing")
    #expect(scalar.message.contains("must be a [routing] table"))
}

// MARK: - Types and values

@Test func wrongTypeNamesTheExpectedAndActualType() throws {
    let e = try #require(failure("[proxy]\nworkers = true\n" + minimalTail))
    #expect(e.description == "conf/x.toml:2: proxy.workers: expected an integer (got a boolean)")

    let list = try #require(failure("[proxy]\nadmin_users = \"postgres\"\n" + minimalTail))
    #expect(list.message == "expected an array of strings (got a string)")

    let element = try #require(failure("[proxy]\nadmin_users = [\n  \"a\",\n  2,\n]\n" + minimalTail))
    #expect(element.line == 4)
    #expect(element.key == "proxy.admin_users[1]")

    let flag = try #require(failure("[routing]\nreport_lsn = 1\n" + minimalTail))
    #expect(flag.message == "expected a boolean (got an integer)")

    let table = try #require(failure("[monitor.user]\nx = 1\n" + minimalTail))
    #expect(table.key == "monitor.user")
}

@Test func quotedNumbersAndBooleansGetAHint() throws {
    let e = try #require(
        failure(minimalTail.replacingOccurrences(of: "host = \"127.0.0.1\"", with: "host = \"h\"\nport = \"5432\"")))
    #expect(e.key == "backends[0].port")
    #expect(e.message == "expected an integer (got a string); write the number without quotes")

    let flag = try #require(failure("[routing]\nreport_lsn = \"true\"\n" + minimalTail))
    #expect(flag.message.hasSuffix("write true without quotes"))
}

@Test func badEnumValueListsTheAllowedValues() throws {
    let e = try #require(failure("[proxy]\nlisten = \"127.0.0.1:6432\"\npool_mode = \"sesion\"\n" + minimalTail))
    #expect(
        e.description
            == "conf/x.toml:3: proxy.pool_mode: must be one of session, transaction (got \"sesion\")")

    let auth = try #require(failure("[proxy]\nauth_type = \"scram\"\n" + minimalTail))
    #expect(auth.message == "must be one of trust, md5, scram-sha-256 (got \"scram\")")

    let role = try #require(failure(minimalTail.replacingOccurrences(of: "host = \"127.0.0.1\"", with: "host = \"h\"\nrole = \"standby\"")))
    #expect(role.key == "backends[0].role")
    #expect(role.message == "must be one of auto, primary, replica (got \"standby\")")

    for (key, allowed) in [
        ("consistency", "eventual, session, strong"), ("fallback", "primary, wait, error"),
    ] {
        let bad = try #require(failure("[routing]\n\(key) = \"x\"\n" + minimalTail))
        #expect(bad.message == "must be one of \(allowed) (got \"x\")")
    }
    let level = try #require(failure("[proxy]\nlog_level = \"warning\"\n" + minimalTail))
    #expect(level.message == "must be one of debug, info, warn, error (got \"warning\")")

    let unquoted = try #require(failure("[proxy]\npool_mode = 3\n" + minimalTail))
    #expect(unquoted.message.hasPrefix("expected one of session, transaction in quotes (got an integer)"))
}

@Test func portOutOfRangeIsRejected() throws {
    let text = """
        [proxy]
        auth_type = "trust"

        [[backends]]
        name = "a"
        host = "h"

        [[backends]]
        name = "b"
        host = "h"

        [[backends]]
        name = "c"
        host = "h"
        port = 70000
        """
    let e = try #require(failure(text))
    #expect(e.description == "conf/x.toml:15: backends[2].port: must be between 1 and 65535 (got 70000)")
    let zero = try #require(failure(text.replacingOccurrences(of: "70000", with: "0")))
    #expect(zero.message == "must be between 1 and 65535 (got 0)")
}

@Test func intervalsAndCountsMustBeInRange() throws {
    let interval = try #require(failure("[monitor]\ninterval_ms = 0\n" + minimalTail))
    #expect(interval.description == "conf/x.toml:2: monitor.interval_ms: must be greater than 0 (got 0)")

    let lag = try #require(failure("[routing]\nmax_lag_ms = -1\n" + minimalTail))
    #expect(lag.message == "must be 0 or more (got -1)")

    let wait = try #require(failure("[routing]\ncausal_wait_ms = -5\n" + minimalTail))
    #expect(wait.key == "routing.causal_wait_ms")

    let workers = try #require(failure("[proxy]\nworkers = -2\n" + minimalTail))
    #expect(workers.key == "proxy.workers")

    let clients = try #require(failure("[proxy]\nmax_client_conn = 0\n" + minimalTail))
    #expect(clients.message == "must be at least 1 (got 0)")
}

@Test func negativeWeightIsRejected() throws {
    let e = try #require(
        failure(minimalTail.replacingOccurrences(of: "host = \"127.0.0.1\"", with: "host = \"h\"\nweight = -1")))
    #expect(e.line == 4)
    #expect(e.key == "backends[0].weight")
    #expect(e.message == "must be 0 or more (got -1)")
}

@Test func emptyStringsAreRejectedWhereANameIsNeeded() throws {
    let zone = try #require(failure("[proxy]\nzone = \"\"\n" + minimalTail))
    #expect(zone.key == "proxy.zone")
    #expect(zone.message == "must not be empty")
    let admin = try #require(failure("[proxy]\nadmin_users = [\"\"]\n" + minimalTail))
    #expect(admin.key == "proxy.admin_users[0]")
    let host = try #require(failure(minimalTail.replacingOccurrences(of: "\"127.0.0.1\"", with: "\"\"")))
    #expect(host.key == "backends[0].host")
}

// MARK: - Backends

@Test func missingBackendKeysAreReportedAtTheTableHeader() throws {
    let e = try #require(failure("[proxy]\nauth_type = \"trust\"\n\n[[backends]]\nhost = \"h\"\n"))
    #expect(e.line == 4)
    #expect(e.key == "backends[0].name")
    #expect(e.message == "missing (every backend needs a name)")

    let host = try #require(failure("[proxy]\nauth_type = \"trust\"\n[[backends]]\nname = \"x\"\n"))
    #expect(host.key == "backends[0].host")
}

@Test func backendNamesUseOnlySafeCharacters() throws {
    let e = try #require(failure(minimalTail.replacingOccurrences(of: "\"pg1\"", with: "\"pg 1\"")))
    #expect(e.key == "backends[0].name")
    #expect(e.message.contains("letters, digits"))
}

@Test func duplicateBackendNameIsRejected() throws {
    let e = try #require(
        failure(
            """
            [proxy]
            auth_type = "trust"

            [[backends]]
            name = "pg"
            host = "a"

            [[backends]]
            name = "pg"
            host = "b"
            """))
    #expect(e.description == "conf/x.toml:9: backends[1].name: duplicate backend name \"pg\" (first used on line 5)")
}

@Test func secondPrimaryBackendIsRejected() throws {
    let e = try #require(
        failure(
            """
            [proxy]
            auth_type = "trust"

            [[backends]]
            name = "a"
            host = "a"
            role = "primary"

            [[backends]]
            name = "b"
            host = "b"
            role = "replica"

            [[backends]]
            name = "c"
            host = "c"
            role = "primary"
            """))
    #expect(e.line == 17)
    #expect(e.key == "backends[2].role")
    #expect(e.message.contains("only one backend may have role \"primary\" (backends[0] on line 7 already does)"))
}

// MARK: - Users

@Test func duplicateUserNameIsRejected() throws {
    let e = try #require(failure(minimalTail + "\n\n[[users]]\nname = \"app\"\npassword = \"other\"\n"))
    #expect(e.line == 10)
    #expect(e.key == "users[1].name")
    #expect(e.message == "duplicate user name \"app\" (first used on line 6)")
}

@Test func userNeedsExactlyOneOfPasswordOrScram() throws {
    let neither = try #require(failure(minimalTail.replacingOccurrences(of: "password = \"secret\"", with: "")))
    #expect(neither.line == 5)
    #expect(neither.key == "users[0]")
    #expect(neither.message == "set password or scram (user \"app\" has neither)")

    let both = try #require(failure(minimalTail + "\nscram = \"\(verifierText())\"\n"))
    #expect(both.line == 8)
    #expect(both.key == "users[0].scram")
    #expect(both.message == "set either password or scram, not both")
}

@Test func scramUserParsesItsVerifier() throws {
    let config = try parse(minimalTail.replacingOccurrences(of: "password = \"secret\"", with: "scram = \"\(verifierText())\""))
    let verifier = try #require(config.users[0].scram)
    #expect(config.users[0].password == nil)
    #expect(verifier.iterations == 4096)
    #expect(verifier.salt == [UInt8](repeating: 7, count: 16))
    #expect(verifier.storedKey == [UInt8](repeating: 1, count: 32))
    #expect(verifier.serverKey == [UInt8](repeating: 2, count: 32))
}

@Test func scramOnlyUserCannotUseMd5() throws {
    let scramUser = minimalTail.replacingOccurrences(of: "password = \"secret\"", with: "scram = \"\(verifierText())\"")
    let global = try #require(failure("[proxy]\nauth_type = \"md5\"\n" + scramUser))
    #expect(global.line == 9)
    #expect(global.key == "users[0].scram")
    #expect(global.message.contains("md5, which needs the plain password"))

    let own = try #require(failure(scramUser + "\nauth_type = \"md5\"\n"))
    #expect(own.line == 8)
    #expect(own.key == "users[0].auth_type")
    #expect(own.message.contains("md5 needs the plain password"))

    // A per-user scram-sha-256 override makes it fine under a global md5.
    let fine = try parse("[proxy]\nauth_type = \"md5\"\n" + scramUser + "\nauth_type = \"scram-sha-256\"\n")
    #expect(fine.effectiveAuthType(for: fine.users[0]) == .scramSHA256)
}

@Test func malformedVerifierIsRejectedWithoutEchoingIt() throws {
    let bad = verifierText(storedBytes: 20)
    let e = try #require(failure(minimalTail.replacingOccurrences(of: "password = \"secret\"", with: "scram = \"\(bad)\"")))
    #expect(e.line == 7)
    #expect(e.key == "users[0].scram")
    #expect(e.message.contains("not a valid SCRAM-SHA-256 verifier (StoredKey must be 32 bytes of base64)"))
    #expect(!e.description.contains(bad))
    #expect(!e.description.contains(Data(repeating: 1, count: 20).base64EncodedString()))
}

@Test func emptyPasswordIsRejectedUnlessTheUserIsTrusted() throws {
    let empty = minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\"")
    let e = try #require(failure(empty))
    #expect(e.key == "users[0].password")
    #expect(e.message == "must not be empty (scram-sha-256 authentication needs a password)")
    let trusted = try parse(empty + "\nauth_type = \"trust\"\n")
    #expect(trusted.users[0].password == "")
}

@Test func passwordsNeverAppearInErrors() throws {
    let secret = "hunter2-Zq9"
    let cases = [
        // Unquoted password: a syntax error that must not quote the bare word.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: secret),
        // Unterminated string.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\(secret)"),
        // Bad escape inside the password.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\(secret)\\q\""),
        // Trailing garbage after the password.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\(secret)\" \(secret)"),
        // Both password and scram.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\(secret)\"") + "\nscram = \"\(verifierText())\"\n",
        // Duplicate password key.
        minimalTail.replacingOccurrences(of: "\"secret\"", with: "\"\(secret)\"") + "\npassword = \"\(secret)\"\n",
        // Monitor password set in the wrong table.
        "[routing]\npassword = \"\(secret)\"\n" + minimalTail,
        // Password of the wrong type.
        "[monitor]\npassword = [\"\(secret)\"]\n" + minimalTail,
        // Password in a table that doesn't exist.
        "[monitr]\npassword = \"\(secret)\"\n" + minimalTail,
        // A verifier that is really a password.
        minimalTail.replacingOccurrences(of: "password = \"secret\"", with: "scram = \"\(secret)\""),
        // Password given as a float-looking word.
        "[monitor]\npassword = 1.\(secret)\n" + minimalTail,
    ]
    for text in cases {
        let e = try #require(failure(text), "expected an error for: \(text)")
        #expect(!e.description.contains(secret), "leaked: \(e.description)")
        #expect(!e.description.contains("hunter"), "leaked: \(e.description)")
    }
}

@Test func theEarliestProblemInTheFileIsReported() throws {
    let e = try #require(
        failure(
            """
            [proxy]
            pool_mode = "x"
            workers = -1

            [[backends]]
            name = "pg"
            host = "h"
            port = 0
            """))
    #expect(e.line == 2)
    #expect(e.key == "proxy.pool_mode")
}

// MARK: - TOML syntax errors (through the loader)

@Test func duplicateKeyIsRejectedWithBothLines() throws {
    let e = try #require(failure("[proxy]\nzone = \"a\"\n\nzone = \"b\"\n" + minimalTail))
    #expect(e.description == "conf/x.toml:4: proxy.zone: duplicate key (first set on line 2)")
}

@Test func tableDefinedTwiceIsRejected() throws {
    let e = try #require(failure("[proxy]\nzone = \"a\"\n[routing]\n[proxy]\n" + minimalTail))
    #expect(e.line == 4)
    #expect(e.key == "proxy")
    #expect(e.message == "table [proxy] is defined twice (first on line 1)")
}

@Test func missingEqualsIsASyntaxError() throws {
    let e = try #require(failure("[proxy]\nzone \"a\"\n" + minimalTail))
    #expect(e.line == 2)
    #expect(e.column == 6)
    #expect(e.key == "proxy.zone")
    #expect(e.description == "conf/x.toml:2:6: proxy.zone: expected \"=\" after the key")

    let missingValue = try #require(failure("[proxy]\nzone =\n" + minimalTail))
    #expect(missingValue.message == "missing value after \"=\"")
}

@Test func unterminatedStringIsASyntaxError() throws {
    let e = try #require(failure("[proxy]\n\nzone = \"dc1\n" + minimalTail))
    #expect(e.line == 3)
    #expect(e.column == 8)
    #expect(e.message == "unterminated string (missing closing \")")

    let literal = try #require(failure("[proxy]\nzone = 'dc1\n" + minimalTail))
    #expect(literal.message == "unterminated string (missing closing ')")
}

@Test func badEscapeIsASyntaxError() throws {
    let e = try #require(failure("[proxy]\nzone = \"a\\qb\"\n" + minimalTail))
    #expect(e.line == 2)
    #expect(e.column == 10)
    #expect(e.message.hasPrefix("invalid escape sequence"))

    let shortUnicode = try #require(failure("[proxy]\nzone = \"\\u12\"\n" + minimalTail))
    #expect(shortUnicode.message == "\\u must be followed by 4 hex digits")

    let surrogate = try #require(failure("[proxy]\nzone = \"\\uD800\"\n" + minimalTail))
    #expect(surrogate.message.contains("not a valid Unicode scalar"))
}

@Test func floatsAreRejectedClearly() throws {
    for value in ["1.5", "1e3", "-0.5", "inf", "+inf", "nan", "6.02E23"] {
        let e = try #require(failure("[routing]\nmax_lag_ms = \(value)\n" + minimalTail), "\(value)")
        #expect(e.line == 2)
        #expect(e.key == "routing.max_lag_ms")
        #expect(e.message == "floating-point numbers are not supported; use an integer", "\(value)")
    }
}

@Test func datesAndInlineTablesAreRejectedClearly() throws {
    let date = try #require(failure("[routing]\nmax_lag_ms = 1979-05-27\n" + minimalTail))
    #expect(date.message == "dates and times are not supported; use a quoted string")
    let time = try #require(failure("[routing]\nmax_lag_ms = 07:32:00\n" + minimalTail))
    #expect(time.message == "dates and times are not supported; use a quoted string")
    let inline = try #require(failure("[routing]\nx = { a = 1 }\n" + minimalTail))
    #expect(inline.message.hasPrefix("inline tables ({ ... }) are not supported"))
    let multiline = try #require(failure("[proxy]\nzone = \"\"\"a\"\"\"\n" + minimalTail))
    #expect(multiline.message.hasPrefix("multi-line strings"))
}

@Test func unquotedStringIsASyntaxError() throws {
    let e = try #require(failure("[proxy]\npool_mode = session\n" + minimalTail))
    #expect(e.line == 2)
    #expect(e.column == 13)
    #expect(e.message == "invalid value; strings must be in quotes (\"...\" or '...')")
}

@Test func textAfterAValueIsASyntaxError() throws {
    let e = try #require(failure("[proxy]\nworkers = 4 4\n" + minimalTail))
    #expect(e.line == 2)
    #expect(e.message.hasPrefix("unexpected text after the value"))
    let header = try #require(failure("[proxy] x\n" + minimalTail))
    #expect(header.message.hasPrefix("unexpected text after the table header"))
}

@Test func unterminatedArrayReportsWhereItOpened() throws {
    let e = try #require(failure("[proxy]\nadmin_users = [\"a\",\n  \"b\"\n"))
    #expect(e.line == 2)
    #expect(e.column == 15)
    #expect(e.message == "unterminated array (missing \"]\")")

    let missingComma = try #require(failure("[proxy]\nadmin_users = [\"a\"\n  \"b\"]\n" + minimalTail))
    #expect(missingComma.line == 3)
    #expect(missingComma.message == "expected \",\" or \"]\" in the array opened on line 2")
}

// MARK: - The TOML reader itself

@Test func basicStringEscapesAreDecoded() throws {
    let root = try TOMLReader.parse(#"s = "q\" b\\ n\n t\t e\u00E9 g\U0001F600 r\r f\f x\b""#)
    guard case .string(let s) = root["s"]?.kind else {
        Issue.record("not a string")
        return
    }
    #expect(s == "q\" b\\ n\n t\t e\u{E9} g\u{1F600} r\r f\u{0C} x\u{08}")
}

@Test func literalStringsKeepBackslashesAndQuotes() throws {
    let root = try TOMLReader.parse(#"s = 'C:\path\n "quoted" # not a comment'"#)
    guard case .string(let s) = root["s"]?.kind else {
        Issue.record("not a string")
        return
    }
    #expect(s == #"C:\path\n "quoted" # not a comment"#)
}

@Test func unicodeTextIsKeptAndColumnsCountCharacters() throws {
    let root = try TOMLReader.parse("s = \"zoné 東京\"")
    guard case .string(let s) = root["s"]?.kind else {
        Issue.record("not a string")
        return
    }
    #expect(s == "zoné 東京")
    let e = try #require(tomlFailure("s = \"é\" x"))
    #expect(e.column == 9)
}

@Test func integersAcceptUnderscoresSignsAndRadixPrefixes() throws {
    let root = try TOMLReader.parse(
        "a = 1_000\nb = -17\nc = +42\nd = 0\ne = 0xFF\nf = 0o17\ng = 0b101\nh = -9223372036854775808\ni = 9_223_372_036_854_775_807")
    func int(_ key: String) -> Int? {
        guard case .integer(let n) = root[key]?.kind else { return nil }
        return n
    }
    #expect(int("a") == 1000)
    #expect(int("b") == -17)
    #expect(int("c") == 42)
    #expect(int("d") == 0)
    #expect(int("e") == 255)
    #expect(int("f") == 15)
    #expect(int("g") == 5)
    #expect(int("h") == Int.min)
    #expect(int("i") == Int.max)
}

@Test func malformedIntegersAreRejected() throws {
    let cases: [(String, String)] = [
        ("1__0", "\"_\" in an integer must sit between two digits"),
        ("_1", "invalid value; strings must be in quotes (\"...\" or '...')"),
        ("1_", "\"_\" in an integer must sit between two digits"),
        ("012", "leading zeros are not allowed in integers"),
        ("9223372036854775808", "integer out of range"),
        ("-9223372036854775809", "integer out of range"),
        ("12abc", "invalid integer"),
        ("0xZZ", "invalid integer"),
        ("-0x10", "hexadecimal, octal and binary integers cannot have a sign"),
        ("+", "invalid integer"),
    ]
    for (text, message) in cases {
        let e = try #require(tomlFailure("n = \(text)"), "\(text)")
        #expect(e.message == message, "\(text)")
        #expect(e.line == 1)
        #expect(e.key == "n")
    }
}

@Test func multiLineArraysAllowTrailingCommasAndComments() throws {
    let root = try TOMLReader.parse(
        """
        a = [
          "x",   # first
          # a comment line
          'y',

          "z",   # trailing comma next
        ]
        b = []
        c = [ 1, 2 ,3 ]
        d = [[1, 2], ["n"]]
        """)
    guard case .array(let a) = root["a"]?.kind, case .array(let b) = root["b"]?.kind,
        case .array(let c) = root["c"]?.kind, case .array(let d) = root["d"]?.kind
    else {
        Issue.record("not arrays")
        return
    }
    #expect(a.count == 3)
    #expect(a.map(\.line) == [2, 4, 6])
    #expect(root["a"]?.line == 1)
    #expect(b.isEmpty)
    #expect(c.count == 3)
    #expect(d.count == 2)
    #expect(tomlFailure("a = [,]")?.message == "expected a value before \",\"")
    #expect(tomlFailure("a = [1,,2]")?.message == "expected a value before \",\"")
}

@Test func quotedAndDottedKeysAreSupported() throws {
    let root = try TOMLReader.parse(
        """
        "quoted key" = 1
        'literal.key' = 2
        site . name = "x"
        site.port = 3
        [a."b c".d]
        e = true
        """)
    #expect(root.keys == ["quoted key", "literal.key", "site", "a"])
    guard case .table(let site) = root["site"]?.kind else {
        Issue.record("site is not a table")
        return
    }
    #expect(site.keys == ["name", "port"])
    guard case .table(let a) = root["a"]?.kind, case .table(let bc) = a["b c"]?.kind,
        case .table(let d) = bc["d"]?.kind, case .boolean(true) = d["e"]?.kind
    else {
        Issue.record("a.\"b c\".d.e missing")
        return
    }
    #expect(d.path == "a.b c.d")
    #expect(tomlFailure("site.name = 1\nsite.name = 2")?.message == "duplicate key (first set on line 1)")
    #expect(tomlFailure("site = 1\nsite.name = 2")?.key == "site")
    #expect(tomlFailure("= 1")?.message == "missing key before \"=\"")
    #expect(tomlFailure("a/b = 1")?.message.hasPrefix("invalid character in key") == true)
}

@Test func arraysOfTablesRememberEachElementAndLine() throws {
    let root = try TOMLReader.parse(
        """
        [[b]]
        n = 1

        [[b]]
        n = 2
        [b.sub]
        x = 3

        [[b]]
        """)
    guard case .tableArray(let elements) = root["b"]?.kind else {
        Issue.record("b is not an array of tables")
        return
    }
    #expect(elements.map(\.line) == [1, 4, 9])
    #expect(elements.map(\.path) == ["b[0]", "b[1]", "b[2]"])
    guard case .table(let sub) = elements[1]["sub"]?.kind, case .integer(3) = sub["x"]?.kind else {
        Issue.record("[b.sub] did not go into the last [[b]]")
        return
    }
    #expect(sub.path == "b[1].sub")
    #expect(elements[1]["n"]?.line == 5)
}

@Test func tableStructureConflictsAreRejected() throws {
    #expect(tomlFailure("[a]\n[[a]]")?.message.hasPrefix("[[a]] conflicts with a table") == true)
    #expect(tomlFailure("[[a]]\n[a]")?.message == "[a] is an array of tables (line 1); write [[a]]")
    #expect(tomlFailure("a = 1\n[a]")?.message == "a is already an integer (line 1), not a table")
    #expect(tomlFailure("a = 1\n[a.b]")?.message == "a is already an integer (line 1), not a table")
    #expect(tomlFailure("[a]\nb.c = 1\n[a.b]")?.message == "table [a.b] is defined twice (first on line 2)")
    #expect(tomlFailure("[]")?.message == "empty table name")
    #expect(tomlFailure("[a")?.message.hasPrefix("expected \"]\"") == true)
    #expect(tomlFailure("[[a]")?.message.hasPrefix("expected \"]]\"") == true)
    // A parent created implicitly by [a.b] may get its own header later.
    let root = try TOMLReader.parse("[a.b]\nx = 1\n[a]\ny = 2")
    guard case .table(let a) = root["a"]?.kind else {
        Issue.record("a is not a table")
        return
    }
    #expect(a.keys == ["b", "y"])
    #expect(a.line == 3)
}

@Test func crlfLineEndingsAndAByteOrderMarkAreAccepted() throws {
    let text = "\u{FEFF}[proxy]\r\nzone = \"z\" # c\r\n\r\n" + minimalTail.replacingOccurrences(of: "\n", with: "\r\n")
    let config = try parse(text)
    #expect(config.proxy.zone == "z")
    let e = try #require(failure("[proxy]\r\nzone = 1\r\n" + minimalTail))
    #expect(e.line == 2)
    #expect(tomlFailure("a = 1\rb = 2")?.message == "carriage return not followed by a line feed")
}

@Test func controlCharactersInStringsAreRejected() throws {
    #expect(tomlFailure("a = \"x\u{01}y\"")?.message.hasPrefix("control character") == true)
    let tab = try TOMLReader.parse("a = \"x\ty\"")
    guard case .string("x\ty") = tab["a"]?.kind else {
        Issue.record("tab in a string was not kept")
        return
    }
}

// MARK: - ScramVerifier

@Test func scramVerifierParsesThePostgresFormat() throws {
    let text =
        "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA="
    let verifier = try #require(ScramVerifier(parsing: text))
    #expect(verifier.iterations == 4096)
    #expect(verifier.salt == Array(1...16))
    #expect(verifier.storedKey.count == 32)
    #expect(verifier.storedKey.prefix(4) == [242, 186, 195, 131])
    #expect(verifier.serverKey.prefix(4) == [211, 146, 245, 127])
    #expect(verifier.encoded == text)
}

@Test func scramVerifierRejectsMalformedText() {
    let stored = Data(repeating: 1, count: 32).base64EncodedString()
    let server = Data(repeating: 2, count: 32).base64EncodedString()
    let cases: [(String, String)] = [
        ("", "expected three parts"),
        ("md5abcdef", "expected three parts"),
        ("SCRAM-SHA-1$4096:AAAA$\(stored):\(server)", "must start with"),
        ("SCRAM-SHA-256$4096$\(stored):\(server)", "<iterations>:<salt>"),
        ("SCRAM-SHA-256$0:AAAA$\(stored):\(server)", "iteration count"),
        ("SCRAM-SHA-256$-1:AAAA$\(stored):\(server)", "iteration count"),
        ("SCRAM-SHA-256$x:AAAA$\(stored):\(server)", "iteration count"),
        ("SCRAM-SHA-256$4096:!!!$\(stored):\(server)", "salt"),
        ("SCRAM-SHA-256$4096:$\(stored):\(server)", "salt"),
        ("SCRAM-SHA-256$4096:AAAA$\(stored)", "<StoredKey>:<ServerKey>"),
        ("SCRAM-SHA-256$4096:AAAA$AAAA:\(server)", "StoredKey must be 32 bytes"),
        ("SCRAM-SHA-256$4096:AAAA$\(stored):not-base64", "ServerKey must be 32 bytes"),
        ("SCRAM-SHA-256$4096:AAAA$\(stored):\(server)$extra", "expected three parts"),
    ]
    for (text, reason) in cases {
        #expect(ScramVerifier(parsing: text) == nil, "\(text)")
        if case .failure(let problem) = ScramVerifier.parse(text) {
            #expect(problem.reason.contains(reason), "\(text): \(problem.reason)")
        }
    }
    #expect(ScramVerifier(parsing: "SCRAM-SHA-256$4096:AAAA$\(stored):\(server)") != nil)
}

// MARK: - Loading files and error text

@Test func loadReportsAnUnreadableFileClearly() throws {
    let missing = "/nonexistent-dir/causeway.toml"
    do {
        _ = try CausewayConfig.load(path: missing)
        Issue.record("loaded a missing file")
    } catch {
        #expect(error.description == "\(missing): cannot read the configuration file: no such file")
        #expect(error.line == nil)
    }
    let directory = NSTemporaryDirectory()
    do {
        _ = try CausewayConfig.load(path: directory)
        Issue.record("loaded a directory")
    } catch {
        #expect(error.message == "cannot read the configuration file: it is a directory")
    }
    let binary = NSTemporaryDirectory() + "/causeway-config-test-\(UUID().uuidString).toml"
    #expect(FileManager.default.createFile(atPath: binary, contents: Data([0xFF, 0xFE, 0x00, 0xC3])))
    defer { try? FileManager.default.removeItem(atPath: binary) }
    do {
        _ = try CausewayConfig.load(path: binary)
        Issue.record("loaded a non-UTF-8 file")
    } catch {
        #expect(error.message == "cannot read the configuration file: it is not UTF-8 text")
    }
}

@Test func loadNamesThePathInParseErrors() throws {
    let path = NSTemporaryDirectory() + "/causeway-config-test-\(UUID().uuidString).toml"
    #expect(FileManager.default.createFile(atPath: path, contents: Data("[proxy]\nworkers = \"4\"\n".utf8)))
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
        _ = try CausewayConfig.load(path: path)
        Issue.record("accepted a bad file")
    } catch {
        #expect(error.file == path)
        #expect(error.description.hasPrefix("\(path):2: proxy.workers: expected an integer (got a string)"))
    }
}

@Test func errorDescriptionOmitsWhatIsUnknown() {
    #expect(ConfigError(file: "f.toml", message: "m").description == "f.toml: m")
    #expect(ConfigError(file: "f.toml", line: 3, message: "m").description == "f.toml:3: m")
    #expect(ConfigError(file: "f.toml", line: 3, column: 7, message: "m").description == "f.toml:3:7: m")
    #expect(ConfigError(file: "f.toml", key: "a.b", message: "m").description == "f.toml: a.b: m")
    #expect(ConfigError(file: "f.toml", line: 1, key: "a.b", message: "m").description == "f.toml:1: a.b: m")
}

@Test func suggestionsOnlyComeForLikelyTypos() {
    #expect(ConfigLoader.closest(to: "listn", among: ["listen", "zone"]) == "listen")
    #expect(ConfigLoader.closest(to: "zoen", among: ["listen", "zone"]) == "zone")
    #expect(ConfigLoader.closest(to: "LOG_LEVEL", among: ["log_level"]) == "log_level")
    #expect(ConfigLoader.closest(to: "database", among: ["listen", "zone"]) == nil)
    #expect(ConfigLoader.distance("kitten", "sitting") == 3)
    #expect(ConfigLoader.distance("ab", "ba") == 1)
    #expect(ConfigLoader.distance("", "abc") == 3)
}

struct ConsistencyLayeringTests {
    static let text = """
        [routing]
        consistency = "session"
        [[backends]]
        name = "primary"
        host = "127.0.0.1"
        [[users]]
        name = "reporter"
        password = "x"
        consistency = "eventual"
        [[users]]
        name = "app"
        password = "x"
        [[databases]]
        name = "ledger"
        consistency = "strong"
        """

    @Test func userSettingBeatsDatabaseSettingWhichBeatsTheDefault() throws {
        let config = try CausewayConfig.parse(Self.text, fileName: "t.toml")
        #expect(config.consistency(user: "reporter", database: "ledger") == .eventual)
        #expect(config.consistency(user: "app", database: "ledger") == .strong)
        #expect(config.consistency(user: "app", database: "other") == .session)
    }

    @Test func badDatabaseConsistencyNamesTheLineAndKey() {
        let text = Self.text.replacingOccurrences(of: "consistency = \"strong\"", with: "consistency = \"strict\"")
        do {
            _ = try CausewayConfig.parse(text, fileName: "t.toml")
            Issue.record("accepted an unknown consistency")
        } catch {
            #expect(error.line == 15)
            #expect(error.key == "databases[0].consistency")
        }
    }
}

@Test func transactionPoolModeAndTheStatementCapAreRead() throws {
    let config = try parse("""
        [proxy]
        pool_mode = "transaction"
        max_prepared_statements = 50

        """ + minimalTail)
    #expect(config.proxy.poolMode == .transaction)
    #expect(config.proxy.pools.maxPreparedStatements == 50)
    #expect(config.proxy.pools.minPoolSize == 0)
    #expect(try parse("[proxy]\nmin_pool_size = 4\n\n" + minimalTail).poolLimits(user: "app", database: "app").minPoolSize == 4)
    #expect(throws: ConfigError.self) {
        try parse("""
            [proxy]
            max_prepared_statements = 0

            """ + minimalTail)
    }
}

@Test func poolLimitsTakeTheUsersThenTheDatabasesThenTheProxysSetting() throws {
    let config = try parse(
        """
        [proxy]
        default_pool_size = 20
        max_db_connections = 100
        max_user_connections = 50
        auth_type = "trust"

        [[backends]]
        name = "pg1"
        host = "127.0.0.1"

        [[users]]
        name = "batch"
        password = "x"
        pool_size = 3
        max_user_connections = 5

        [[users]]
        name = "web"
        password = "x"

        [[databases]]
        name = "reports"
        pool_size = 8
        max_db_connections = 12
        """)
    #expect(config.poolLimits(user: "batch", database: "reports")
        == PoolLimits(poolSize: 3, reservePoolSize: 0, maxDBConnections: 12, maxUserConnections: 5))
    #expect(config.poolLimits(user: "web", database: "reports")
        == PoolLimits(poolSize: 8, reservePoolSize: 0, maxDBConnections: 12, maxUserConnections: 50))
    #expect(config.poolLimits(user: "web", database: "app")
        == PoolLimits(poolSize: 20, reservePoolSize: 0, maxDBConnections: 100, maxUserConnections: 50))
}
