// `causeway sandbox up|status|down`: a real local PostgreSQL cluster (a primary and N streaming
// replicas) built from the server binaries on this machine, in a directory of its own, on loopback
// ports, with the roles the proxy's tests need and a matching proxy config (design.md §11,
// contracts.md "Sandbox").

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What `causeway sandbox up` was asked for.
public struct SandboxOptions: Sendable {
    /// Directory that holds every data directory, log, socket and generated file (D).
    public var dir: String
    /// Number of streaming replicas.
    public var replicas: Int
    /// When > 0, the last replica runs with `recovery_min_apply_delay = <delayMs>ms`.
    public var delayMs: Int
    /// When set: primary on P, replicas on P+1…P+N, proxy on P+N+1, metrics on P+N+2. Otherwise
    /// free loopback ports are picked.
    public var portBase: Int?

    public init(dir: String = ".sandbox", replicas: Int = 2, delayMs: Int = 0, portBase: Int? = nil) {
        self.dir = dir
        self.replicas = replicas
        self.delayMs = delayMs
        self.portBase = portBase
    }

    /// Throws when the options cannot describe a cluster.
    public func validate() throws {
        guard (0...16).contains(replicas) else {
            throw SandboxError("--replicas must be between 0 and 16 (got \(replicas))")
        }
        guard delayMs >= 0 else { throw SandboxError("--delay-ms must be 0 or more (got \(delayMs))") }
        if delayMs > 0 && replicas == 0 {
            throw SandboxError("--delay-ms needs at least one replica (it applies to the last replica)")
        }
        if let base = portBase {
            let last = base + replicas + 2
            guard base >= 1024, last <= 65535 else {
                throw SandboxError("--port-base \(base) needs ports \(base)...\(last); choose a base between 1024 and \(65535 - replicas - 2)")
            }
        }
        guard !dir.isEmpty else { throw SandboxError("--dir must not be empty") }
    }
}

/// The sandbox cluster.
public enum Sandbox {
    /// Creates and starts the cluster in `options.dir`, waits until every replica streams, writes
    /// D/causeway.toml and D/sandbox.env, and returns a summary with connection strings. A cluster
    /// that already exists there is (re)started instead and its status returned. On failure, the
    /// servers it started are stopped, the directory is removed and the error carries the end of
    /// the server logs.
    public static func up(_ options: SandboxOptions, log: (String) -> Void) throws -> String {
        try options.validate()
        let dir = absolutePath(options.dir)
        let fm = FileManager.default

        if SandboxFiles.exists(dir) {
            guard SandboxFiles.isDirectory(dir) else {
                throw SandboxError("\(dir) exists and is not a directory; choose another --dir")
            }
            if SandboxFiles.exists(dir + "/" + SandboxDefaults.envFile) {
                return try resume(dir: dir, options: options, log: log)
            }
            if SandboxFiles.exists(dir + "/" + SandboxDefaults.markerFile) {
                throw SandboxError("\(dir) holds an incomplete sandbox (an earlier `up` was interrupted); run `causeway sandbox down --dir \(options.dir)` and then `up` again")
            }
            let contents = (try? fm.contentsOfDirectory(atPath: dir)) ?? []
            guard contents.isEmpty else {
                throw SandboxError("\(dir) is not empty and is not a sandbox; choose another --dir or remove it")
            }
        }

        let host = try SandboxHost.detect()
        let ports = try allocatePorts(options)
        let state = SandboxState(
            bindir: host.bindir,
            dir: dir,
            primaryPort: ports[0],
            replicaPorts: Array(ports[1..<(1 + options.replicas)]),
            proxyPort: ports[options.replicas + 1],
            metricsPort: ports[options.replicas + 2],
            delayMs: options.delayMs,
            serverUser: host.serverUser?.name ?? ""
        )

        let createdDir = !SandboxFiles.exists(dir)
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        } catch {
            throw SandboxError("cannot create \(dir): \(error.localizedDescription)")
        }

        var builder = SandboxBuilder(state: state, host: host)
        do {
            try builder.build(log: log)
        } catch {
            // The server started last is the likely culprit: more of its log, and last.
            let culprit = builder.started.last
            let order = state.nodes.map(\.name).filter { $0 != culprit } + (culprit.map { [$0] } ?? [])
            let tails = order.compactMap { name -> String? in
                let text = SandboxFiles.tail(state.logFile(name), lines: name == culprit ? 30 : 8)
                return text.isEmpty ? nil : "--- last lines of \(state.logFile(name)) ---\n\(text)"
            }
            builder.stopStarted()
            if createdDir {
                try? fm.removeItem(atPath: dir)
            } else {
                for entry in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] {
                    try? fm.removeItem(atPath: dir + "/" + entry)
                }
            }
            var message = "sandbox up failed: \(error)"
            if !tails.isEmpty { message += "\n\n" + tails.joined(separator: "\n\n") }
            message += "\n\nThe servers this run started were stopped and \(dir) was \(createdDir ? "removed" : "emptied")."
            throw SandboxError(message)
        }
        return summary(state, version: host.version, header: "Sandbox is up in \(dir).")
    }

    /// One line per server (port, running or not, role, LSN, lag) plus the proxy and metrics ports.
    public static func status(dir: String) throws -> String {
        let dir = absolutePath(dir)
        guard SandboxFiles.exists(dir + "/" + SandboxDefaults.envFile) else {
            throw SandboxError("no sandbox in \(dir) (no \(SandboxDefaults.envFile)); start one with `causeway sandbox up --dir \(dir)`")
        }
        let state = try SandboxState.load(dir: dir)
        let host = try SandboxHost.detect(preferredBindir: state.bindir, existingDir: dir)
        return statusText(state, host: host)
    }

    /// Stops every server of the sandbox (fast shutdown) and removes the directory. Does nothing
    /// when the directory does not exist; refuses a directory that is not a sandbox.
    public static func down(dir: String) throws {
        let dir = absolutePath(dir)
        guard SandboxFiles.exists(dir) else { return }
        let envPath = dir + "/" + SandboxDefaults.envFile
        guard SandboxFiles.exists(dir + "/" + SandboxDefaults.markerFile) || SandboxFiles.exists(envPath) else {
            throw SandboxError("\(dir) is not a causeway sandbox (no \(SandboxDefaults.markerFile)); refusing to delete it")
        }
        if geteuid() != 0, let owner = SandboxFiles.owner(of: dir), owner != geteuid() {
            let name = SandboxServerUser.lookup(uid: owner)?.name ?? "uid \(owner)"
            throw SandboxError("the sandbox in \(dir) belongs to \(name), whose servers only \(name) or root can stop; run `causeway sandbox down` as root or as \(name)")
        }
        let state = SandboxFiles.exists(envPath) ? try? SandboxState.load(dir: dir) : nil
        let host = try SandboxHost.detect(preferredBindir: state?.bindir, existingDir: dir)
        let runner = host.runner(workDir: dir)

        // Every data directory in D, replicas before the primary so they do not log reconnect noise.
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        let dataDirs = entries
            .filter { SandboxFiles.exists(dir + "/" + $0 + "/PG_VERSION") }
            .sorted { a, b in (a == SandboxDefaults.primaryName ? 1 : 0, a) < (b == SandboxDefaults.primaryName ? 1 : 0, b) }
        var failures: [String] = []
        for name in dataDirs {
            let dataDir = dir + "/" + name
            guard isRunning(dataDir, port: nil, runner: runner) else { continue }
            let fast = try runner.pg("pg_ctl", ["-D", dataDir, "-m", "fast", "-w", "-t", "60", "stop"], timeout: 90)
            if fast.succeeded { continue }
            let immediate = try runner.pg("pg_ctl", ["-D", dataDir, "-m", "immediate", "-w", "-t", "30", "stop"], timeout: 60)
            if !immediate.succeeded && isRunning(dataDir, port: nil, runner: runner) {
                failures.append("\(name): \(immediate.output.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }
        guard failures.isEmpty else {
            throw SandboxError("could not stop every server, so \(dir) was kept:\n" + failures.joined(separator: "\n")
                + "\nStop them (pg_ctl -D <datadir> stop -m immediate) and run `causeway sandbox down` again.")
        }
        do {
            try FileManager.default.removeItem(atPath: dir)
        } catch {
            throw SandboxError("servers stopped, but \(dir) could not be removed: \(error.localizedDescription)")
        }
    }

    // MARK: - Existing sandboxes

    private static func resume(dir: String, options: SandboxOptions, log: (String) -> Void) throws -> String {
        let state = try SandboxState.load(dir: dir)
        let host = try SandboxHost.detect(preferredBindir: state.bindir, existingDir: dir)
        let runner = host.runner(workDir: dir)
        var started: [String] = []
        for node in state.nodes where !isRunning(state.dataDir(node.name), port: node.port, runner: runner) {
            log("starting \(node.name) on port \(node.port)")
            let result = try runner.pg(
                "pg_ctl", ["-D", state.dataDir(node.name), "-l", state.logFile(node.name), "-w", "-t", "60", "start"], timeout: 90)
            guard result.succeeded else {
                let tail = SandboxFiles.tail(state.logFile(node.name), lines: 25)
                throw SandboxError("could not start \(node.name) of the existing sandbox in \(dir):\n\(result.output)\n--- last lines of \(state.logFile(node.name)) ---\n\(tail)\n\nRun `causeway sandbox down --dir \(options.dir)` and `up` again for a fresh cluster.")
            }
            started.append(node.name)
        }
        if !started.isEmpty && !state.replicaNames.isEmpty {
            try SandboxBuilder.waitForStreaming(runner: runner, state: state, log: log)
        }
        var header = started.isEmpty
            ? "Sandbox in \(dir) is already running; nothing to do."
            : "Sandbox in \(dir) already existed; started \(started.joined(separator: ", "))."
        if options.replicas != state.replicaPorts.count || options.delayMs != state.delayMs
            || (options.portBase != nil && options.portBase != state.primaryPort) {
            header += "\nIts layout differs from the options given (\(state.replicaPorts.count) replicas, delay \(state.delayMs) ms, primary port \(state.primaryPort)); run `causeway sandbox down --dir \(options.dir)` first to change it."
        }
        return header + "\n\n" + statusText(state, host: host) + "\n\n" + summary(state, version: host.version, header: nil)
    }

    // MARK: - Helpers

    static func absolutePath(_ path: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        let absolute = expanded.hasPrefix("/")
            ? expanded
            : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(expanded)
        let standardized = (absolute as NSString).standardizingPath
        return standardized.count > 1 && standardized.hasSuffix("/") ? String(standardized.dropLast()) : standardized
    }

    /// `pg_ctl status`; when the data directory exists but cannot be read (another user's
    /// sandbox), whether something listens on `port`.
    static func isRunning(_ dataDir: String, port: Int?, runner: SandboxRunner) -> Bool {
        guard let result = try? runner.pg("pg_ctl", ["-D", dataDir, "status"], timeout: 30) else { return false }
        switch result.status {
        case 0: return true
        case 3: return false
        default:
            guard let port, SandboxFiles.isDirectory(dataDir) else { return false }
            return SandboxNet.isListening(port)
        }
    }

    private static func allocatePorts(_ options: SandboxOptions) throws -> [Int] {
        let count = options.replicas + 3
        guard let base = options.portBase else { return try SandboxNet.freeLoopbackPorts(count) }
        let ports = Array(base..<(base + count))
        let busy = ports.filter { !SandboxNet.isFree($0) }
        guard busy.isEmpty else {
            throw SandboxError("port(s) \(busy.map(String.init).joined(separator: ", ")) on 127.0.0.1 are in use; choose another --port-base or leave it out to pick free ports")
        }
        return ports
    }

    /// Connection strings and where things are.
    static func summary(_ state: SandboxState, version: String?, header: String?) -> String {
        func conn(_ port: Int, _ user: String, _ password: String?, _ db: String) -> String {
            var s = "host=\(SandboxDefaults.host) port=\(port) user=\(user)"
            if let password { s += " password=\(password)" }
            return "psql \"\(s) dbname=\(db)\""
        }
        let pw = SandboxDefaults.appPassword
        var lines: [String] = []
        if let header { lines.append(header) }
        var servers = "Servers"
        if let version { servers += " (PostgreSQL \(version)" + (state.serverUser.isEmpty ? ")" : ", run as \(state.serverUser))") }
        lines.append(servers + ":")
        for node in state.nodes {
            var line = "  \(node.name.padding(toLength: 9, withPad: " ", startingAt: 0)) 127.0.0.1:\(node.port)"
            if node.name == state.delayedReplica { line += "  (recovery_min_apply_delay = \(state.delayMs)ms)" }
            lines.append(line)
        }
        lines.append("")
        lines.append("Direct connections:")
        lines.append("  \(conn(state.primaryPort, SandboxDefaults.superuser, SandboxDefaults.superuserPassword, "postgres"))   # primary, superuser")
        lines.append("  \(conn(state.primaryPort, "app", pw, SandboxDefaults.database))   # primary, scram")
        lines.append("  \(conn(state.primaryPort, "app_md5", pw, SandboxDefaults.database))   # primary, md5")
        lines.append("  \(conn(state.primaryPort, "app_trust", nil, SandboxDefaults.database))   # primary, trust")
        for (name, port) in zip(state.replicaNames, state.replicaPorts) {
            lines.append("  \(conn(port, "app", pw, SandboxDefaults.database))   # \(name)")
        }
        lines.append("")
        lines.append("Through the proxy (start it with: causeway --config \(state.configPath)):")
        lines.append("  \(conn(state.proxyPort, "app", pw, SandboxDefaults.database))")
        lines.append("  \(conn(state.proxyPort, SandboxDefaults.superuser, SandboxDefaults.superuserPassword, "causeway"))   # admin console")
        lines.append("  metrics: http://\(SandboxDefaults.host):\(state.metricsPort)/metrics")
        lines.append("")
        lines.append("Roles: postgres/postgres (superuser, scram), app/secret (scram), app_md5/secret (md5), app_trust (trust), app_scram/secret (scram; the proxy config holds its verifier). Database app is owned by app; the app roles can use each other's tables in schema public.")
        lines.append("Files: \(state.configPath), \(state.envPath), logs \(state.dir)/*.log")
        lines.append("Stop and remove: causeway sandbox down --dir \(state.dir)")
        return lines.joined(separator: "\n")
    }

    static func statusText(_ state: SandboxState, host: SandboxHost) -> String {
        let runner = host.runner(workDir: state.dir)
        let running = Dictionary(uniqueKeysWithValues: state.nodes.map {
            ($0.name, isRunning(state.dataDir($0.name), port: $0.port, runner: runner))
        })

        // Replication as the primary sees it: name -> (state, replay lsn, lag bytes, lag ms).
        var replication: [String: [String]] = [:]
        var primaryNote = ""
        if running[SandboxDefaults.primaryName] == true {
            do {
                let rows = try runner.query(port: state.primaryPort, """
                    SELECT application_name, state, COALESCE(replay_lsn::text, ''), \
                    COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint::text, ''), \
                    COALESCE(round(EXTRACT(epoch FROM replay_lag) * 1000)::bigint::text, '0') \
                    FROM pg_stat_replication
                    """)
                for row in rows where row.count >= 5 { replication[row[0]] = Array(row[1...]) }
            } catch {
                primaryNote = "cannot query: \(firstLine(error))"
            }
        }

        var table: [[String]] = [["NODE", "PORT", "SERVER", "ROLE", "REPLICATION", "LSN", "LAG_BYTES", "LAG_MS", "NOTE"]]
        for node in state.nodes {
            var row = [node.name, String(node.port), running[node.name] == true ? "running" : "stopped", "-", "-", "-", "-", "-", ""]
            var notes: [String] = []
            if node.name == state.delayedReplica { notes.append("recovery_min_apply_delay=\(state.delayMs)ms") }
            if node.name == SandboxDefaults.primaryName && !primaryNote.isEmpty { notes.append(primaryNote) }
            if running[node.name] == true {
                do {
                    let rows = try runner.query(port: node.port, """
                        SELECT pg_is_in_recovery(), \
                        CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_replay_lsn()::text, '') ELSE pg_current_wal_lsn()::text END
                        """)
                    if let r = rows.first, r.count >= 2 {
                        row[3] = r[0] == "t" ? "replica" : "primary"
                        row[5] = r[1].isEmpty ? "-" : r[1]
                    }
                } catch {
                    notes.append("cannot query: \(firstLine(error))")
                }
            }
            if node.name != SandboxDefaults.primaryName {
                if let rep = replication[node.name] {
                    row[4] = rep[0]
                    if !rep[2].isEmpty { row[6] = rep[2] }
                    row[7] = rep[3]
                } else if running[SandboxDefaults.primaryName] == true {
                    row[4] = "not connected"
                }
            }
            row[8] = notes.joined(separator: "; ")
            table.append(row)
        }

        let proxyUp = SandboxNet.isListening(state.proxyPort)
        let metricsUp = SandboxNet.isListening(state.metricsPort)
        table.append(["proxy", String(state.proxyPort), proxyUp ? "listening" : "stopped", "", "", "", "", "",
                      proxyUp ? "" : "start it: causeway --config \(state.configPath)"])
        table.append(["metrics", String(state.metricsPort), metricsUp ? "listening" : "stopped", "", "", "", "", "", ""])

        var lines = ["Sandbox \(state.dir)" + (host.version.isEmpty ? "" : " (PostgreSQL \(host.version))")]
        lines.append(contentsOf: formatTable(table))
        return lines.joined(separator: "\n")
    }

    private static func firstLine(_ error: Error) -> String {
        let text = String(describing: error)
        let lines = text.split(separator: "\n")
        return String(lines.count > 1 ? lines[1] : lines.first ?? "")
    }

    private static func formatTable(_ rows: [[String]]) -> [String] {
        guard let columns = rows.first?.count else { return [] }
        let widths = (0..<columns).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == columns - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }
}

/// Where the PostgreSQL binaries are and whom the servers run as.
struct SandboxHost: Sendable {
    var bindir: String
    var version: String
    var serverUser: SandboxServerUser?
    var runuserPath: String?

    func runner(workDir: String) -> SandboxRunner {
        SandboxRunner(bindir: bindir, serverUser: serverUser, runuserPath: runuserPath, workDir: workDir)
    }

    static let requiredTools = ["initdb", "pg_ctl", "postgres", "pg_basebackup", "psql"]

    /// When root, the servers run as `postgres`, or for an existing sandbox as the owner of its
    /// directory (a sandbox made by a non-root user runs as that user).
    static func detect(preferredBindir: String? = nil, existingDir: String? = nil) throws -> SandboxHost {
        let bindir = try findBindir(preferred: preferredBindir)
        var serverUser: SandboxServerUser?
        var runuserPath: String?
        if geteuid() == 0 {
            var owner: SandboxServerUser?
            if let dir = existingDir, let uid = SandboxFiles.owner(of: dir), uid != 0 {
                owner = SandboxServerUser.lookup(uid: uid)
            }
            guard let user = owner ?? SandboxServerUser.lookup() else {
                throw SandboxError("running as root, but there is no `postgres` user to run the servers as (initdb refuses root); install postgresql (scripts/install-deps.sh) or run as a non-root user")
            }
            guard let runuser = SandboxProcess.firstExecutable(["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]) else {
                throw SandboxError("running as root, but runuser(1) was not found to run the servers as postgres; install util-linux or run as a non-root user")
            }
            serverUser = user
            runuserPath = runuser
        }
        var version = ""
        if let result = try? SandboxProcess.run(bindir + "/postgres", ["--version"], timeout: 30), result.succeeded {
            // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
            let words = result.output.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if let i = words.firstIndex(of: "(PostgreSQL)"), i + 1 < words.count { version = String(words[i + 1]) }
        }
        return SandboxHost(bindir: bindir, version: version, serverUser: serverUser, runuserPath: runuserPath)
    }

    /// CAUSEWAY_PG_BINDIR, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
    static func findBindir(preferred: String?) throws -> String {
        func complete(_ dir: String) -> Bool {
            requiredTools.allSatisfy { FileManager.default.isExecutableFile(atPath: dir + "/" + $0) }
        }
        var tried: [String] = []
        let env = ProcessInfo.processInfo.environment
        if let dir = env["CAUSEWAY_PG_BINDIR"], !dir.isEmpty {
            guard complete(dir) else {
                throw SandboxError("CAUSEWAY_PG_BINDIR=\(dir) does not hold \(requiredTools.joined(separator: ", "))")
            }
            return dir
        }
        if let dir = preferred, complete(dir) { return dir }
        let path = (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        if let pgConfig = SandboxProcess.firstExecutable(path.map { $0 + "/pg_config" }),
           let result = try? SandboxProcess.run(pgConfig, ["--bindir"], timeout: 30), result.succeeded {
            let dir = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
            if complete(dir) { return dir }
            tried.append("\(dir) (from \(pgConfig) --bindir)")
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { name -> (Double, String)? in Double(name).map { ($0, name) } }
            .sorted { $0.0 > $1.0 }
        for (_, name) in versions {
            let dir = "\(root)/\(name)/bin"
            if complete(dir) { return dir }
            tried.append(dir)
        }
        let where_ = tried.isEmpty ? "" : " (looked in: \(tried.joined(separator: ", ")))"
        throw SandboxError("PostgreSQL server binaries (\(requiredTools.joined(separator: ", "))) not found\(where_); install postgresql-15 (`make deps`) or set CAUSEWAY_PG_BINDIR")
    }
}

/// The steps of a fresh `up`, remembering which servers it started so a failure can stop them.
struct SandboxBuilder {
    let state: SandboxState
    let host: SandboxHost
    private(set) var started: [String] = []

    init(state: SandboxState, host: SandboxHost) {
        self.state = state
        self.host = host
    }

    var runner: SandboxRunner { host.runner(workDir: state.dir) }

    mutating func build(log: (String) -> Void) throws {
        let dir = state.dir
        let owner = host.serverUser
        if let owner {
            try SandboxFiles.chown(dir, to: owner)
            for changed in try SandboxFiles.ensureTraversable(dir, by: owner) {
                log("made \(changed) searchable by \(owner.name) (chmod o+x) so the servers can reach \(dir)")
            }
        }
        try SandboxFiles.write("causeway sandbox\n", to: dir + "/" + SandboxDefaults.markerFile, owner: owner)
        try checkExtension()

        let versionText = host.version.isEmpty ? "" : "PostgreSQL \(host.version) "
        log("using \(versionText)binaries in \(host.bindir)" + (owner.map { "; servers run as \($0.name)" } ?? ""))
        let replicaPorts = state.replicaPorts.isEmpty ? "none" : state.replicaPorts.map(String.init).joined(separator: " ")
        log("ports: primary \(state.primaryPort), replicas \(replicaPorts), proxy \(state.proxyPort), metrics \(state.metricsPort)")

        // Primary.
        let primary = SandboxDefaults.primaryName
        let primaryData = state.dataDir(primary)
        log("initdb \(primaryData)")
        let pwfile = dir + "/.pwfile"
        try SandboxFiles.write(SandboxDefaults.superuserPassword + "\n", to: pwfile, mode: 0o600, owner: owner)
        let initdb = try runner.pg("initdb", [
            "-D", primaryData, "-U", SandboxDefaults.superuser, "--pwfile=\(pwfile)",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync",
        ], timeout: 180)
        try? FileManager.default.removeItem(atPath: pwfile)
        guard initdb.succeeded else { throw SandboxError("initdb failed:\n\(initdb.output)") }
        let socketDir = primarySocketDir()
        if socketDir.isEmpty { log("\(dir) is too long for a unix socket path; the servers listen on TCP only") }
        try SandboxFiles.append(primaryConfig(socketDir: socketDir), to: primaryData + "/postgresql.conf")
        try SandboxFiles.write(hbaConfig(), to: primaryData + "/pg_hba.conf", mode: 0o600, owner: owner)
        try start(primary, log: log)

        log("creating roles app, app_md5, app_trust, app_scram and database app")
        try runner.script(port: state.primaryPort, setupSQL())
        let passwords = try runner.query(port: state.primaryPort,
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('app_scram', 'app_md5') ORDER BY rolname")
        let stored = Dictionary(uniqueKeysWithValues: passwords.filter { $0.count >= 2 }.map { ($0[0], $0[1]) })
        guard let verifier = stored["app_scram"], verifier.hasPrefix("SCRAM-SHA-256$") else {
            throw SandboxError("app_scram's password was not stored as a SCRAM verifier (got \(stored["app_scram"] ?? "nothing"))")
        }
        guard stored["app_md5"]?.hasPrefix("md5") == true else {
            throw SandboxError("app_md5's password was not stored as md5")
        }

        // Replicas.
        for (index, name) in state.replicaNames.enumerated() {
            let data = state.dataDir(name)
            log("pg_basebackup \(name) (slot \(name)) into \(data)")
            let backup = try runner.pg("pg_basebackup", [
                "-D", data, "-h", SandboxDefaults.host, "-p", String(state.primaryPort), "-U", SandboxDefaults.superuser,
                "-X", "stream", "-R", "-C", "-S", name, "-c", "fast", "--no-sync",
            ], timeout: 300)
            guard backup.succeeded else { throw SandboxError("pg_basebackup for \(name) failed:\n\(backup.output)") }
            try SandboxFiles.append(replicaConfig(name: name, port: state.replicaPorts[index]), to: data + "/postgresql.conf")
            try start(name, log: log)
        }
        if !state.replicaNames.isEmpty {
            try Self.waitForStreaming(runner: runner, state: state, log: log)
        }

        // Generated files; sandbox.env last: its presence means the sandbox is complete.
        try SandboxFiles.write(state.proxyConfigText(scramVerifier: verifier), to: state.configPath, owner: owner)
        try SandboxFiles.write(state.envFileText(), to: state.envPath, owner: owner)
        log("wrote \(state.configPath) and \(state.envPath)")
    }

    /// Stops (immediately) every server this build started, newest first.
    func stopStarted() {
        for name in started.reversed() {
            _ = try? runner.pg("pg_ctl", ["-D", state.dataDir(name), "-m", "immediate", "-w", "-t", "30", "stop"], timeout: 60)
        }
    }

    private mutating func start(_ name: String, log: (String) -> Void) throws {
        log("starting \(name) on 127.0.0.1:\(state.nodes.first { $0.name == name }?.port ?? 0)")
        started.append(name)
        let result = try runner.pg("pg_ctl", ["-D", state.dataDir(name), "-l", state.logFile(name), "-w", "-t", "60", "start"], timeout: 90)
        guard result.succeeded else { throw SandboxError("\(name) did not start:\n\(result.output)") }
    }

    /// Polls the primary's pg_stat_replication until every replica is streaming.
    static func waitForStreaming(runner: SandboxRunner, state: SandboxState, log: (String) -> Void, timeout: TimeInterval = 60) throws {
        log("waiting for \(state.replicaNames.joined(separator: ", ")) to stream")
        let deadline = Date().addingTimeInterval(timeout)
        var missing = Set(state.replicaNames)
        while true {
            let rows = try runner.query(port: state.primaryPort, "SELECT application_name, state FROM pg_stat_replication")
            let streaming = Set(rows.filter { $0.count >= 2 && $0[1] == "streaming" }.map { $0[0] })
            missing = Set(state.replicaNames).subtracting(streaming)
            if missing.isEmpty { return }
            if Date() > deadline {
                throw SandboxError("replica(s) \(missing.sorted().joined(separator: ", ")) not streaming after \(Int(timeout)) s (see their logs in \(state.dir))")
            }
            usleep(200_000)
        }
    }

    /// pg_stat_statements must be installed next to the server (shared_preload_libraries needs it).
    private func checkExtension() throws {
        let pgConfig = host.bindir + "/pg_config"
        guard FileManager.default.isExecutableFile(atPath: pgConfig),
              let result = try? SandboxProcess.run(pgConfig, ["--pkglibdir", "--sharedir"], timeout: 30), result.succeeded
        else { return }
        let dirs = result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard dirs.count == 2 else { return }
        let library = ["so", "dylib"].contains { SandboxFiles.exists("\(dirs[0])/pg_stat_statements.\($0)") }
        let control = SandboxFiles.exists("\(dirs[1])/extension/pg_stat_statements.control")
        guard library && control else {
            throw SandboxError("the pg_stat_statements extension is not installed for the PostgreSQL in \(host.bindir); install postgresql-contrib (`make deps`)")
        }
    }

    private static func confString(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// D, or "" (no unix socket) when D is too long for sockaddr_un.sun_path (108 bytes with the NUL).
    private func primarySocketDir() -> String {
        (state.dir + "/.s.PGSQL.65535.lock").utf8.count <= 107 ? state.dir : ""
    }

    private func primaryConfig(socketDir: String) -> String {
        let senders = state.replicaPorts.count + 10
        return """

        # --- causeway sandbox ---
        listen_addresses = '\(SandboxDefaults.host)'
        port = \(state.primaryPort)
        unix_socket_directories = \(Self.confString(socketDir))
        cluster_name = '\(SandboxDefaults.primaryName)'
        max_connections = 200
        wal_level = replica
        max_wal_senders = \(senders)
        max_replication_slots = \(senders)
        hot_standby = on
        hot_standby_feedback = on
        wal_receiver_status_interval = 1s
        fsync = off
        shared_preload_libraries = 'pg_stat_statements'
        logging_collector = off
        log_destination = 'stderr'
        log_line_prefix = '%m [%p] %q%u@%d '

        """
    }

    private func replicaConfig(name: String, port: Int) -> String {
        var text = """

        # --- causeway sandbox: \(name) ---
        port = \(port)
        cluster_name = \(Self.confString(name))

        """
        if name == state.delayedReplica {
            text += "recovery_min_apply_delay = '\(state.delayMs)ms'\n"
        }
        return text
    }

    private func hbaConfig() -> String {
        """
        # Written by `causeway sandbox up`. First match wins.
        # TYPE  DATABASE     USER       ADDRESS        METHOD
        local   all          all                       trust
        host    all          app_trust  127.0.0.1/32   trust
        host    all          app_md5    127.0.0.1/32   md5
        host    replication  all        127.0.0.1/32   trust
        host    all          all        127.0.0.1/32   scram-sha-256

        """
    }

    private func setupSQL() -> String {
        let pw = SandboxDefaults.appPassword
        return """
        SET password_encryption = 'scram-sha-256';
        ALTER ROLE postgres PASSWORD '\(SandboxDefaults.superuserPassword)';
        CREATE ROLE app LOGIN PASSWORD '\(pw)';
        CREATE ROLE app_scram LOGIN PASSWORD '\(pw)';
        CREATE ROLE app_trust LOGIN PASSWORD '\(pw)';
        SET password_encryption = 'md5';
        CREATE ROLE app_md5 LOGIN PASSWORD '\(pw)';
        RESET password_encryption;
        CREATE DATABASE app OWNER app;
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
        \\connect app
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
        GRANT ALL ON SCHEMA public TO app_md5, app_trust, app_scram;
        ALTER DEFAULT PRIVILEGES FOR ROLE app, app_md5, app_trust, app_scram IN SCHEMA public
            GRANT ALL ON TABLES TO app, app_md5, app_trust, app_scram;
        ALTER DEFAULT PRIVILEGES FOR ROLE app, app_md5, app_trust, app_scram IN SCHEMA public
            GRANT ALL ON SEQUENCES TO app, app_md5, app_trust, app_scram;

        """
    }
}
