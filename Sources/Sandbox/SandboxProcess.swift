// Subprocesses for the sandbox cluster: PostgreSQL's own tools, run with argument arrays (never a
// shell), as user `postgres` through runuser(1) when we are root, with output captured to a file.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a finished subprocess left behind.
struct SandboxCommandResult: Sendable {
    /// Exit status (or the signal number when it was killed).
    var status: Int32
    /// Standard output and standard error, interleaved as written.
    var output: String

    var succeeded: Bool { status == 0 }
}

/// The account the servers run as when Causeway is invoked as root (initdb refuses to run as root).
struct SandboxServerUser: Sendable {
    var name: String
    var uid: uid_t
    var gid: gid_t
    var home: String

    /// `postgres` (or `name`), looked up in the password database.
    static func lookup(_ name: String = "postgres") -> SandboxServerUser? {
        guard let entry = getpwnam(name) else { return nil }
        return SandboxServerUser(entry.pointee)
    }

    static func lookup(uid: uid_t) -> SandboxServerUser? {
        guard let entry = getpwuid(uid) else { return nil }
        return SandboxServerUser(entry.pointee)
    }

    init(name: String, uid: uid_t, gid: gid_t, home: String) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
    }

    private init?(_ entry: passwd) {
        guard let name = entry.pw_name else { return nil }
        self.name = String(cString: name)
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid
        self.home = entry.pw_dir.map { String(cString: $0) } ?? "/"
    }
}

/// Runs programs for the sandbox. When `serverUser` is set, server tools run through
/// `runuser -u <user> --`; everything runs in `workDir` (a directory the server user can enter) with
/// the caller's PG* variables removed, so a stray PGHOST or PGPORT cannot redirect a command.
struct SandboxRunner: Sendable {
    var bindir: String
    var serverUser: SandboxServerUser?
    var runuserPath: String?
    var workDir: String

    /// Path of a PostgreSQL program in the server bindir.
    func tool(_ name: String) -> String { bindir + "/" + name }

    /// Runs a PostgreSQL tool from `bindir` as the server user.
    func pg(
        _ toolName: String,
        _ arguments: [String],
        input: String? = nil,
        environment extra: [String: String] = [:],
        timeout: TimeInterval = 120
    ) throws -> SandboxCommandResult {
        var executable = tool(toolName)
        var args = arguments
        if let user = serverUser {
            guard let runuser = runuserPath else {
                throw SandboxError("running as root, but runuser(1) was not found; install util-linux or run as a non-root user")
            }
            args = ["-u", user.name, "--", executable] + arguments
            executable = runuser
        }
        var env = extra
        if let user = serverUser { env["HOME"] = user.home }
        return try SandboxProcess.run(executable, args, input: input, environment: env, workDir: workDir, timeout: timeout)
    }

    /// Runs `psql` against 127.0.0.1:`port` as the sandbox superuser and returns the unaligned rows,
    /// fields split on "|". Throws with psql's message when a statement fails.
    func query(port: Int, database: String = "postgres", _ sql: String, timeout: TimeInterval = 30) throws -> [[String]] {
        let result = try psql(port: port, database: database, arguments: ["-A", "-t", "-F", "|", "-c", sql], timeout: timeout)
        guard result.succeeded else {
            throw SandboxError("query on port \(port) failed: \(sql)\n\(result.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result.output
            .split(separator: "\n", omittingEmptySubsequences: true)
            .map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }

    /// Runs a psql script from standard input (stops at the first error).
    func script(port: Int, database: String = "postgres", _ sql: String, timeout: TimeInterval = 60) throws {
        let result = try psql(port: port, database: database, arguments: ["-q"], input: sql, timeout: timeout)
        guard result.succeeded else {
            throw SandboxError("setup SQL on port \(port) failed:\n\(result.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    private func psql(port: Int, database: String, arguments: [String], input: String? = nil, timeout: TimeInterval) throws -> SandboxCommandResult {
        let base = ["-X", "-v", "ON_ERROR_STOP=1", "-h", SandboxDefaults.host, "-p", String(port), "-U", SandboxDefaults.superuser, "-d", database]
        return try pg(
            "psql", base + arguments, input: input,
            environment: ["PGPASSWORD": SandboxDefaults.superuserPassword, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "causeway-sandbox"],
            timeout: timeout
        )
    }
}

/// Process execution with captured output and a deadline.
enum SandboxProcess {
    /// Runs `executable` with `arguments` (no shell). Output goes to a temporary file rather than a
    /// pipe: `pg_ctl start` leaves a postmaster behind that could otherwise hold a pipe open.
    static func run(
        _ executable: String,
        _ arguments: [String],
        input: String? = nil,
        environment extra: [String: String] = [:],
        workDir: String? = nil,
        timeout: TimeInterval = 120
    ) throws -> SandboxCommandResult {
        let fm = FileManager.default
        guard fm.isExecutableFile(atPath: executable) else {
            throw SandboxError("cannot execute \(executable): not found or not executable")
        }
        let tmp = fm.temporaryDirectory
        let outURL = tmp.appendingPathComponent("causeway-sandbox-\(UUID().uuidString).out")
        guard fm.createFile(atPath: outURL.path, contents: nil) else {
            throw SandboxError("cannot create a temporary file in \(tmp.path)")
        }
        defer { try? fm.removeItem(at: outURL) }
        let outHandle = try FileHandle(forWritingTo: outURL)
        defer { try? outHandle.close() }

        var inURL: URL?
        var inHandle: FileHandle?
        if let input {
            let url = tmp.appendingPathComponent("causeway-sandbox-\(UUID().uuidString).in")
            guard fm.createFile(atPath: url.path, contents: Data(input.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw SandboxError("cannot create a temporary file in \(tmp.path)")
            }
            inURL = url
            inHandle = try FileHandle(forReadingFrom: url)
        }
        defer {
            try? inHandle?.close()
            if let inURL { try? fm.removeItem(at: inURL) }
        }

        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        for (key, value) in extra { env[key] = value }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = env
        if let workDir { process.currentDirectoryURL = URL(fileURLWithPath: workDir) }
        process.standardInput = inHandle ?? FileHandle.nullDevice
        process.standardOutput = outHandle
        process.standardError = outHandle
        do {
            try process.run()
        } catch {
            throw SandboxError("cannot start \(executable): \(error.localizedDescription)")
        }

        let (status, timedOut) = wait(for: process, timeout: timeout)
        let output = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        if timedOut {
            let name = (executable as NSString).lastPathComponent
            throw SandboxError("\(name) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s\n\(output)")
        }
        return SandboxCommandResult(status: status, output: output)
    }

    /// Waits for `process` to exit and returns its status (128 + signal when killed).
    ///
    /// Not `Process.waitUntilExit()`: on Linux, Foundation learns of a child's exit when a socket it
    /// hands the child is closed, and `pg_ctl start` passes that socket on to the postmaster it
    /// leaves running, so Foundation would not notice pg_ctl's exit until the server stops. Instead
    /// the child is polled with waitid(WNOWAIT), which sees it exit without reaping it (Foundation
    /// still reaps it). After `timeout` it gets SIGTERM, then SIGKILL.
    private static func wait(for process: Process, timeout: TimeInterval) -> (status: Int32, timedOut: Bool) {
        #if os(Linux)
        let pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        var killAt: Date?
        while true {
            var info = siginfo_t()
            let rc = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            if rc == 0, info._sifields._sigchld.si_pid == pid {
                let code = info._sifields._sigchld.si_status
                let status = info.si_code == Int32(CLD_EXITED) ? code : 128 + code
                return (status, timedOut)
            }
            if rc == -1 && errno == ECHILD {
                // Foundation reaped it already, so its own record is (about to be) complete.
                process.waitUntilExit()
                return (process.terminationStatus, timedOut)
            }
            let now = Date()
            if !timedOut && now > deadline {
                timedOut = true
                kill(pid, SIGTERM)
                killAt = now.addingTimeInterval(5)
            } else if let at = killAt, now > at {
                kill(pid, SIGKILL)
                killAt = nil
            }
            usleep(10_000)
        }
        #else
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                process.terminate()
                break
            }
            usleep(10_000)
        }
        process.waitUntilExit()
        return (process.terminationStatus, timedOut)
        #endif
    }

    /// The first of `candidates` that exists and is executable.
    static func firstExecutable(_ candidates: [String]) -> String? {
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
