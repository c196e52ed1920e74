import CLibUV
import CShims
import Router
import Wire

/// One client connection: the libuv side of a session. It drives the login (startup,
/// authentication, the first server login), then cuts the client's bytes into messages, feeds
/// them and its server links' events to the session's state machine (`SessionMachine`), and
/// performs the actions the machine returns. Responses are relayed from the server links in
/// whole chunks when nothing has to be filtered out; the machine only says whether they flow or
/// are held.
final class ClientSession: StreamDelegate {
    enum Phase { case startup, authenticating, connecting, relaying, finished }

    /// The session's process id (what BackendKeyData, SHOW CLIENTS and KILL show) and cancel key.
    let id: Int32
    let cancelKey: CancelRegistry.Key
    unowned let worker: Worker
    let client: Stream
    var phase = Phase.startup
    let log: Log

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
    /// The server connection the client's cancel key points at (by identity: a new connection to
    /// the same backend has another server process).
    var cancelKeyTarget: ObjectIdentifier?
    /// `poolKey(for:)`, by backend.
    var poolKeys: [ServerPool.Key?] = []
    /// The first server login, while it is being settled.
    var firstLogin: FirstLogin?
    lazy var firstLoginObserver = FirstLoginObserver(session: self)
    var isAdmin = false
    /// Counted in the primary's session figure (SHOW BACKENDS).
    var countedOnPrimary: Int?

    /// The session itself: every decision after login is the machine's.
    var machine: SessionMachine
    let environment: WorkerSessionEnvironment
    /// The server connections the machine has opened, by backend index.
    var serverLinks = LinkTable<ServerLink>()
    var inbound = MessageFramer(maximumLength: 1 << 30)
    /// Input stopped because the machine could not take more; read again once it can.
    private var inputStalled = false
    private var readingInbound = false
    private var performing = false
    private var queuedEvents: [SessionMachine.Event] = []

    /// What SHOW CLIENTS shows of this session, and the code last stored there.
    let status = ProxyStats.ClientStatus()
    private var publishedStatus = UInt32(ClientState.loggingIn.rawValue)

    /// Responses held back while the machine says so (a replica read that may be retried, a
    /// commit waiting for its token), and where the held ReadyForQuery ends.
    var held: [UInt8] = []
    var heldReadyEnd = 0

    init(worker: Worker, client: Stream) {
        self.worker = worker
        self.client = client
        cancelKey = worker.runtime.cancels.issue()
        id = cancelKey.processID
        machine = SessionMachine(id: id)
        environment = WorkerSessionEnvironment(worker: worker, cancelKey: cancelKey)
        log = worker.runtime.log("session")
    }

    func start() {
        client.delegate = self
        client.startReading()
    }

    // MARK: - Feeding the machine

    /// Hands one event to the machine and performs what it decides. Events that arise while
    /// actions are performed (a link that fails as it is opened) queue behind, so the machine
    /// sees them one at a time.
    func feed(_ event: SessionMachine.Event) {
        deliver(event) { $0.handle(event, environment) }
    }

    /// Runs `handler` — the machine's handler of `event`, called directly on the request and
    /// response paths so the common events are not wrapped in an Event — and performs what it
    /// decided; while actions are being performed, `event` queues instead.
    private func deliver(_ event: @autoclosure () -> SessionMachine.Event, _ handler: (inout SessionMachine) -> Void) {
        if performing {
            queuedEvents.append(event())
            return
        }
        performing = true
        handler(&machine)
        performActions()
        drainQueuedEvents()
        afterEvents()
    }

    /// A server link's response event.
    func feedLinkResponse(_ index: Int, _ response: ResponseStream.Event) {
        deliver(.linkResponse(index, response)) { $0.linkResponse(index, response, environment) }
    }

    /// Events that arose while actions were performed, in order; then performing ends.
    private func drainQueuedEvents() {
        while !queuedEvents.isEmpty && phase == .relaying {
            machine.handle(queuedEvents.removeFirst(), environment)
            performActions()
        }
        if !queuedEvents.isEmpty { queuedEvents.removeAll() }
        performing = false
    }

    /// Performs what the machine decided. Performing an action never feeds the machine directly
    /// (events queue), so its action list stays as it is while it is read.
    private func performActions() {
        guard !machine.actions.isEmpty else { return }
        var position = 0
        while position < machine.actions.count && phase != .finished {
            perform(machine.actions[position])
            position += 1
        }
        machine.actions.removeAll(keepingCapacity: true)
    }

    /// Reading follows the machine's state; input that waited is taken now that it can go.
    /// While client input is being cut into messages, this is done once for the whole read
    /// (by processInbound).
    private func afterEvents() {
        guard phase == .relaying, !readingInbound else { return }
        publishStatus()
        updateReading()
        if inputStalled && machine.view.acceptsClientInput {
            inputStalled = false
            processInbound()
        }
    }

    /// Cuts buffered client input into messages for the machine, while it takes them.
    func processInbound() {
        guard !readingInbound else { return }
        readingInbound = true
        defer { readingInbound = false }
        while phase == .relaying {
            guard isAdmin || machine.view.acceptsClientInput else {
                inputStalled = true
                break
            }
            let frame: (type: UInt8, body: ArraySlice<UInt8>)?
            do {
                frame = try inbound.nextTyped()
            } catch {
                sendFatal(ClientAuthenticator.protocolViolation("invalid message from client: \(error)"))
                return
            }
            guard let frame else {
                if !isAdmin { feed(.clientInputPaused) }
                break
            }
            if isAdmin {
                handleAdminMessage(frame.type, frame.body)
                continue
            }
            let request: FrontendRequest
            do {
                request = try FrontendRequest.decode(type: frame.type, body: frame.body)
            } catch {
                sendFatal(ClientAuthenticator.protocolViolation("invalid message from client: \(error)"))
                return
            }
            deliver(.clientMessage(request, type: frame.type, body: frame.body)) {
                $0.clientMessage(request, type: frame.type, body: frame.body, environment)
            }
        }
        publishStatus()
        updateReading()
    }

    /// Stores the machine's state for SHOW CLIENTS when it changed (a relaxed atomic store).
    func publishStatus() {
        guard !isAdmin else { return }
        let code = machine.view.statusCode
        guard code != publishedStatus else { return }
        publishedStatus = code
        status.code.store(code, ordering: .relaxed)
    }

    /// Reads from the client only while its input can go somewhere; from a server only while
    /// its responses may reach the client (responses come in request order, and a client that
    /// does not read must slow its servers down).
    func updateReading() {
        guard phase == .relaying else { return }
        let linksCongested = serverLinks.contains { $0.value.stream.isAboveHighWater }
        if !(isAdmin || machine.view.acceptsClientInput) || linksCongested {
            client.stopReading()
        } else {
            client.startReading()
        }
        let head = machine.view.headLink
        let clientCongested = client.isAboveHighWater
        for (index, link) in serverLinks where link.phase == .ready {
            if !clientCongested && (head == nil || head == index) {
                link.stream.startReading()
            } else {
                link.stream.stopReading()
            }
        }
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
        if phase == .relaying && !isAdmin {
            feed(.clientGone)
        } else {
            finish()
        }
    }

    func streamDidDrain(_ stream: Stream) {
        guard stream === client else { return }
        // The client caught up: let the servers send again.
        updateReading()
    }

    func stream(_ stream: Stream, didConnectWith status: Int32) {}

    // MARK: - Control from the worker

    /// Called by the worker every few milliseconds while this session waits (for a replica to
    /// catch up, or for RESUME). Returns true when it no longer needs waking.
    func topologyChanged() -> Bool {
        guard phase == .relaying, machine.view.needsTopologyWake || machine.view.heldForCancel else { return true }
        feed(.topologyChanged)
        return !machine.view.needsTopologyWake && !machine.view.heldForCancel
    }

    /// DRAIN or a reload removed backends: the machine lets go of links to them.
    func drainCheck() {
        guard phase == .relaying, !isAdmin, !serverLinks.isEmpty else { return }
        feed(.drainCheck)
    }

    func kill() {
        if phase == .relaying && !isAdmin {
            feed(.killed)
        } else {
            sendFatal(SessionMachine.killedError)
        }
    }

    /// Stops the session for a proxy shutdown: right away, or once its transaction is over.
    func shutDown(immediately: Bool) {
        guard phase != .finished else { return }
        if phase == .relaying && !isAdmin {
            feed(.shutdown(immediately: immediately))
        } else {
            sendFatal(SessionMachine.shutdownError)
        }
    }

    // MARK: - Ending

    /// Sends a final error to the client if it can be placed at a message boundary, then closes.
    func sendFatal(_ fields: ErrorFields) {
        guard phase != .finished else { return }
        worker.runtime.stats.countProxyError(fields.sqlState)
        writeFatal(fields)
    }

    /// The final error (already counted) and the end.
    func writeFatal(_ fields: ErrorFields) {
        guard phase != .finished else { return }
        if phase != .relaying || serverLinks.allSatisfy({ $0.value.responses.isAtBoundary }) {
            client.write(BackendMessage.errorResponse(fields).encoded())
        }
        finish()
    }

    func finish() {
        guard phase != .finished else { return }
        let wasRelaying = phase == .relaying
        phase = .finished
        client.delegate = nil
        client.shutdownAndClose()
        worker.pools.cancelWaits(for: self)
        // Connections the client left idle go back to their pools (reset there); any other closes.
        for (index, link) in serverLinks {
            // What the connection holds now, for the pool's reset to start from.
            if let state = machine.links.at(index) { link.sessionState = state.server }
            worker.pools.release(link, reusable: wasRelaying && !isAdmin && machine.isReleasable(index))
        }
        serverLinks.removeAll()
        firstLogin = nil
        cancelKey.setRunning(false)
        worker.runtime.cancels.retire(cancelKey)
        if countedAsClient {
            countedAsClient = false
            worker.runtime.counters.clientConnections.subtract(1, ordering: .relaxed)
        }
        if let sticky = machine.routing.stickyReplica { worker.releaseReplica(sticky) }
        if let primary = countedOnPrimary {
            countedOnPrimary = nil
            worker.settings.counters(primary)?.sessions.subtract(1, ordering: .relaxed)
        }
        worker.runtime.stats.clientClosed(id)
        worker.sessionEnded(self)
    }
}
