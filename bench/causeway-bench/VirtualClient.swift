// One simulated application session: owns its keys, writes increasing values to them, reads them
// back (and, optionally, other clients' keys), and checks every answer with its `ClientVerifier`.
// Operations run strictly one after another; think times and rate pacing use a loop timer.

import BenchCore
import CLibUV

final class VirtualClient {
    private enum Operation {
        case write(key: Int, value: Int64)
        case read(KeyRef, expected: Int64)
    }

    let id: Int
    private let queryProtocol: QueryProtocol
    private unowned let worker: Worker
    private let workload: Workload
    private let sql: BenchSQL
    private let writer: PQClient
    /// The same object as `writer` unless reads go to their own URL.
    private let reader: PQClient
    private let timer: LoopTimer
    private var verifier: ClientVerifier
    private var random: SplitMix64
    private var written: [Int] = []
    private var writeSequence: Int64 = 0
    private var followUps = 0
    private var followKey = 0
    private var operations = 0
    private var nextDueNs: UInt64 = 0
    private let intervalNs: UInt64
    private var inFlight = false
    private var started = false
    private var stopping = false
    private var closed = false
    private var pendingConnections = 0

    init(id: Int, protocol p: QueryProtocol, worker: Worker, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.id = id
        queryProtocol = p
        self.worker = worker
        let workload = worker.plan.workload
        self.workload = workload
        sql = BenchSQL(table: workload.table)
        writer = PQClient(loop: loop)
        reader = worker.plan.readConninfo == nil ? writer : PQClient(loop: loop)
        timer = LoopTimer(loop: loop)
        verifier = ClientVerifier(client: id)
        random = SplitMix64(seed: workload.seed &* 0x1_0000_0001 &+ UInt64(id))
        intervalNs = workload.rate.map { UInt64(Double(workload.clients) / $0 * 1e9) } ?? 0
        timer.fire = { [unowned self] in next() }
    }

    private var connections: [(PQClient, String)] {
        var list = [(writer, worker.plan.writeConninfo)]
        if let read = worker.plan.readConninfo { list.append((reader, read)) }
        return list
    }

    func connect() {
        pendingConnections = connections.count
        var failed = false
        for (conn, info) in connections {
            conn.connect(info) { [unowned self] failure in
                pendingConnections -= 1
                if let failure, !failed {
                    failed = true
                    worker.clientFailedToConnect(failure.message)
                    worker.record { $0.recordError(client: id, atNs: 0, code: failure.code, message: failure.message) }
                }
                guard pendingConnections == 0 else { return }
                if failed { close() } else { worker.clientConnected() }
            }
        }
    }

    func go() {
        guard !closed, !stopping else { return }
        started = true
        if intervalNs > 0 {
            // A random phase spreads the clients over one interval instead of a burst at 0.
            nextDueNs = nowNanos() + UInt64(random.below(Int(min(intervalNs, UInt64(Int.max)))))
        }
        schedule(afterMs: 0)
    }

    func stop() {
        stopping = true
        if !inFlight { close() }
    }

    func close() {
        guard !closed else { return }
        closed = true
        timer.close()
        writer.close()
        if reader !== writer { reader.close() }
        worker.clientClosed()
    }

    // MARK: - Choosing the next operation

    private func schedule(afterMs ms: Int) {
        if ms <= 0 { next() } else { timer.start(ms: ms) }
    }

    private func next() {
        guard started, !stopping, !closed else { return }
        if let count = workload.count, operations >= count {
            worker.clientFinished()
            stopping = true
            close()
            return
        }
        operations += 1
        let op: Operation
        if followUps > 0 {
            followUps -= 1
            let ref = KeyRef(owner: id, key: followKey)
            op = .read(ref, expected: verifier.expectation(for: ref))
        } else if written.isEmpty || !random.chance(percent: workload.readPercent) {
            writeSequence += 1
            op = .write(key: random.below(workload.keys), value: writeSequence)
        } else {
            // Reads only go to keys once their owner may have written them; an own key is only
            // read after its first write, so the table exists wherever the read lands.
            let ref: KeyRef
            if workload.crossReadPercent > 0 && random.chance(percent: workload.crossReadPercent) {
                var owner = 1 + random.below(workload.clients - 1)
                if owner >= id { owner += 1 }
                ref = KeyRef(owner: owner, key: random.below(workload.keys))
            } else {
                ref = KeyRef(owner: id, key: written[random.below(written.count)])
            }
            op = .read(ref, expected: verifier.expectation(for: ref))
        }
        run(op)
    }

    private func delayAfterOperation() -> Int {
        if followUps > 0 { return workload.readDelay.draw(&random) }
        var ms = workload.think.draw(&random)
        if intervalNs > 0 {
            nextDueNs += intervalNs
            let now = nowNanos()
            if nextDueNs > now { ms = max(ms, Int((nextDueNs - now) / 1_000_000)) }
        }
        return ms
    }

    // MARK: - Running one operation

    private func run(_ op: Operation) {
        let steps: [SQLStep]
        let conn: PQClient
        switch op {
        case .write(let key, let value):
            steps = sql.write(client: id, key: key, value: value, protocol: queryProtocol, transactions: workload.transactions, pipeline: workload.pipeline)
            conn = writer
        case .read(let ref, _):
            steps = sql.read(owner: ref.owner, key: ref.key, protocol: queryProtocol, transactions: workload.transactions, pipeline: workload.pipeline)
            conn = reader
        }
        let startNs = worker.nanosSinceStart
        let sentAt = nowNanos()
        inFlight = true
        conn.run(steps.map(Self.pqStep), pipeline: workload.pipeline) { [unowned self] outcome in
            inFlight = false
            let latency = Int64(bitPattern: nowNanos() &- sentAt)
            if let failure = outcome.failure {
                failed(failure, on: conn, at: startNs)
                return
            }
            switch op {
            case .write(let key, let value):
                if verifier.lastCommitted(key) == nil { written.append(key) }
                verifier.committed(key: key, value: value)
                worker.record { $0.recordWrite(client: id, atNs: startNs, latencyNs: latency) }
                followUps = workload.readsAfterWrite
                followKey = key
            case .read(let ref, let expected):
                let row = outcome.rows.first
                guard let row, row.count >= 3, let port = row[1].flatMap({ Int($0) }) else {
                    worker.record { $0.recordError(client: id, atNs: startNs, code: "bench", message: "the read returned no row") }
                    break
                }
                let value = row[0].flatMap { Int64($0) }
                let verdict = verifier.read(ref, value: value, expected: expected)
                worker.record {
                    $0.recordRead(client: id, atNs: startNs, latencyNs: latency, port: port, inRecovery: row[2].map { $0 == "t" },
                                  ref: ref, got: value ?? 0, verdict: verdict)
                }
            }
            if stopping { close() } else { schedule(afterMs: delayAfterOperation()) }
        }
    }

    private func failed(_ failure: PQFailure, on conn: PQClient, at startNs: Int64) {
        worker.record { $0.recordError(client: id, atNs: startNs, code: failure.code, message: failure.message) }
        followUps = 0
        if stopping {
            close()
            return
        }
        if failure.connectionLost {
            // A new session has no read-your-writes floor in a proxy; reads after this may be
            // stale for that reason, and the report counts the reconnect so it can be told apart.
            worker.record { $0.recordReconnect(client: id) }
            let info = conn === reader && worker.plan.readConninfo != nil ? worker.plan.readConninfo! : worker.plan.writeConninfo
            timer.fire = { [unowned self] in
                timer.fire = { [unowned self] in next() }
                conn.connect(info) { [unowned self] failure in
                    if let failure {
                        worker.record { $0.recordError(client: id, atNs: worker.nanosSinceStart, code: failure.code, message: failure.message) }
                        // Try again later; `next` is not called until a connection is back.
                        timer.fire = { [unowned self] in reconnectLater(conn, info) }
                        timer.start(ms: 500)
                    } else {
                        schedule(afterMs: 0)
                    }
                }
            }
            timer.start(ms: 100)
            return
        }
        guard conn.inTransaction else {
            schedule(afterMs: delayAfterOperation())
            return
        }
        inFlight = true
        conn.run([.simple("ROLLBACK")]) { [unowned self] outcome in
            inFlight = false
            if let failure = outcome.failure {
                failed(failure, on: conn, at: worker.nanosSinceStart)
            } else if stopping {
                close()
            } else {
                schedule(afterMs: delayAfterOperation())
            }
        }
    }

    private func reconnectLater(_ conn: PQClient, _ info: String) {
        guard !stopping, !closed else { return }
        conn.connect(info) { [unowned self] failure in
            if failure != nil {
                timer.start(ms: 500)
            } else {
                timer.fire = { [unowned self] in next() }
                schedule(afterMs: 0)
            }
        }
    }

    private static func pqStep(_ step: SQLStep) -> PQStep {
        switch step {
        case .simple(let sql): return .simple(sql)
        case .params(let sql, let values): return .params(sql, values)
        case .prepared(let name, let sql, let values): return .prepared(name: name, sql: sql, values)
        }
    }
}
