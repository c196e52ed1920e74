// A real PostgreSQL cluster for the integration tests, built with the proxy's sandbox
// (`Sandbox.up`/`Sandbox.down`), plus blocking helpers to run SQL and pg_ctl from the test thread.
// Only this file imports Proxy; the monitor tests see plain ports and names.

import CLibPQ
import Foundation
import Sandbox

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One sandbox cluster: a primary and N streaming replicas on loopback ports.
struct TestCluster {
    let dir: String
    let bindir: String
    let serverUser: String
    let primaryPort: Int
    let replicaPorts: [Int]
    let replicaNames: [String]

    static let host = "127.0.0.1"
    static let user = "postgres"
    static let password = "postgres"

    /// Starts a fresh cluster in a new directory under /tmp.
    static func start(replicas: Int) throws -> TestCluster {
        let dir = "/tmp/causeway-lagmon-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        _ = try Sandbox.up(SandboxOptions(dir: dir, replicas: replicas), log: { _ in })
        do {
            return try load(dir: dir)
        } catch {
            try? Sandbox.down(dir: dir)
            throw error
        }
    }

    /// Reads what `Sandbox.up` wrote to `<dir>/sandbox.env`.
    static func load(dir: String) throws -> TestCluster {
        let text = try String(contentsOfFile: dir + "/sandbox.env", encoding: .utf8)
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") {
                value = String(value.dropFirst().dropLast()).replacingOccurrences(of: "'\\''", with: "'")
            }
            values[String(line[..<eq])] = value
        }
        guard let primary = values["PRIMARY_PORT"].flatMap({ Int($0) }), let bindir = values["BINDIR"] else {
            throw FixtureError("sandbox.env in \(dir) lacks PRIMARY_PORT or BINDIR:\n\(text)")
        }
        let ports = (values["REPLICA_PORTS"] ?? "").split(separator: " ").compactMap { Int($0) }
        var names = (values["REPLICA_NAMES"] ?? "").split(separator: " ").map(String.init)
        if names.count != ports.count { names = ports.indices.map { "replica\($0 + 1)" } }
        return TestCluster(
            dir: dir, bindir: bindir, serverUser: values["SERVER_USER"] ?? "", primaryPort: primary,
            replicaPorts: ports, replicaNames: names)
    }

    /// Stops every server and removes the directory; never throws (used in `defer`).
    func down() {
        do {
            try Sandbox.down(dir: dir)
        } catch {
            // Last resort so no server outlives the test run.
            for name in ["primary"] + replicaNames {
                _ = try? pgctl(["-D", dir + "/" + name, "-m", "immediate", "-w", "-t", "20", "stop"])
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Stops one server (fast shutdown) and waits for it to be gone.
    func stop(_ name: String) throws {
        let status = try pgctl(["-D", dir + "/" + name, "-m", "fast", "-w", "-t", "30", "stop"])
        guard status == 0 else { throw FixtureError("pg_ctl stop \(name) exited with \(status)") }
    }

    /// Starts one server again and waits until it accepts connections.
    func restart(_ name: String) throws {
        let status = try pgctl(["-D", dir + "/" + name, "-l", dir + "/" + name + ".log", "-w", "-t", "30", "start"])
        guard status == 0 else { throw FixtureError("pg_ctl start \(name) exited with \(status)") }
    }

    /// Runs pg_ctl as the server user (initdb'd clusters refuse to be run by root).
    ///
    /// posix_spawn + waitpid rather than Foundation's Process: on Linux, Process notices a child's
    /// exit through a descriptor that `pg_ctl start` hands on to the server it leaves running, so
    /// `waitUntilExit()` would wait for the server to stop.
    private func pgctl(_ arguments: [String], timeout: TimeInterval = 60) throws -> Int32 {
        let pgctl = bindir + "/pg_ctl"
        // `cd` first: the server user may not be allowed into the test's working directory.
        let command: [String] = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", dir]
            + (serverUser.isEmpty ? [pgctl] : ["/usr/sbin/runuser", "-u", serverUser, "--", pgctl]) + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = command.map { strdup($0) } + [nil]
        let environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, command[0], &actions, nil, argv, envp)
        guard rc == 0 else { throw FixtureError("posix_spawn pg_ctl: \(rc)") }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let done = waitpid(pid, &status, WNOHANG)
            if done == pid { break }
            if done < 0 { throw FixtureError("waitpid: \(errno)") }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw FixtureError("pg_ctl \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
            }
            usleep(20_000)
        }
        // WIFEXITED / WEXITSTATUS are macros: decode the status word by hand.
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// Runs SQL (blocking libpq; fine on a test thread) and returns the rows of the last result.
    @discardableResult
    func sql(port: Int, database: String = "postgres", _ statement: String) throws -> [[String?]] {
        let info = "host=\(Self.host) port=\(port) user=\(Self.user) password=\(Self.password) dbname=\(database) connect_timeout=10"
        guard let conn = PQconnectdb(info) else { throw FixtureError("PQconnectdb returned NULL") }
        defer { PQfinish(conn) }
        guard PQstatus(conn) == CONNECTION_OK else {
            throw FixtureError("connect to port \(port): \(String(cString: PQerrorMessage(conn)))")
        }
        guard let result = PQexec(conn, statement) else { throw FixtureError("PQexec returned NULL") }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK:
            return (0..<PQntuples(result)).map { row in
                (0..<PQnfields(result)).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                }
            }
        case PGRES_COMMAND_OK:
            return []
        default:
            throw FixtureError("\(statement) on port \(port): \(String(cString: PQresultErrorMessage(result)))")
        }
    }
}
