import Router

/// The worker's side of what a session's machine may know.
struct WorkerSessionEnvironment: SessionEnvironment {
    /// Unowned and unsafe: held by the sessions of this worker, which the worker outlives; no
    /// reference counting on the request path.
    unowned(unsafe) let worker: Worker
    /// Owned by the session, which owns this environment too.
    unowned(unsafe) let cancelKey: CancelRegistry.Key
    /// pool_mode takes a restart to change: read once.
    let transactionPooling: Bool

    init(worker: Worker, cancelKey: CancelRegistry.Key) {
        self.worker = worker
        self.cancelKey = cancelKey
        transactionPooling = worker.settings.transactionPooling
    }

    var now: UInt64 { worker.now }
    var topology: Topology { worker.topology }
    var topologyPrimary: Int? { worker.topologyPrimary }
    var policy: RoutingPolicy { worker.settings.policy }
    var replicaLoad: [Int] { worker.replicaLoad }
    var paused: Bool { worker.runtime.paused.load(ordering: .relaxed) }
    var pauseTimeoutNanos: UInt64 { worker.runtime.pauseTimeoutNanos.load(ordering: .relaxed) }
    var reportLSN: Bool { worker.settings.reportLSN }
    func isRemoved(_ backend: Int) -> Bool { worker.settings.isRemoved(backend) }
    func drainExpired(_ backend: Int) -> Bool { worker.runtime.drainExpired(backend) }
    func classify(_ text: String) -> Classification {
        worker.classifications.classify(text, volatileFunctions: worker.topology.volatileFunctions)
    }
    func backendName(_ backend: Int) -> String { worker.settings.slots[backend].backend.config.name }
    func backendLabel(_ backend: Int) -> String { worker.settings.slots[backend].backend.label }
    var maxPreparedStatements: Int { worker.settings.maxPreparedStatements }
    func statementID(query: String, parameterTypes: [UInt32]) -> UInt64 {
        worker.statements.id(query: query, parameterTypes: parameterTypes)
    }
    func freshStatementID() -> UInt64 { worker.statements.fresh() }
    func quietCancels() -> Bool { cancelKey.stopRunningUnlessCancelling() }
}
