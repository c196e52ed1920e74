import CLibUV
import CShims
import Router
import Wire

/// One client connection and the server links it uses (session mode: at most one per backend,
/// opened lazily). The client stream is cut into request units; each unit is routed by the Router
/// and sent to one server link; responses are relayed back in order, in whole chunks when nothing
/// has to be filtered out.
final class ClientSession: StreamDelegate {
    enum Phase { case startup, authenticating, connecting, relaying, finished }

    /// The session's process id (what BackendKeyData, SHOW CLIENTS and KILL show) and cancel key.
    let id: Int32
    let cancelKey: CancelRegistry.Key
    unowned let worker: Worker
    let client: Stream
    var phase = Phase.startup
    let log: Log
    let openedAt = cw_monotonic_nanos()

    // Handshake
    /// Handshake messages are small; PostgreSQL caps them at 64 KiB too, so an unauthenticated
    /// client cannot make the proxy buffer more.
    var frontend = FrontendDecoder(maximumLength: 65_536)
    var authenticator: ClientAuthenticator?
    var userName = ""
    var database = ""
    var startup: StartupMessage?
    var clientKey: [UInt8]?
    var saslFinal: [UInt8]?
    var countedAsClient = false
    var cancelKeyTarget: Int?
    var connectFailures: [String] = []
    var primaryLoginObserver: AnyObject?
    var isAdmin = false
    /// The parameter values the client was last told (ParameterStatus), by name.
    var reportedParameters: [String: String] = [:]
    /// Counted in the primary's session figure (SHOW BACKENDS).
    var countedOnPrimary: Int?

    // Server links, by backend index.
    var links: [Int: ServerLink] = [:]
    var primaryIndex: Int?

    // Request assembly (after login).
    var inbound = MessageFramer(maximumLength: 1 << 30)
    var requests = RequestAssembler()
    lazy var requestContext = RequestAssembler.Context(
        classify: { [unowned self] in classify($0) },
        statement: { [unowned self] in statements[$0] })
    /// Units that could not be sent yet, in order: the first waits (for its link to connect, for
    /// the servers ahead of it to answer, for a replica to reach the floor, for RESUME, for an
    /// LSN capture) and the rest follow it. Client input is not read while any wait.
    var waiting: [RequestUnit] = []
    /// After a Flush, the rest of the batch up to Sync must go to the same server.
    var boundLink: Int?
    var statements: [String: PreparedStatement] = [:]
    var settings = TrackedSettings()
    /// SETs run inside the current transaction: they stick only if it commits.
    var settingsInTransaction: [SessionCommand] = []
    var routing = SessionRouting()
    var pins: Set<PinReason> = []
    var transactionStatus = BackendMessage.TransactionStatus.idle
    /// Units in flight, in order, and whether their responses are held (UnitLedger); the head's
    /// link is the only one whose responses may reach the client now.
    var ledger = UnitLedger()
    var clientTerminated = false
    var transactionFailed = false
    var lastLink: Int?
    /// Backends this session just failed to reach; avoided for a short while even if the
    /// monitor has not noticed yet.
    var unavailable: Set<Int> = []
    var unavailableUntil: UInt64 = 0
    var shuttingDown = false

    /// Where the held ReadyForQuery ends, while waiting for the token to report before it.
    var heldReadyEnd = 0

    /// A commit's LSN is being fetched; reads wait for it so they are routed with the new floor.
    var lsnCapturePending = false
    /// The link whose next idle ReadyForQuery must be followed by an LSN capture.
    var deferredCaptureLink: Int?
    /// The open transaction has written (so its COMMIT needs an LSN capture).
    var transactionWrote = false
    var capturedLSN: LSN?
    /// The replica this session last read from and the topology generation at that time.
    var lastReplicaRead: (index: Int, generation: UInt64)?
    /// Why the head of `waiting` waits for the cluster (a floor, RESUME), with its deadline.
    var unitWait = UnitWait.none

    /// Called by the worker every few milliseconds while this session waits (for a replica to
    /// catch up, or for RESUME). Returns true when it no longer needs waking.
    func topologyChanged() -> Bool {
        guard !waiting.isEmpty, unitWait != .none else { return true }
        guard unitWait.shouldRetry(now: cw_monotonic_nanos(), generation: worker.topology.generation,
                                   paused: worker.runtime.paused.load(ordering: .relaxed)) else { return false }
        retryWaiting()
        return unitWait == .none || waiting.isEmpty
    }

    /// Responses held back while the ledger says so (a replica read that may be retried, a
    /// commit waiting for its token).
    var held: [UInt8] = []

    init(worker: Worker, client: Stream) {
        self.worker = worker
        self.client = client
        cancelKey = worker.runtime.cancels.issue()
        id = cancelKey.processID
        log = worker.runtime.log("session")
    }

    func start() {
        client.delegate = self
        client.startReading()
    }

    // MARK: - Client stream

    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        guard stream === client else { return false }
        switch phase {
        case .startup, .authenticating:
            frontend.append(bytes)
            processClientHandshake()
        case .relaying:
            inbound.append(bytes)
            processInbound()
        case .connecting, .finished:
            break
        }
        return false
    }

    func stream(_ stream: Stream, didEndWith status: Int32) {
        guard stream === client, phase != .finished else { return }
        if phase == .relaying && !clientTerminated && transactionStatus != .idle {
            log.info("client_vanished", ["session": id, "transaction": "open"])
        }
        finish()
    }

    func streamDidDrain(_ stream: Stream) {
        guard stream === client else { return }
        // The client caught up: let the servers send again.
        for link in links.values { link.stream.startReading() }
    }

    func stream(_ stream: Stream, didConnectWith status: Int32) {}

    // MARK: - Ending

    /// Stops the session for a proxy shutdown: right away, or once its transaction is over.
    func shutDown(immediately: Bool) {
        guard phase != .finished else { return }
        shuttingDown = true
        if immediately || phase != .relaying || isQuiet {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                  message: "terminating connection because causeway is shutting down"))
        }
    }

    /// Ends the session if a graceful shutdown was waiting for it to become quiet.
    func checkShutdown() {
        if shuttingDown && phase == .relaying && isQuiet {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                  message: "terminating connection because causeway is shutting down"))
        }
    }

    /// Tells the cancel registry whether the client's work is on a server right now.
    func publishRunning() {
        cancelKey.setRunning(!ledger.isEmpty || boundLink != nil)
    }

    /// Nothing in flight, no open transaction, no half-sent batch.
    var isQuiet: Bool {
        !lsnCapturePending && ledger.isEmpty && transactionStatus == .idle && waiting.isEmpty
            && requests.pending.isEmpty
            && links.values.allSatisfy { $0.isIdle }
    }

    /// Sends a final error to the client if it can be placed at a message boundary, then closes.
    func sendFatal(_ fields: ErrorFields) {
        guard phase != .finished else { return }
        worker.runtime.stats.countProxyError(fields.sqlState)
        if phase != .relaying || links.values.allSatisfy({ $0.responses.isAtBoundary }) {
            client.write(BackendMessage.errorResponse(fields).encoded())
        }
        finish()
    }

    func finish() {
        guard phase != .finished else { return }
        phase = .finished
        client.delegate = nil
        client.shutdownAndClose()
        for link in links.values { link.close(sendTerminate: !clientTerminated) }
        links.removeAll()
        primaryLoginObserver = nil
        cancelKey.setRunning(false)
        worker.runtime.cancels.retire(cancelKey)
        if countedAsClient {
            countedAsClient = false
            worker.runtime.counters.clientConnections.subtract(1, ordering: .relaxed)
        }
        if let sticky = routing.stickyReplica { worker.releaseReplica(sticky) }
        if let primary = countedOnPrimary {
            countedOnPrimary = nil
            worker.settings.counters(primary)?.sessions.subtract(1, ordering: .relaxed)
        }
        worker.runtime.stats.clientClosed(id)
        worker.sessionEnded(self)
    }
}
