// Pieces of the sandbox that are not subprocesses: the error type, fixed names and passwords, the
// state file (sandbox.env), the generated proxy config, loopback ports and file ownership.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A sandbox failure, with a message that says what went wrong and what to do about it.
public struct SandboxError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Fixed names of the sandbox (contracts.md, "Sandbox").
enum SandboxDefaults {
    static let host = "127.0.0.1"
    static let superuser = "postgres"
    static let superuserPassword = "postgres"
    static let appPassword = "secret"
    static let database = "app"
    static let primaryName = "primary"
    static let markerFile = ".causeway-sandbox"
    static let envFile = "sandbox.env"
    static let configFile = "causeway.toml"

    static func replicaName(_ index: Int) -> String { "replica\(index)" }
}

/// What `up` recorded in D/sandbox.env; `status` and `down` read it back.
struct SandboxState: Sendable {
    var bindir: String
    var dir: String
    var primaryPort: Int
    var replicaPorts: [Int]
    var proxyPort: Int
    var metricsPort: Int
    var delayMs: Int
    var serverUser: String

    var replicaNames: [String] { replicaPorts.indices.map { SandboxDefaults.replicaName($0 + 1) } }
    /// The replica with recovery_min_apply_delay, if any (always the last one).
    var delayedReplica: String? { delayMs > 0 ? replicaNames.last : nil }
    /// (name, port) for every server, primary first.
    var nodes: [(name: String, port: Int)] {
        [(SandboxDefaults.primaryName, primaryPort)] + zip(replicaNames, replicaPorts).map { ($0, $1) }
    }
    var configPath: String { dir + "/" + SandboxDefaults.configFile }
    var envPath: String { dir + "/" + SandboxDefaults.envFile }

    func dataDir(_ node: String) -> String { dir + "/" + node }
    func logFile(_ node: String) -> String { dir + "/" + node + ".log" }

    /// Shell-sourceable text: `. D/sandbox.env`.
    func envFileText() -> String {
        func q(_ value: String) -> String { SandboxShellWords.quote(value) }
        let lines = [
            "# Written by `causeway sandbox up`. Source it from a shell: . \(q(envPath))",
            "BINDIR=\(q(bindir))",
            "DIR=\(q(dir))",
            "HOST=\(SandboxDefaults.host)",
            "PRIMARY_PORT=\(primaryPort)",
            "REPLICA_PORTS=\(q(replicaPorts.map(String.init).joined(separator: " ")))",
            "REPLICA_NAMES=\(q(replicaNames.joined(separator: " ")))",
            "DELAY_MS=\(delayMs)",
            "DELAYED_REPLICA=\(q(delayedReplica ?? ""))",
            "PROXY_PORT=\(proxyPort)",
            "METRICS_PORT=\(metricsPort)",
            "CONFIG=\(q(configPath))",
            "SERVER_USER=\(q(serverUser))",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Parses what `envFileText()` wrote.
    static func load(dir: String) throws -> SandboxState {
        let path = dir + "/" + SandboxDefaults.envFile
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SandboxError("cannot read \(path)")
        }
        var values: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<eq])
            values[key] = SandboxShellWords.unquote(String(line[line.index(after: eq)...]))
        }
        func required(_ key: String) throws -> String {
            guard let value = values[key] else { throw SandboxError("\(path) has no \(key); remove the directory and run `causeway sandbox up` again") }
            return value
        }
        func port(_ key: String) throws -> Int {
            guard let value = Int(try required(key)) else { throw SandboxError("\(path): \(key) is not a port number") }
            return value
        }
        let replicaPorts = try required("REPLICA_PORTS").split(separator: " ").map { word -> Int in
            guard let value = Int(word) else { throw SandboxError("\(path): REPLICA_PORTS has a bad port \(word)") }
            return value
        }
        return SandboxState(
            bindir: try required("BINDIR"),
            dir: dir,
            primaryPort: try port("PRIMARY_PORT"),
            replicaPorts: replicaPorts,
            proxyPort: try port("PROXY_PORT"),
            metricsPort: try port("METRICS_PORT"),
            delayMs: Int(values["DELAY_MS"] ?? "0") ?? 0,
            serverUser: values["SERVER_USER"] ?? ""
        )
    }

    /// The proxy config for this cluster (contracts.md, "Config schema").
    func proxyConfigText(scramVerifier: String) -> String {
        func s(_ value: String) -> String { SandboxTOML.string(value) }
        var out = """
        # Written by `causeway sandbox up` for the sandbox cluster in \(dir).
        # Start the proxy with: causeway --config \(configPath)

        [proxy]
        listen = \(s("\(SandboxDefaults.host):\(proxyPort)"))
        metrics_listen = \(s("\(SandboxDefaults.host):\(metricsPort)"))
        auth_type = "scram-sha-256"
        admin_users = [\(s(SandboxDefaults.superuser))]

        [monitor]
        user = \(s(SandboxDefaults.superuser))
        password = \(s(SandboxDefaults.superuserPassword))

        """
        for (name, port) in nodes {
            out += """

            [[backends]]
            name = \(s(name))
            host = \(s(SandboxDefaults.host))
            port = \(port)
            role = "auto"

            """
        }
        let users: [(String, String)] = [
            ("app", SandboxDefaults.appPassword),
            ("app_md5", SandboxDefaults.appPassword),
            ("app_trust", SandboxDefaults.appPassword),
            (SandboxDefaults.superuser, SandboxDefaults.superuserPassword),
        ]
        for (name, password) in users {
            out += """

            [[users]]
            name = \(s(name))
            password = \(s(password))

            """
        }
        out += """

        [[users]]
        name = "app_scram"
        scram = \(s(scramVerifier))

        """
        return out
    }
}

/// Minimal POSIX shell quoting for sandbox.env.
enum SandboxShellWords {
    static func quote(_ value: String) -> String {
        let safe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+,")
        if !value.isEmpty, value.unicodeScalars.allSatisfy({ safe.contains($0) }) { return value }
        return "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Undoes `quote`: single-quoted runs, double-quoted runs (backslash escapes) and bare text.
    static func unquote(_ text: String) -> String {
        var out = ""
        var chars = text.makeIterator()
        while let c = chars.next() {
            switch c {
            case "'":
                while let d = chars.next(), d != "'" { out.append(d) }
            case "\"":
                while let d = chars.next(), d != "\"" {
                    if d == "\\", let e = chars.next() { out.append(e) } else { out.append(d) }
                }
            case "\\":
                if let d = chars.next() { out.append(d) }
            default:
                out.append(c)
            }
        }
        return out
    }
}

enum SandboxTOML {
    /// A TOML basic string.
    static func string(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    out += String(format: "\\u%04X", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Loopback ports.
enum SandboxNet {
    /// `count` distinct ports the kernel reports free on 127.0.0.1: each is bound to port 0, read
    /// back, and all are closed together so no two are the same.
    static func freeLoopbackPorts(_ count: Int) throws -> [Int] {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let fd = try socketFD()
            fds.append(fd)
            guard bindLoopback(fd, port: 0) == 0 else {
                throw SandboxError("cannot bind a loopback port: \(String(cString: strerror(errno)))")
            }
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let rc = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            guard rc == 0 else { throw SandboxError("getsockname failed: \(String(cString: strerror(errno)))") }
            ports.append(Int(UInt16(bigEndian: addr.sin_port)))
        }
        return ports
    }

    /// True when a server could bind 127.0.0.1:`port` now.
    static func isFree(_ port: Int) -> Bool {
        guard let fd = try? socketFD() else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return bindLoopback(fd, port: port) == 0
    }

    /// True when something accepts TCP connections on 127.0.0.1:`port`.
    static func isListening(_ port: Int) -> Bool {
        guard let fd = try? socketFD() else { return false }
        defer { close(fd) }
        var addr = loopback(port: port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0
    }

    private static func socketFD() throws -> Int32 {
        #if os(Linux)
        let type = Int32(SOCK_STREAM.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { throw SandboxError("cannot create a socket: \(String(cString: strerror(errno)))") }
        return fd
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        #if !os(Linux)
        addr.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return addr
    }

    private static func bindLoopback(_ fd: Int32, port: Int) -> Int32 {
        var addr = loopback(port: port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}

/// Files and directories.
enum SandboxFiles {
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    static func write(_ text: String, to path: String, mode: Int = 0o644, owner: SandboxServerUser? = nil) throws {
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw SandboxError("cannot write \(path): \(error.localizedDescription)")
        }
        chmod(path, mode_t(mode))
        if let owner { try chown(path, to: owner) }
    }

    static func append(_ text: String, to path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else { throw SandboxError("cannot open \(path) for writing") }
        defer { try? handle.close() }
        do {
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(text.utf8))
        } catch {
            throw SandboxError("cannot append to \(path): \(error.localizedDescription)")
        }
    }

    /// The uid that owns `path`.
    static func owner(of path: String) -> uid_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_uid : nil
    }

    static func chown(_ path: String, to user: SandboxServerUser) throws {
        #if canImport(Glibc) || canImport(Musl)
        let rc = Glibc.chown(path, user.uid, user.gid)
        #else
        let rc = Darwin.chown(path, user.uid, user.gid)
        #endif
        guard rc == 0 else {
            throw SandboxError("cannot chown \(path) to \(user.name): \(String(cString: strerror(errno)))")
        }
    }

    /// The last `lines` lines of a text file ("" when it is missing).
    static func tail(_ path: String, lines: Int = 30) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        return all.suffix(lines + 1).joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Makes every ancestor of `path` searchable by `user`, adding o+x where it is missing, so the
    /// server user can reach a sandbox directory created by root (e.g. under /root). Returns the
    /// directories it changed.
    static func ensureTraversable(_ path: String, by user: SandboxServerUser) throws -> [String] {
        var changed: [String] = []
        var components = (path as NSString).pathComponents
        components.removeLast()  // the directory itself is chowned to the server user
        var current = ""
        for component in components {
            current = current.isEmpty ? component : (current as NSString).appendingPathComponent(component)
            var info = stat()
            guard stat(current, &info) == 0 else { continue }
            let mode = info.st_mode
            let searchable: Bool
            if info.st_uid == user.uid {
                searchable = mode & S_IXUSR != 0
            } else if info.st_gid == user.gid {
                searchable = mode & S_IXGRP != 0
            } else {
                searchable = mode & S_IXOTH != 0
            }
            if !searchable {
                guard chmod(current, (mode & 0o7777) | S_IXOTH) == 0 else {
                    throw SandboxError("\(user.name) cannot enter \(current) and chmod o+x failed: \(String(cString: strerror(errno))); choose a --dir under /tmp")
                }
                changed.append(current)
            }
        }
        return changed
    }
}
