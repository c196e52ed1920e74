// `causeway-bench run`: flags → RunPlan → Controller → report files and exit status.

import ArgumentParser
import BenchCore
import Foundation

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a verified read/write load and write a report.",
        discussion: """
            TARGET. Either --url (Causeway, or one PostgreSQL server), or --write-url with --read-url \
            (a naive application setup: writes to the primary, reads from a replica). URLs are libpq \
            connection strings or URIs; PGPASSWORD and the other PG* variables apply.

            WHAT EACH CLIENT DOES. Client n owns keys (n, 0..keys-1) in table --table, created anew \
            by the run. It picks an operation: a read with --read-percent probability, else a \
            write of the next value of its own counter to a random own key. Each write is followed \
            by --reads-after-write reads of that key, --read-delay apart; then --think before the \
            next pick (and --rate pacing, if given). Reads return the value, inet_server_port() \
            and pg_is_in_recovery(), so every read says which server answered.

            VERIFICATION. A read of an own key returning less than the client's last committed \
            write is a stale read (read-your-writes broken); a read returning less than a value the \
            client already read for that key is a regression (monotonic reads broken). Both are \
            counted per client and in total, and every one is timed for the report. Exit status 3 \
            with --fail-on-stale when any happened; 130 when stopped by SIGINT/SIGTERM (the report \
            is still written); 1 when the run could not start.

            LAG TIMELINE. With --admin-url (Causeway's admin console, database causeway) SHOW \
            BACKENDS is sampled every --sample-interval; otherwise the servers are asked directly: \
            the write target for its WAL position and pg_stat_replication, each --replica for its \
            replay position (use --lag-user/--lag-password for a role allowed to see them).

            LAG INJECTION. --lag-schedule 'replica1@2s-5s,replica2@6s+2s' pauses WAL replay on \
            replica1 from 2 s to 5 s and on replica2 from 6 s for 2 s (times from the start of the \
            load; 500ms, 2s, 1.5s, 1m). Replicas are reached by --replica NAME=CONNINFO, or by the \
            address SHOW BACKENDS gives for NAME, as --lag-user (default: the URL's user). Every \
            scheduled replica is resumed at the end of the run, on Ctrl-C and on SIGTERM.

            OUTPUT. A table on stdout; report.html (self-contained, SVG charts) and report.json in \
            --out; a progress line on stderr every second; log lines key=value on stderr.

            WORKLOAD FILE (--workload FILE): `key = value` lines, optionally under [workload], with \
            the workload option names below (clients, duration, read_percent, protocol, …) and \
            lag_schedule. Flags given on the command line override the file.
            """
    )

    // Target
    @Option(help: ArgumentHelp("Connection string or URI of the target (Causeway or one server).", valueName: "conninfo"))
    var url: String?
    @Option(name: .customLong("write-url"), help: ArgumentHelp("Split target: where writes go (the primary).", valueName: "conninfo"))
    var writeURL: String?
    @Option(name: .customLong("read-url"), help: ArgumentHelp("Split target: where reads go (e.g. a replica, straight).", valueName: "conninfo"))
    var readURL: String?
    @Option(name: .customLong("admin-url"), help: ArgumentHelp("Causeway's admin console (dbname=causeway): lag timeline and backend names from SHOW BACKENDS.", valueName: "conninfo"))
    var adminURL: String?
    @Option(name: .customLong("replica"), help: ArgumentHelp("A replica reachable directly, NAME=CONNINFO (repeatable): lag injection, lag sampling, naming reads.", valueName: "name=conninfo"))
    var replicas: [String] = []

    // Workload
    @Option(help: ArgumentHelp("Workload file (TOML subset); flags override it.", valueName: "file"))
    var workload: String?
    @Option(help: "Concurrent client sessions (default 8).")
    var clients: Int?
    @Option(help: "Load threads, each with its own event loop; clients are spread over them (default 1).")
    var threads: Int?
    @Option(help: ArgumentHelp("How long the load runs: 30s, 1m, 500ms (default 10s).", valueName: "time"))
    var duration: String?
    @Option(help: "Operations per client; the run ends when all are done (or at --duration).")
    var count: Int?
    @Option(help: "Target operations per second over all clients (default: as fast as possible).")
    var rate: Double?
    @Option(name: .customLong("read-percent"), help: "Share of chosen operations that are reads, 0-100 (default 80; follow-up reads come on top).")
    var readPercent: Int?
    @Option(name: .customLong("reads-after-write"), help: "Reads of the written key after each write: write-then-read (default 1).")
    var readsAfterWrite: Int?
    @Option(name: .customLong("read-delay"), help: ArgumentHelp("Pause between a write and each follow-up read: 0, 20ms, 10-50ms (default 0).", valueName: "time"))
    var readDelay: String?
    @Option(help: ArgumentHelp("Think time between operations: 0, 5ms, 1-10ms (default 0).", valueName: "time"))
    var think: String?
    @Option(help: "Keys each client owns (default 16).")
    var keys: Int?
    @Option(name: .customLong("cross-read-percent"), help: "Share of chosen reads that read another client's key (monotonic check only; default 0).")
    var crossReadPercent: Int?
    @Option(name: .customLong("protocol"), help: "simple, extended, prepared, or mixed (clients take the three in turn; default extended).")
    var queryProtocol: String?
    @Option(help: "autocommit, or explicit (BEGIN … COMMIT; reads as BEGIN READ ONLY) (default autocommit).")
    var transactions: String?
    @Flag(help: "Send a transaction's statements in one batch (libpq pipeline mode; one multi-statement query with --protocol simple).")
    var pipeline = false
    @Option(help: "Table the run creates and uses (dropped and created at the start; default causeway_bench).")
    var table: String?
    @Option(name: .customLong("sample-interval"), help: ArgumentHelp("Lag sampling interval (default 200ms).", valueName: "time"))
    var sampleInterval: String?
    @Option(help: ArgumentHelp("Width of a report timeline bucket (default 250ms).", valueName: "time"))
    var bucket: String?
    @Option(help: "Seed of the clients' random choices (default 1).")
    var seed: UInt64?

    // Lag injection
    @Option(name: .customLong("lag-schedule"), help: ArgumentHelp("Pause replay: NAME@START-END or NAME@START+LENGTH, comma-separated.", valueName: "schedule"))
    var lagSchedule: String?
    @Option(name: .customLong("lag-user"), help: "Role for lag injection and server-side lag sampling (a superuser, or pg_monitor for sampling).")
    var lagUser: String?
    @Option(name: .customLong("lag-password"), help: "Password of --lag-user.")
    var lagPassword: String?

    // Output
    @Option(help: ArgumentHelp("Directory for report.html and report.json.", valueName: "dir"))
    var out = "causeway-bench-report"
    @Flag(name: .customLong("fail-on-stale"), help: "Exit with status 3 when any stale read or regression was seen.")
    var failOnStale = false
    @Flag(help: "No progress line.")
    var quiet = false
    @Flag(name: .customLong("no-lag-sampling"), help: "Do not sample lag (e.g. through a proxy that has no admin console).")
    var noLagSampling = false

    func validate() throws {
        if url != nil && (writeURL != nil || readURL != nil) {
            throw ValidationError("give either --url or --write-url with --read-url, not both")
        }
        if url == nil && (writeURL == nil || readURL == nil) {
            throw ValidationError("give --url, or both --write-url and --read-url")
        }
    }

    func makePlan() throws -> RunPlan {
        var w = Workload()
        var scheduleText: String?
        if let path = workload {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read workload file \(path)") }
            do {
                let file = try WorkloadFile(parsing: text)
                try file.apply(to: &w)
                scheduleText = file.lagSchedule
            } catch let error as WorkloadError {
                throw ValidationError("\(path): \(error.description)")
            }
        }
        let flags: [(String, String?)] = [
            ("clients", clients.map(String.init)), ("threads", threads.map(String.init)), ("duration", duration),
            ("count", count.map(String.init)), ("rate", rate.map { String($0) }), ("read_percent", readPercent.map(String.init)),
            ("reads_after_write", readsAfterWrite.map(String.init)), ("read_delay", readDelay), ("think", think),
            ("keys", keys.map(String.init)), ("cross_read_percent", crossReadPercent.map(String.init)),
            ("protocol", queryProtocol), ("transactions", transactions), ("pipeline", pipeline ? "true" : nil),
            ("table", table), ("sample_interval", sampleInterval), ("bucket", bucket), ("seed", seed.map { String($0) }),
        ]
        do {
            for case (let key, let value?) in flags { try w.set(key, value) }
            try w.validate()
        } catch let error as WorkloadError {
            throw ValidationError(error.description)
        }
        if count != nil && duration == nil && w.count != nil {
            // With a count and no explicit duration, the count decides; the duration is a bound.
            w.durationMs = max(w.durationMs, 3_600_000)
        }
        let schedule = try (lagSchedule ?? scheduleText).map { text -> LagSchedule in
            do { return try LagSchedule(parsing: text) } catch let error as WorkloadError { throw ValidationError(error.description) }
        }
        let parse = { (text: String) throws -> ConnInfo in
            do { return try ConnInfo(parsing: text) } catch let error as ConnInfoError { throw ValidationError(error.message) }
        }
        let replicaList = try replicas.map { item -> (name: String, info: ConnInfo) in
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw ValidationError("--replica wants NAME=CONNINFO (got \(item))")
            }
            return (String(item[..<eq]), try parse(String(item[item.index(after: eq)...])))
        }
        return RunPlan(workload: w, write: try parse(url ?? writeURL ?? ""), read: try readURL.map(parse),
                       admin: try adminURL.map(parse), schedule: schedule, replicas: replicaList,
                       lagUser: lagUser, lagPassword: lagPassword, sampleLag: !noLagSampling, quiet: quiet, startedAt: Date().ISO8601Format())
    }

    func run() throws {
        let plan = try makePlan()
        let controller = Controller(plan: plan)
        controller.run()
        if let fatal = controller.fatal {
            FileHandle.standardError.write(Data("causeway-bench: \(fatal)\n".utf8))
            throw ExitCode(1)
        }
        guard let report = controller.report else { throw ExitCode(1) }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let json = out + "/report.json", html = out + "/report.html"
        try report.jsonData().write(to: URL(fileURLWithPath: json))
        try Data(report.html().utf8).write(to: URL(fileURLWithPath: html))
        print(report.table())
        print("report: \(html) \(json)")
        if failOnStale && !report.passed { throw ExitCode(3) }
        if report.interrupted { throw ExitCode(130) }
    }
}
