import Router

/// The worker's side of what a session's machine may know.
struct WorkerSessionEnvironment: SessionEnvironment {
    /// Unowned and unsafe: held by the sessions of this worker, which the worker outlives; no
    /// reference counting on the request path.
    unowned(unsafe) let worker: Worker
    let cancelKey: CancelRegistry.Key

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
    var transactionPooling: Bool { worker.settings.config.proxy.poolMode == .transaction }
    var maxPreparedStatements: Int { worker.settings.config.proxy.pools.maxPreparedStatements }
    func statementID(query: String, parameterTypes: [UInt32]) -> UInt64 {
        worker.statements.id(query: query, parameterTypes: parameterTypes)
    }
    func freshStatementID() -> UInt64 { worker.statements.fresh() }
    func quietCancels() -> Bool { cancelKey.stopRunningUnlessCancelling() }
}
