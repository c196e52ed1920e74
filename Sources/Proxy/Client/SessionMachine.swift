import Router
import Wire

/// A client session after login, as a pure state machine: named events in (a client message, a
/// server's response events, a link that came up or went away, a new topology, a drain check, a
/// shutdown), actions out (`SessionAction`: write to the client, send to link N, open or close a
/// link, hold or release responses, count, log). No sockets, no worker and no clock inside: what
/// it needs of the world comes through a `SessionEnvironment`. `ClientSession` is the connection
/// that decodes bytes, feeds events and performs the actions.
///
/// The session's states are explicit values: `waiting` (a FIFO of units that cannot go yet, with
/// `unitWait` saying why the head waits for the cluster), `ledger` (units in flight and whether
/// their responses are held for a retry or a token), `boundLink` (an extended batch open after a
/// Flush), `capture` (a commit's LSN on its way), `transaction`, and one `LinkState` per server
/// link (what that server connection holds: `ServerSessionState`). In transaction pooling the
/// session lends a connection back to its pool as soon as nothing of the client's is on it
/// (`lendIdleLinks`) and borrows one again for the next unit.
struct SessionMachine {
    enum Phase: Equatable {
        /// Logging in; the connection drives the handshake.
        case greeting
        case relaying
        case ended
    }

    enum Event {
        /// The client was greeted. `loginLink`: the server link the login used (now ready),
        /// `loginLinkIsPrimary` unless the login had to settle for a replica.
        case greeted(status: BackendMessage.TransactionStatus, parameters: [(String, String)],
                     loginLink: Int?, loginLinkIsPrimary: Bool, loginServer: ServerSessionState = ServerSessionState())
        /// One message from the client, validated by Wire.
        case clientMessage(FrontendRequest, type: UInt8, body: ArraySlice<UInt8>)
        /// The client's input ran out (in the middle of a batch, what arrived goes now).
        case clientInputPaused
        /// A link is up: newly logged in, or a pooled connection with what it holds.
        case linkReady(Int, ServerGreeting, ServerSessionState = ServerSessionState())
        /// A link failed to log in, or was lost. `serverSaidWhy`: the server sent a FATAL that
        /// reached the client; `endedWhileIdle`: the server ended it while nothing was asked.
        case linkFailed(Int, ErrorFields, duringLogin: Bool, serverSaidWhy: Bool, endedWhileIdle: Bool)
        case linkResponse(Int, ResponseStream.Event)
        /// The responses held for a retry or token outgrew `UnitLedger.holdLimit`.
        case heldOverflowed
        /// The topology may have changed, or a wait's deadline passed.
        case topologyChanged
        /// DRAIN or a reload removed backends: let go of links to them.
        case drainCheck
        case shutdown(immediately: Bool)
        /// The client's connection ended without a Terminate.
        case clientGone
        /// KILL from the admin console.
        case killed
    }

    /// What one server link knows of the session.
    struct LinkState {
        enum Phase { case opening, ready }
        var phase: Phase
        /// What the server connection holds (statements, settings); it goes back with the
        /// connection to its pool.
        var server = ServerSessionState()
        /// Client Parse/Close messages sent here (where injected completions start).
        var clientCompletionsSent = 0
        /// Proxy-made requests whose ReadyForQuery has not come back.
        var internalRequests = 0
        var status = BackendMessage.TransactionStatus.idle
    }

    /// The client's transaction as the servers reported it.
    struct Transaction {
        var status = BackendMessage.TransactionStatus.idle
        /// An error happened in it: its SETs do not stick even if the client then says COMMIT.
        var failed = false
        /// It wrote, so its COMMIT needs an LSN capture.
        var wrote = false
        /// SETs run inside it: they stick only if it commits.
        var settings: [SessionCommand] = []
    }

    /// A commit's LSN, fetched right behind it, raises the floor before anything else is routed.
    enum Capture: Equatable {
        case none
        /// The capture query is on its way; the LSN once its row arrived.
        case inFlight(captured: LSN?)
    }

    static let settingsReplayTag = 1
    static let closeTag = 2
    static let lsnCaptureTag = 3
    static let batchEndTag = 4
    static let lsnCaptureQuery = FrontendMessage.query("SELECT pg_catalog.pg_current_wal_insert_lsn()").encoded()
    /// How long a backend this session failed to reach is avoided, even if the monitor has not
    /// noticed yet.
    static let avoidNanos: UInt64 = 2_000_000_000

    let id: Int32
    var phase = Phase.greeting
    /// Consistency, route hint, floor, sticky replica, open transaction (the Router's view).
    var routing = SessionRouting()
    /// What the configuration gives this user and database (RESET causeway.consistency).
    var configuredConsistency = ConsistencyMode.eventual
    /// The parameter values the client was last told (ParameterStatus), by name.
    var reportedParameters: [String: String] = [:]
    /// The primary this session logged in to (or first used).
    var primaryIndex: Int?
    /// By backend index (small integers: an array, changed in place, no hashing).
    var links: [LinkState?] = []
    var requests = RequestAssembler()
    /// Units that cannot be sent yet, in order: the first waits (for its link to come up, for
    /// the servers ahead of it to answer, for a replica to reach the floor, for RESUME, for an
    /// LSN capture) and the rest follow it. Client input is not read while any wait.
    var waiting: [RequestUnit] = []
    /// Why the head of `waiting` waits for the cluster, with its deadline.
    var unitWait = UnitWait.none
    /// After a Flush (or input that ran out mid-batch) the rest of the batch goes to this link.
    var boundLink: Int?
    var statements: [String: PreparedStatement] = [:]
    var settings = TrackedSettings()
    var transaction = Transaction()
    var pins: Set<PinReason> = []
    /// Units in flight and whether their responses are held.
    var ledger = UnitLedger()
    var capture = Capture.none
    /// A COPY FROM STDIN committed on this link: its capture goes once its ReadyForQuery is back
    /// (a query behind it would be read as copy data).
    var deferredCaptureLink: Int?
    /// Where the last unit went: copy data and units with nothing to classify follow it.
    var lastLink: Int?
    /// The replica this session last read from and the topology generation at that time.
    var lastReplicaRead: (index: Int, generation: UInt64)?
    /// Backends this session just failed to reach, with when to try them again.
    var avoided: [Int: UInt64] = [:]
    /// The link the client's cancel requests go to (told to the connection when it changes).
    var cancelKeyLink: Int?
    /// A connection the client is done with waits for a cancel on its way to it.
    var heldForCancel = false
    /// A graceful shutdown waits for the session to become quiet.
    var shuttingDown = false
    private var publishedRunning = false
    /// What the connection asks after each event, kept as plain stored values: reading a
    /// computed property of a struct stored in a class can copy the whole struct.
    struct View {
        var holdingLink: Int?
        var headLink: Int?
        var acceptsClientInput = false
        var needsTopologyWake = false
        /// A connection is kept only until a cancel on its way to it has arrived: wake the
        /// session soon to lend it.
        var heldForCancel = false
        var statusCode = UInt32(ClientState.loggingIn.rawValue)
    }

    /// As of the end of the last event.
    var view = View()
    /// What the events so far produced, in order; the connection performs and clears them.
    var actions: [SessionAction] = []

    init(id: Int32) {
        self.id = id
        actions.reserveCapacity(16)
    }

    // MARK: - Queries

    /// The client's next message can be taken: nothing waits.
    var acceptsClientInput: Bool { phase == .relaying && waiting.isEmpty }
    /// The link whose responses may reach the client now (responses arrive in request order).
    var headLink: Int? { ledger.headLink }
    /// The link whose responses are held back from the client.
    var holdingLink: Int? { ledger.holding.link }
    /// The head unit waits for the cluster: wake the session at each new topology.
    var needsTopologyWake: Bool { phase == .relaying && !waiting.isEmpty && unitWait != .none }
    /// The client's work is on a server (a cancel may be forwarded).
    var isRunning: Bool { !ledger.isEmpty || boundLink != nil }
    var inTransaction: Bool { transaction.status != .idle }

    /// Nothing in flight, no open transaction, no half-sent batch.
    var isQuiet: Bool {
        capture == .none && ledger.isEmpty && transaction.status == .idle && waiting.isEmpty
            && requests.pending.isEmpty && links.indices.allSatisfy(isIdle)
    }

    /// The client has nothing running or open on this server (requests the proxy made itself,
    /// such as an LSN capture, may still be answering): its connection can serve someone else
    /// once those are done.
    func isReleasable(_ link: Int) -> Bool {
        guard let state = links.at(link) else { return true }
        return state.phase == .ready && state.status == .idle && !ledger.hasWork(on: link) && boundLink != link
    }

    /// What SHOW CLIENTS shows of the session, packed for one relaxed atomic store: the state in
    /// the low byte (`ClientState`), the pins as bits above it (`PinReason.allCases` order).
    var statusCode: UInt32 {
        let state: ClientState
        if !waiting.isEmpty {
            switch unitWait {
            case .forFloor: state = .waitingForReplica
            case .forResume: state = .waitingForResume
            case .none: state = links.contains { $0?.phase == .opening } ? .waitingForConnection : .waitingForServers
            }
        } else if isRunning {
            state = .active
        } else {
            switch transaction.status {
            case .idle: state = .idle
            case .inTransaction: state = .idleInTransaction
            case .failed: state = .idleInFailedTransaction
            }
        }
        var code = UInt32(state.rawValue)
        if !pins.isEmpty {
            for (position, reason) in PinReason.allCases.enumerated() where pins.contains(reason) {
                code |= 1 << (8 + UInt32(position))
            }
        }
        return code
    }

    /// Nothing is asked of this server and nothing of the session's is open there.
    func isIdle(_ link: Int) -> Bool {
        guard let state = links.at(link) else { return true }
        return state.phase == .ready && state.internalRequests == 0 && state.status == .idle
            && !ledger.hasWork(on: link) && boundLink != link
    }

    // MARK: - Events

    mutating func handle(_ event: Event, _ env: some SessionEnvironment) {
        guard phase != .ended else { return }
        switch event {
        case let .greeted(status, parameters, loginLink, loginLinkIsPrimary, loginServer):
            greeted(status: status, parameters: parameters, loginLink: loginLink, isPrimary: loginLinkIsPrimary,
                    server: loginServer)
        case let .clientMessage(request, type, body):
            clientMessage(request, type: type, body: body, env)
        case .clientInputPaused:
            if acceptsClientInput, let part = requests.inputEnded() { dispatch(part, env) }
        case let .linkReady(index, greeting, server):
            linkReady(index, greeting, server, env)
        case let .linkFailed(index, error, duringLogin, serverSaidWhy, endedWhileIdle):
            linkFailed(index, error, duringLogin: duringLogin, serverSaidWhy: serverSaidWhy,
                       endedWhileIdle: endedWhileIdle, env)
        case let .linkResponse(index, response):
            linkResponse(index, response, env)
        case .heldOverflowed:
            if ledger.heldOverflowed() != nil { actions.append(.releaseHeld) }
        case .topologyChanged:
            guard needsTopologyWake,
                  unitWait.shouldRetry(now: env.now, generation: env.topology.generation, paused: env.paused) else { break }
            retryWaiting(env)
        case .drainCheck:
            releaseDrainingLinks(env)
        case let .shutdown(immediately):
            shuttingDown = true
            if immediately || phase != .relaying || isQuiet { endForShutdown() }
        case .clientGone:
            if inTransaction { log(.info, "client_vanished", ["session": id, "transaction": "open"]) }
            end()
        case .killed:
            fatal(Self.killedError)
        }
        finishEvent(env)
    }

    /// At the end of every event: lends idle server connections back to their pools (transaction
    /// pooling), tells the connection when the client's work starts or stops being on a server,
    /// and refreshes `view`.
    mutating func finishEvent(_ env: some SessionEnvironment) {
        if env.transactionPooling { lendIdleLinks(env) }
        if phase == .relaying && publishedRunning != isRunning {
            publishedRunning = isRunning
            actions.append(.setRunning(publishedRunning))
        }
        view = View(holdingLink: ledger.holding.link, headLink: ledger.headLink, acceptsClientInput: acceptsClientInput,
                    needsTopologyWake: needsTopologyWake, heldForCancel: heldForCancel, statusCode: statusCode)
    }

    private mutating func greeted(status: BackendMessage.TransactionStatus, parameters: [(String, String)],
                                  loginLink: Int?, isPrimary: Bool, server: ServerSessionState) {
        guard phase == .greeting else { return }
        phase = .relaying
        transaction.status = status
        for (name, value) in parameters {
            if name == "default_transaction_read_only" { routing.defaultTransactionReadOnly = value == "on" }
            reportedParameters[name] = value
        }
        if let loginLink {
            links.put(loginLink, LinkState(phase: .ready, server: server, status: status))
            if isPrimary { primaryIndex = loginLink }
            // The login pointed the client's cancel key at this link.
            cancelKeyLink = loginLink
        }
    }

    // MARK: - Ending

    mutating func fatal(_ error: ErrorFields) {
        guard phase != .ended else { return }
        phase = .ended
        actions.append(.countProxyError(error.sqlState))
        actions.append(.fatal(error))
    }

    mutating func end() {
        guard phase != .ended else { return }
        phase = .ended
        actions.append(.end)
    }

    static let shutdownError = ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                           message: "terminating connection because causeway is shutting down")
    static let killedError = ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                         message: "terminating connection due to administrator command (KILL)")

    private mutating func endForShutdown() {
        fatal(Self.shutdownError)
    }

    /// Transaction pooling: once the client has nothing running, open or half-sent, its server
    /// connections go back to their pools with what they hold, for any client; the next unit
    /// borrows one again. State that cannot move (`pins`: temp tables, session advisory locks,
    /// WITH HOLD cursors, SQL PREPARE, LISTEN, untracked settings) keeps the connection it lives
    /// on. So does a cancel on its way to the server: lent, it would hit another client's query.
    mutating func lendIdleLinks(_ env: some SessionEnvironment) {
        let wasHeld = heldForCancel
        heldForCancel = false
        guard phase == .relaying, ledger.isEmpty, waiting.isEmpty, boundLink == nil, capture == .none,
              transaction.status == .idle, deferredCaptureLink == nil, requests.pending.isEmpty else { return }
        var cancelsQuiet = false
        for index in links.indices {
            guard let state = links[index], state.phase == .ready, state.internalRequests == 0,
                  state.status == .idle else { continue }
            // State that cannot move may live on a replica too (a read-only transaction's WITH
            // HOLD cursor or session advisory lock): a pinned session keeps all its connections.
            if !pins.isEmpty { continue }
            if !cancelsQuiet {
                guard env.quietCancels() else {
                    // Lent once the server has the cancel: look again in a moment.
                    heldForCancel = true
                    // (The worker keeps waking the session while it is held.)
                    if !wasHeld { actions.append(.waitForTopology) }
                    return
                }
                cancelsQuiet = true
            }
            var server = state.server
            server.lent = true
            links[index] = nil
            if lastLink == index { lastLink = nil }
            if cancelKeyLink == index { cancelKeyLink = nil }
            actions.append(.lendLink(index, server))
        }
    }

    /// Ends the session if a graceful shutdown was waiting for it to become quiet.
    mutating func checkShutdown() {
        if shuttingDown && phase == .relaying && isQuiet { endForShutdown() }
    }

    // MARK: - Logging and counting

    mutating func log(_ level: LogLevel, _ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible>) {
        actions.append(.log(level, event, fields))
    }
}

extension [SessionMachine.LinkState?] {
    /// The link state of a backend, if the session has a link there.
    func at(_ index: Int) -> SessionMachine.LinkState? {
        index >= 0 && index < count ? self[index] : nil
    }

    mutating func put(_ index: Int, _ state: SessionMachine.LinkState) {
        if index >= count { append(contentsOf: repeatElement(nil, count: index + 1 - count)) }
        self[index] = state
    }

    @discardableResult
    mutating func take(_ index: Int) -> SessionMachine.LinkState? {
        guard let state = at(index) else { return nil }
        self[index] = nil
        return state
    }

    /// The backends the session has links to, in ascending order.
    var open: [Int] { indices.filter { self[$0] != nil } }
}

/// A session's state as SHOW CLIENTS names it.
enum ClientState: UInt8, CaseIterable {
    case idle, active, idleInTransaction, idleInFailedTransaction
    case waitingForReplica, waitingForResume, waitingForConnection, waitingForServers
    case loggingIn

    var label: String {
        switch self {
        case .idle: "idle"
        case .active: "active"
        case .idleInTransaction: "idle in transaction"
        case .idleInFailedTransaction: "idle in transaction (aborted)"
        case .waitingForReplica: "waiting for a replica to catch up"
        case .waitingForResume: "waiting for RESUME"
        case .waitingForConnection: "waiting for a server connection"
        case .waitingForServers: "waiting for earlier results"
        case .loggingIn: "logging in"
        }
    }

    /// Decodes `SessionMachine.statusCode`: the state and the pins' names.
    static func describe(_ code: UInt32) -> (state: String, pins: [String]) {
        let state = ClientState(rawValue: UInt8(code & 0xff))?.label ?? "unknown"
        let pins = PinReason.allCases.enumerated().compactMap { position, reason in
            code & (1 << (8 + UInt32(position))) != 0 ? reason.rawValue : nil
        }
        return (state, pins)
    }
}
