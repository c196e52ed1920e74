// Everything `causeway-bench run` resolved from its flags and workload file, ready to execute.

import BenchCore

struct RunPlan: Sendable {
    var workload: Workload
    /// Writes go here (and reads too unless `read` is set).
    var write: ConnInfo
    var read: ConnInfo?
    var admin: ConnInfo?
    var schedule: LagSchedule?
    /// `--replica name=conninfo`: replicas reachable directly (lag injection, lag sampling, labels).
    var replicas: [(name: String, info: ConnInfo)]
    /// Credentials for superuser work on servers (lag injection and server-side sampling).
    var lagUser: String?
    var lagPassword: String?
    var sampleLag: Bool
    var quiet: Bool
    var startedAt: String

    var isSplit: Bool { read != nil }

    /// A connection to a server for superuser work: `info` with the lag credentials, database
    /// postgres when it pointed at the admin console.
    func superuser(_ info: ConnInfo) -> ConnInfo {
        var changes: [String: String?] = [:]
        if let lagUser { changes["user"] = lagUser }
        if let lagPassword { changes["password"] = lagPassword }
        if info["dbname"] == "causeway" || info["dbname"] == nil { changes["dbname"] = "postgres" }
        changes["connect_timeout"] = info["connect_timeout"] ?? "5"
        return info.with(changes)
    }
}
