// The run itself, on the main thread's loop: create the table, learn the backends, prepare lag
// injection, start the worker threads, give the go, sample lag, print progress, stop on time (or
// on a signal), resume replicas, collect the workers' statistics and build the report.

import BenchCore
import CLibUV
import Foundation

final class Controller {
    private let plan: RunPlan
    private let loop = makeLoop()
    private var workers: [Worker] = []
    private var sampler: LagSampler?
    private var injector: LagInjector?
    private var labels: [Int: BackendLabel] = [:]
    private var notes: [String] = []
    private var handles: [LoopTimer] = []
    private var signals: [LoopSignal] = []
    private var pollTimer: LoopTimer?
    private var goNs: UInt64 = 0
    private var stopNs: UInt64 = 0
    private var stopping = false
    private var injectorDone = true
    private var interrupted = false
    private(set) var fatal: String?
    private(set) var report: BenchReport?

    init(plan: RunPlan) { self.plan = plan }

    /// Runs to the end; afterwards `report` (or `fatal`) says how it went.
    func run() {
        for sig in [SIGINT, SIGTERM] {
            signals.append(LoopSignal(loop: loop, signal: sig) { [unowned self] signum in
                log("event=signal signal=\(signum == SIGINT ? "SIGINT" : "SIGTERM") action=stopping")
                interrupted = true
                if goNs == 0 { abort("interrupted before the load started") } else { stop() }
            })
        }
        setUpTable()
        _ = uv_run(loop, UV_RUN_DEFAULT)
        freeLoop(loop)
    }

    private func log(_ text: String) {
        FileHandle.standardError.write(Data(("causeway-bench " + text + "\n").utf8))
    }

    private func msSinceGo() -> Double { goNs == 0 ? 0 : Double(nowNanos() &- goNs) / 1e6 }

    // MARK: - Before the load

    private func setUpTable() {
        let sql = BenchSQL(table: plan.workload.table)
        let client = PQClient(loop: loop)
        log("event=setup table=\(plan.workload.table) target=\"\(plan.write.masked)\"")
        client.connect(plan.write.text) { [unowned self] failure in
            if let failure { return abort("cannot connect to \(plan.write.masked): \(failure.message)") }
            client.run([.simple(sql.setup)]) { [unowned self] outcome in
                client.close()
                if let failure = outcome.failure { return abort("creating table \(plan.workload.table): \(failure.message)") }
                if let read = plan.read { waitForTable(on: read, deadline: nowNanos() + 30_000_000_000) } else { discoverBackends() }
            }
        }
    }

    /// A split target reads from a server that may not have replayed the CREATE TABLE yet.
    private func waitForTable(on info: ConnInfo, deadline: UInt64) {
        let client = PQClient(loop: loop)
        let timer = LoopTimer(loop: loop)
        handles.append(timer)
        timer.fire = { [unowned self] in
            client.run([.simple("SELECT to_regclass('\(plan.workload.table)') IS NOT NULL")]) { [unowned self] outcome in
                if let failure = outcome.failure { return abort("reading from \(info.masked): \(failure.message)") }
                if outcome.rows.first?[0] == "t" {
                    client.close()
                    timer.close()
                    discoverBackends()
                } else if nowNanos() > deadline {
                    abort("table \(plan.workload.table) did not appear on \(info.masked) within 30 s")
                } else {
                    timer.start(ms: 50)
                }
            }
        }
        client.connect(info.text) { [unowned self] failure in
            if let failure { return abort("cannot connect to \(info.masked): \(failure.message)") }
            timer.start(ms: 0)
        }
    }

    private func discoverBackends() {
        for r in plan.replicas {
            if let port = r.info.port { labels[port] = BackendLabel(name: r.name, role: "replica") }
        }
        guard let admin = plan.admin else { return prepareInjector(adminBackends: []) }
        let client = PQClient(loop: loop)
        client.connect(admin.text) { [unowned self] failure in
            if let failure { return abort("cannot connect to the admin console \(admin.masked): \(failure.message)") }
            client.run([.simple("SHOW BACKENDS")]) { [unowned self] outcome in
                client.close()
                if let failure = outcome.failure { return abort("SHOW BACKENDS on \(admin.masked): \(failure.message)") }
                let backends = outcome.rows.compactMap { AdminBackend(columns: outcome.columns, row: $0) }
                for b in backends { labels[b.port] = BackendLabel(name: b.name, role: b.role) }
                log("event=backends " + backends.map { "\($0.name)=\($0.host):\($0.port)/\($0.role)" }.joined(separator: " "))
                prepareInjector(adminBackends: backends)
            }
        }
    }

    private func prepareInjector(adminBackends: [AdminBackend]) {
        guard let schedule = plan.schedule else { return startWorkers() }
        var targets: [String: ConnInfo] = [:]
        for name in schedule.replicas {
            if let explicit = plan.replicas.first(where: { $0.name == name }) {
                targets[name] = plan.superuser(explicit.info)
            } else if let b = adminBackends.first(where: { $0.name == name }) {
                targets[name] = plan.superuser(ConnInfo([("host", b.host), ("port", String(b.port))]))
            } else {
                let known = adminBackends.map(\.name) + plan.replicas.map(\.name)
                return abort("lag schedule names \(name), but there is no --replica \(name)=CONNINFO\(plan.admin == nil ? " (and no --admin-url to look it up)" : "") and the admin console knows only: \(known.joined(separator: ", "))")
            }
        }
        let injector = LagInjector(loop: loop, schedule: schedule, targets: targets, clock: { [unowned self] in msSinceGo() },
                                   log: { [unowned self] in log($0) })
        self.injector = injector
        injectorDone = false
        injector.prepare { [unowned self] problem in
            if let problem { return abort(problem) }
            startWorkers()
        }
    }

    // MARK: - The load

    private func startWorkers() {
        let w = plan.workload
        let ids = Array(1...w.clients)
        for t in 0..<w.threads {
            let mine = ids.filter { ($0 - 1) % w.threads == t }
            workers.append(Worker(plan: WorkerPlan(index: t, clientIDs: mine, workload: w, writeConninfo: plan.write.text, readConninfo: plan.read?.text)))
        }
        log("event=connecting clients=\(w.clients) threads=\(w.threads)")
        for worker in workers { worker.start() }
        let poll = LoopTimer(loop: loop)
        poll.fire = { [unowned self] in pollWorkers() }
        poll.start(ms: 10, repeatMs: 10)
        pollTimer = poll
    }

    private func pollWorkers() {
        let snapshots = workers.map(\.shared.snapshot)
        if goNs == 0 && !stopping {
            let settled = zip(workers, snapshots).allSatisfy { $1.connected + $1.connectFailures == $0.plan.clientIDs.count }
            guard settled else { return }
            let failures = snapshots.map(\.connectFailures).reduce(0, +)
            if failures > 0 {
                let first = snapshots.compactMap(\.firstConnectError).first ?? "?"
                let note = "\(failures) of \(plan.workload.clients) clients could not connect: \(first)"
                notes.append(note)
                log("event=connect_failures count=\(failures) first=\"\(first.quotesReplaced)\"")
                if failures == plan.workload.clients { return abort(note) }
            }
            go()
        } else if !stopping {
            if let count = plan.workload.count, count > 0 {
                let finished = snapshots.map(\.finishedClients).reduce(0, +)
                let connected = snapshots.map(\.connected).reduce(0, +)
                if finished >= connected { stop() }
            }
        } else if injectorDone && snapshots.allSatisfy({ $0.stats != nil }) {
            finishRun(snapshots.compactMap(\.stats))
        }
    }

    private func go() {
        goNs = nowNanos()
        log("event=start clients=\(plan.workload.clients) duration_ms=\(plan.workload.durationMs)\(plan.workload.count.map { " count=\($0)" } ?? "")")
        for worker in workers {
            worker.shared.send(.go(startNs: goNs))
            worker.poke()
        }
        injector?.start()
        let source: LagSampler.Source?
        if !plan.sampleLag {
            source = nil
        } else if let admin = plan.admin {
            source = .admin(admin)
        } else {
            // Plain PostgreSQL: the server writes go to is the primary.
            source = .servers(primary: plan.superuser(plan.write), replicas: plan.replicas.map { ($0.name, plan.superuser($0.info)) })
        }
        if let source {
            let sampler = LagSampler(loop: loop, source: source, intervalMs: plan.workload.sampleIntervalMs,
                                     clock: { [unowned self] in msSinceGo() }, log: { [unowned self] in log($0) })
            sampler.start()
            self.sampler = sampler
        }
        let end = LoopTimer(loop: loop)
        end.fire = { [unowned self] in stop() }
        end.start(ms: plan.workload.durationMs)
        handles.append(end)
        if !plan.quiet {
            let progress = LoopTimer(loop: loop)
            progress.fire = { [unowned self] in printProgress() }
            progress.start(ms: 1000, repeatMs: 1000)
            handles.append(progress)
        }
    }

    private var lastProgress = TimelineCounts()
    private let interactive = isatty(2) == 1

    private func printProgress() {
        var total = TimelineCounts()
        for worker in workers {
            let p = worker.shared.snapshot.progress
            total.operations += p.operations
            total.reads += p.reads
            total.writes += p.writes
            total.errors += p.errors
            total.stale += p.stale
            total.regressions += p.regressions
        }
        let rate = total.operations - lastProgress.operations
        lastProgress = total
        var line = "progress t=\(Int((msSinceGo() / 1000).rounded()))s ops=\(total.operations) ops_per_s=\(rate) reads=\(total.reads) writes=\(total.writes) errors=\(total.errors) stale=\(total.stale) regressions=\(total.regressions)"
        if let sample = sampler?.last {
            let lags = sample.backends.filter { $0.role != "primary" }.map { "\($0.name):\($0.lagMs.map { String(Int($0)) } ?? "?")ms\($0.state == "paused" ? "(paused)" : "")" }
            if !lags.isEmpty { line += " lag=" + lags.joined(separator: ",") }
        }
        let text = interactive ? "\r\u{1B}[K" + line : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    // MARK: - Stopping

    private func stop() {
        guard !stopping else { return }
        stopping = true
        stopNs = nowNanos()
        if interactive && !plan.quiet { FileHandle.standardError.write(Data("\n".utf8)) }
        log("event=stop t_ms=\(Int(msSinceGo()))\(interrupted ? " interrupted=true" : "")")
        for handle in handles { handle.close() }
        handles = []
        for worker in workers {
            worker.shared.send(.stop)
            worker.poke()
        }
        sampler?.stop()
        if let injector {
            injector.finish { [unowned self] in injectorDone = true }
        }
    }

    /// Stops everything before the load began (or when it cannot start), resuming replicas.
    private func abort(_ message: String) {
        guard fatal == nil else { return }
        fatal = message
        log("level=error event=abort message=\"\(message.quotesReplaced)\"")
        if !workers.isEmpty {
            for worker in workers {
                worker.shared.send(.stop)
                worker.poke()
            }
            for worker in workers { _ = worker.waitUntilDone(timeout: .now() + 10) }
        }
        let closeAll = { [unowned self] in
            pollTimer?.close()
            for handle in handles { handle.close() }
            handles = []
            sampler?.stop()
            for s in signals { s.close() }
            uv_stop(loop)
        }
        if let injector { injector.finish { closeAll() } } else { closeAll() }
    }

    private func finishRun(_ all: [RunStats]) {
        pollTimer?.close()
        for s in signals { s.close() }
        var stats = RunStats(bucketMs: plan.workload.bucketMs)
        for s in all { stats.merge(s) }
        var notes = self.notes + (sampler?.notes ?? []) + (injector?.notes ?? [])
        if stats.total.reads == 0 { notes.append("no read completed: nothing was verified") }
        let target = TargetDescription(mode: plan.isSplit ? "split" : "single",
                                       url: plan.isSplit ? nil : plan.write.masked,
                                       writeURL: plan.isSplit ? plan.write.masked : nil, readURL: plan.read?.masked,
                                       adminURL: plan.admin?.masked, lagSource: sampler?.sourceName ?? "none")
        report = BenchReport(version: benchVersion, startedAt: plan.startedAt, target: target, workload: plan.workload,
                             lagSchedule: plan.schedule?.windows ?? [], elapsedMs: Int((stopNs &- goNs) / 1_000_000),
                             interrupted: interrupted, stats: stats, labels: labels, lagSamples: sampler?.samples ?? [],
                             lagEvents: injector?.events ?? [], notes: notes)
        for worker in workers { _ = worker.waitUntilDone(timeout: .now() + 5) }
        uv_stop(loop)
    }
}

let benchVersion = "0.1.0"

extension String {
    /// For a key="value" log field: inner double quotes become single ones.
    var quotesReplaced: String { replacingOccurrences(of: "\"", with: "'") }
}
