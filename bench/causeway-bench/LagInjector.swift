// Lag injection: pg_wal_replay_pause() and pg_wal_replay_resume() on chosen replicas at the
// times of the lag schedule, over a superuser connection to each replica. Whatever happens — the
// end of the run, Ctrl-C, SIGTERM, an error — `finish` resumes every replica the schedule names,
// so no run leaves a replica paused.

import BenchCore
import CLibUV

final class LagInjector {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let schedule: LagSchedule
    private let targets: [String: ConnInfo]
    private let clock: () -> Double
    private let log: (String) -> Void
    private var clients: [String: PQClient] = [:]
    private var timers: [LoopTimer] = []
    private var queues: [String: [(String, (Bool) -> Void)]] = [:]
    private var busy: Set<String> = []
    private(set) var events: [LagEvent] = []
    private(set) var notes: [String] = []

    init(loop: UnsafeMutablePointer<uv_loop_t>, schedule: LagSchedule, targets: [String: ConnInfo],
         clock: @escaping () -> Double, log: @escaping (String) -> Void) {
        self.loop = loop
        self.schedule = schedule
        self.targets = targets
        self.clock = clock
        self.log = log
    }

    /// Connects to every scheduled replica, checks it is one, and resumes replay if something
    /// left it paused. `done(nil)` when all is ready, else the first problem.
    func prepare(_ done: @escaping (String?) -> Void) {
        var remaining = schedule.replicas.count
        var problem: String?
        for name in schedule.replicas {
            guard let info = targets[name] else {
                done("no connection for replica \(name)")
                return
            }
            let client = PQClient(loop: loop)
            clients[name] = client
            client.connect(info.text) { [unowned self] failure in
                let finishOne = { (message: String?) in
                    if problem == nil, let message { problem = message }
                    remaining -= 1
                    if remaining == 0 { done(problem) }
                }
                if let failure {
                    finishOne("cannot connect to replica \(name) (\(info.masked)) for lag injection: \(failure.message)")
                    return
                }
                client.run([.simple("SELECT pg_is_in_recovery(), pg_is_wal_replay_paused()")]) { [unowned self] outcome in
                    if let failure = outcome.failure {
                        finishOne("replica \(name): \(failure.message)")
                    } else if outcome.rows.first?[0] != "t" {
                        finishOne("\(name) (\(info.masked)) is not a replica (pg_is_in_recovery() is false): nothing to pause")
                    } else if outcome.rows.first?[1] == "t" {
                        notes.append("\(name) was paused before the run; resumed it first")
                        client.run([.simple("SELECT pg_wal_replay_resume()")]) { outcome in
                            finishOne(outcome.failure.map { "resuming \(name): \($0.message)" })
                        }
                    } else {
                        finishOne(nil)
                    }
                }
            }
        }
        if remaining == 0 { done(nil) }
    }

    /// Arms the schedule; times count from now (the start of the load).
    func start() {
        for action in schedule.actions {
            let timer = LoopTimer(loop: loop)
            timer.fire = { [unowned self] in
                perform(action.kind.rawValue, on: action.replica) { _ in }
            }
            timer.start(ms: action.atMs)
            timers.append(timer)
        }
    }

    /// Cancels what is still planned and resumes every scheduled replica; `done` runs when all
    /// answered or after `timeoutMs`, whichever is first.
    func finish(timeoutMs: Int = 5000, _ done: @escaping () -> Void) {
        for timer in timers { timer.close() }
        timers = []
        var remaining = schedule.replicas.count
        var finished = false
        let guardTimer = LoopTimer(loop: loop)
        let complete = { [unowned self] in
            guard !finished else { return }
            finished = true
            guardTimer.close()
            guardTimer.fire = {}
            for client in clients.values { client.close() }
            done()
        }
        guardTimer.fire = { [unowned self] in
            for name in schedule.replicas where busy.contains(name) || queues[name]?.isEmpty == false {
                let note = "could not confirm that \(name) resumed replay within \(timeoutMs) ms: run SELECT pg_wal_replay_resume() on it"
                notes.append(note)
                log(note)
            }
            complete()
        }
        guardTimer.start(ms: timeoutMs)
        if remaining == 0 { complete() }
        for name in schedule.replicas {
            perform("resume", on: name, label: "resume (end of run)") { _ in
                remaining -= 1
                if remaining == 0 { complete() }
            }
        }
    }

    /// Runs one action on a replica after any still running there; reconnects if needed.
    private func perform(_ action: String, on name: String, label: String? = nil, _ done: @escaping (Bool) -> Void) {
        queues[name, default: []].append((label ?? action, done))
        drain(name)
    }

    private func drain(_ name: String) {
        guard !busy.contains(name), let (action, done) = queues[name]?.first, let info = targets[name] else { return }
        queues[name]?.removeFirst()
        busy.insert(name)
        let sql = action == "pause" ? "SELECT pg_wal_replay_pause()" : "SELECT pg_wal_replay_resume()"
        let client = clients[name] ?? PQClient(loop: loop)
        clients[name] = client
        let finished = { [unowned self] (failure: String?) in
            let event = LagEvent(tMs: clock(), replica: name, action: action.hasPrefix("resume") ? "resume" : "pause", ok: failure == nil, message: failure)
            events.append(event)
            log("event=lag_\(event.action) replica=\(name) t_ms=\(Int(event.tMs)) ok=\(failure == nil)\(failure.map { " error=\"\($0.quotesReplaced)\"" } ?? "")")
            busy.remove(name)
            done(failure == nil)
            drain(name)
        }
        let send = {
            client.run([.simple(sql)]) { outcome in finished(outcome.failure?.message) }
        }
        if client.isReady {
            send()
        } else {
            client.connect(info.text) { failure in
                if let failure { finished(failure.message) } else { send() }
            }
        }
    }
}
