import Router

/// What a session's state machine may know of the world outside it: the cluster as the monitor
/// last saw it, the operator's switches and the configuration, read when an event needs them.
/// The machine never reads a clock or touches a worker itself; the worker's side of this is
/// `WorkerSessionEnvironment`, and unit tests supply their own.
protocol SessionEnvironment {
    /// Monotonic nanoseconds (deadlines for floor waits, PAUSE and avoided backends).
    var now: UInt64 { get }
    var topology: Topology { get }
    /// The live primary of the current topology: nil when there is none, or two.
    var topologyPrimary: Int? { get }
    var policy: RoutingPolicy { get }
    /// Sessions of this worker reading from each backend, for spreading reads over replicas.
    var replicaLoad: [Int] { get }
    /// PAUSE is in force.
    var paused: Bool { get }
    var pauseTimeoutNanos: UInt64 { get }
    /// `routing.report_lsn`: a committing write's token goes to the client before its ReadyForQuery.
    var reportLSN: Bool { get }
    /// A reload removed this backend; open work on it finishes, nothing new goes there.
    func isRemoved(_ backend: Int) -> Bool
    /// The grace period of a drain (or removal) of this backend is over.
    func drainExpired(_ backend: Int) -> Bool
    /// The Router's classification of a statement text (cached by the worker).
    func classify(_ text: String) -> Classification
    /// How log lines and messages name a backend: its configured name, and name with address.
    func backendName(_ backend: Int) -> String
    func backendLabel(_ backend: Int) -> String

    /// `pool_mode = "transaction"`: server connections go back to their pool between
    /// transactions.
    var transactionPooling: Bool { get }
    /// `max_prepared_statements`: how many of the proxy's statements one server connection keeps.
    var maxPreparedStatements: Int { get }
    /// The id of a named statement's text and parameter types (`StatementCatalog`).
    func statementID(query: String, parameterTypes: [UInt32]) -> UInt64
    /// An id no other statement has (unnamed statements).
    func freshStatementID() -> UInt64
    /// The session's cancel key stops forwarding cancels, unless one is on its way to a server
    /// right now: then the server connection must not serve anyone else yet (false).
    func quietCancels() -> Bool
}

extension SessionEnvironment {
    var causalWaitNanos: UInt64 { UInt64(max(0, policy.causalWaitMs)) * 1_000_000 }
}
