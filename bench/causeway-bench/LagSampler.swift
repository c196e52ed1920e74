// The lag timeline, sampled every `interval` while the load runs: from the admin console's
// SHOW BACKENDS when there is one (simple protocol only: the console speaks nothing else), or
// else from the servers' own WAL positions, with lag in milliseconds computed on this process's
// clock (`LagEstimator`), never from server clocks.

import BenchCore
import CLibUV

final class LagSampler {
    enum Source {
        case admin(ConnInfo)
        /// The primary, and replicas reachable directly (name, conninfo). Replicas not listed are
        /// taken from the primary's pg_stat_replication (named by their slot).
        case servers(primary: ConnInfo, replicas: [(String, ConnInfo)])
    }

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let source: Source
    private let intervalMs: Int
    private let clock: () -> Double
    private let log: (String) -> Void
    private var timer: LoopTimer?
    private var primary: PQClient?
    private var replicas: [(name: String, info: ConnInfo, client: PQClient)] = []
    private var estimator = LagEstimator()
    /// Latest per-replica state in servers mode.
    private var latest: [String: LagPoint] = [:]
    private var order: [String] = []
    private var failed: Set<String> = []
    private(set) var samples: [LagSample] = []
    private(set) var notes: [String] = []

    init(loop: UnsafeMutablePointer<uv_loop_t>, source: Source, intervalMs: Int, clock: @escaping () -> Double, log: @escaping (String) -> Void) {
        self.loop = loop
        self.source = source
        self.intervalMs = intervalMs
        self.clock = clock
        self.log = log
    }

    var sourceName: String {
        switch source {
        case .admin: return "admin console"
        case .servers: return "servers"
        }
    }

    var last: LagSample? { samples.last }

    func start() {
        primary = PQClient(loop: loop)
        if case .servers(_, let list) = source {
            replicas = list.map { (name: $0.0, info: $0.1, client: PQClient(loop: loop)) }
            order = list.map(\.0)
        }
        let timer = LoopTimer(loop: loop)
        timer.fire = { [unowned self] in tick() }
        timer.start(ms: 0, repeatMs: intervalMs)
        self.timer = timer
    }

    func stop() {
        timer?.close()
        timer = nil
        primary?.close()
        for r in replicas { r.client.close() }
    }

    private func tick() {
        switch source {
        case .admin(let info):
            guard let primary else { return }
            query(primary, info, label: "admin console", sql: "SHOW BACKENDS") { [unowned self] outcome in
                let backends = outcome.rows.compactMap { AdminBackend(columns: outcome.columns, row: $0) }
                samples.append(LagSample(tMs: clock(), backends: backends.map(\.point)))
            }
        case .servers(let info, _):
            if !latest.isEmpty || !order.isEmpty {
                let points = order.compactMap { latest[$0] }
                if !points.isEmpty {
                    samples.append(LagSample(tMs: clock(), backends: [LagPoint(name: "primary", role: "primary", state: "up", lagMs: 0, lagBytes: 0)] + points))
                }
            }
            guard let primary else { return }
            query(primary, info, label: "primary", sql: Self.primarySQL) { [unowned self] outcome in
                let t = clock()
                guard let lsn = outcome.rows.first?[0].flatMap(LSN.parse) else { return }
                estimator.primary(at: t, lsn: lsn)
                let direct = Set(replicas.map(\.name))
                for row in outcome.rows where row.count >= 3 {
                    guard let name = row[1], !direct.contains(name) else { continue }
                    if !order.contains(name) { order.append(name) }
                    let replay = row[2].flatMap(LSN.parse)
                    latest[name] = LagPoint(name: name, role: "replica", state: "streaming",
                                            lagMs: replay.map { estimator.lagMs(at: t, replay: $0) },
                                            lagBytes: replay.map { estimator.lagBytes(replay: $0) })
                }
            }
            for r in replicas {
                query(r.client, r.info, label: r.name, sql: "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused()") { [unowned self] outcome in
                    let t = clock()
                    guard let row = outcome.rows.first, let replay = row[0].flatMap(LSN.parse) else { return }
                    latest[r.name] = LagPoint(name: r.name, role: "replica", state: row[1] == "t" ? "paused" : "up",
                                              lagMs: estimator.lagMs(at: t, replay: replay), lagBytes: estimator.lagBytes(replay: replay))
                }
            }
        }
    }

    /// Each server's position and, for replicas not reachable directly, where the primary last
    /// heard they had replayed to.
    static let primarySQL = """
        SELECT pg_current_wal_lsn()::text, r.name, r.replay_lsn::text
        FROM (SELECT 1) AS one LEFT JOIN (
            SELECT coalesce(s.slot_name::text, w.application_name) AS name, w.replay_lsn
            FROM pg_stat_replication w LEFT JOIN pg_replication_slots s ON s.active_pid = w.pid) AS r ON true
        """

    /// Runs `sql` when the connection is idle (a slow answer skips ticks rather than queueing
    /// them), connecting first when needed. A failure is logged once per server.
    private func query(_ client: PQClient, _ info: ConnInfo, label: String, sql: String, _ done: @escaping (PQOutcome) -> Void) {
        let send = { [unowned self] in
            client.run([.simple(sql)]) { [unowned self] outcome in
                if let failure = outcome.failure {
                    report(label, failure.message)
                } else {
                    done(outcome)
                }
            }
        }
        if client.isReady {
            send()
        } else if client.isClosed {
            client.connect(info.text) { [unowned self] failure in
                if let failure { report(label, failure.message) } else { send() }
            }
        }
    }

    private func report(_ label: String, _ message: String) {
        guard failed.insert(label).inserted else { return }
        let note = "lag sampling from \(label) failed: \(message)"
        notes.append(note)
        log(note)
    }
}
