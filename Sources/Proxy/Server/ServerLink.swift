import CLibUV
import Wire

/// What a server link tells its session. Called on the worker's loop thread.
protocol ServerLinkDelegate: AnyObject {
    func linkReady(_ link: ServerLink, greeting: ServerGreeting)
    /// Login failed or the connection was lost. `error` is the server's own error when it sent one.
    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool)
    /// Bytes for the client: the whole chunk (`ranges == nil`, ownership may be taken by returning
    /// true) or only some ranges of it.
    /// `withheld`, when there is some, goes to the client before the chunk's bytes.
    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool
    func link(_ link: ServerLink, event: ResponseStream.Event)
    func linkDrained(_ link: ServerLink)
}

/// One server connection of a session: connect, log in, then carry requests and relay responses.
/// It remembers what the session state looks like on this server (applied SETs, prepared
/// statements) so the session can bring it up to date before sending it a request.
final class ServerLink: StreamDelegate {
    enum Phase { case connecting, loggingIn, ready, closed }

    let backend: ResolvedBackend
    let backendIndex: Int
    let stream: Stream
    unowned let worker: Worker
    weak var delegate: ServerLinkDelegate?
    private(set) var phase = Phase.connecting
    private var login: ServerLogin
    private var decoder = BackendDecoder()
    private let startupParameters: [(String, String)]
    private(set) var responses = ResponseStream()
    private(set) var greeting = ServerGreeting()

    /// ReadyForQuery messages still owed to the client for requests sent here.
    var outstanding = 0
    var transactionStatus = BackendMessage.TransactionStatus.idle
    /// What the connection holds of its clients' state while it sits in its pool (the session
    /// using it keeps its own copy meanwhile).
    var sessionState = ServerSessionState()
    var copyInActive = false
    var sentFatal = false
    /// The server ended this connection while it was idle (shutdown, pg_terminate_backend) and
    /// its FATAL was not passed on: the session decides whether the client needs to know.
    private(set) var endedWhileIdle = false
    private var terminated = false
    private var counted = false
    private var events: [ResponseStream.Event] = []
    private var spareEvents: [ResponseStream.Event] = []

    /// The pid the session's client knows (notifications from this server carry it).
    private(set) var clientProcessID: Int32
    private var registeredServerProcess = false
    /// The pool this connection belongs to (set when a session opens it in a pool's slot).
    var poolKey: ServerPool.Key?
    /// When it was opened, and when it was last parked idle in its pool (monotonic nanoseconds).
    let openedAt: UInt64
    var parkedAt: UInt64 = 0

    init(worker: Worker, backend: ResolvedBackend, index: Int, login: ServerLogin, startupParameters: [(String, String)],
         clientProcessID: Int32) {
        self.worker = worker
        self.clientProcessID = clientProcessID
        self.backend = backend
        backendIndex = index
        self.login = login
        self.startupParameters = startupParameters
        stream = Stream(loop: worker.loop, chunks: worker.chunks)
        openedAt = worker.now
        stream.delegate = self
    }

    /// For SHOW SERVERS.
    let status = ProxyStats.ServerStatus()

    /// A pooled connection goes to another client: notifications now carry that client's pid.
    func attach(clientProcessID: Int32) {
        self.clientProcessID = clientProcessID
        status.set(.active, client: clientProcessID)
        // The new client's session counts its Parse/Close messages from zero.
        responses.startOverClientCounts()
        guard phase == .ready, clientProcessID != 0 else { return }
        // (Replaces the previous client's entry.)
        worker.runtime.cancels.noteServerProcess(backend: backendIndex, serverPID: greeting.processID,
                                                 clientProcessID: clientProcessID)
        registeredServerProcess = true
    }

    /// Back in its pool. Notifications still carry the last client's pid until another client
    /// borrows the connection: a NOTIFY reaches listeners when its transaction commits, by which
    /// time transaction pooling has lent the connection back.
    func detachClient() {
        status.set(.idle)
    }

    /// Gives up on the connection (a login past server_connect_timeout): it fails with `error`.
    func abandon(_ error: ErrorFields) {
        fail(error, duringLogin: phase != .ready)
    }

    /// No client request is unanswered and no transaction is open; requests the proxy made
    /// itself may still be answering (their responses are swallowed whoever holds the link).
    var isReusable: Bool {
        phase == .ready && outstanding == 0 && responses.isAtBoundary && !copyInActive && transactionStatus == .idle
    }

    var isIdle: Bool { phase == .ready && outstanding == 0 && !responses.hasExpectations && responses.isAtBoundary && !copyInActive }

    func connect() {
        let status = backend.address.withUnsafeBytes {
            stream.connect(to: $0.baseAddress!.assumingMemoryBound(to: sockaddr.self))
        }
        if status != 0 { fail(connectError(status), duringLogin: true) }
    }

    /// Sends bytes the session assembled (client messages and/or injected ones).
    func send(_ bytes: [UInt8]) {
        stream.write(bytes)
    }

    /// Records client messages sent here: `completions` Parse/Close among them, ending with
    /// `readies` ReadyForQuery messages (none for a part of a batch).
    func noteClientRequest(readies: Int, completions: Int) {
        responses.noteClientMessages(completions: completions, readies: readies)
        guard readies > 0 else { return }
        if responses.hasExpectations { responses.expect(.clientReadies(count: readies)) }
        outstanding += readies
    }

    /// The proxy ended a client's batch with a Sync of its own (its ReadyForQuery is swallowed).
    func noteBatchEnd(tag: Int) {
        expectInternal(.batchEnd(tag: tag))
        responses.noteClientMessages(completions: 0, readies: 1)
    }

    /// Where injected Parse/Close completions start: after the client's sent so far.
    var clientCompletionsSent: Int { responses.clientCompletionsSent }

    /// Queues the expectation for a proxy-made request about to be sent; client requests already
    /// in flight keep their responses.
    func expectInternal(_ expectation: ResponseStream.Expectation) {
        if !responses.hasExpectations && outstanding > 0 {
            responses.expect(.clientReadies(count: outstanding))
        }
        responses.expect(expectation)
    }

    /// Ends the connection. A Terminate first makes the server roll back an open transaction
    /// right away instead of when it notices the socket closing.
    func close(sendTerminate: Bool = true) {
        guard phase != .closed else { return }
        if counted {
            counted = false
            worker.settings.counters(backendIndex)?.serverConnections.subtract(1, ordering: .relaxed)
        }
        let wasConnected = phase != .connecting
        phase = .closed
        if registeredServerProcess {
            registeredServerProcess = false
            worker.runtime.cancels.forgetServerProcess(backend: backendIndex, serverPID: greeting.processID)
        }
        delegate = nil
        if sendTerminate && wasConnected && !terminated {
            terminated = true
            stream.write(FrontendMessage.terminate.encoded())
        }
        stream.shutdownAndClose()
        if poolKey != nil { worker.pools.linkClosed(self) }
    }

    private func connectError(_ status: Int32) -> ErrorFields {
        ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                    message: "could not connect to \(backend.label): \(String(cString: uv_strerror(status)))")
    }

    private func fail(_ error: ErrorFields, duringLogin: Bool) {
        guard phase != .closed else { return }
        let delegate = self.delegate
        close(sendTerminate: !duringLogin)
        delegate?.link(self, failed: error, duringLogin: duringLogin)
    }

    // MARK: StreamDelegate

    func stream(_ stream: Stream, didConnectWith status: Int32) {
        guard phase == .connecting else { return }
        guard status == 0 else {
            fail(connectError(status), duringLogin: true)
            return
        }
        stream.setNoDelay()
        phase = .loggingIn
        counted = true
        worker.settings.counters(backendIndex)?.serverConnections.add(1, ordering: .relaxed)
        stream.write(ServerLogin.startupPacket(parameters: startupParameters))
        stream.startReading()
    }

    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        switch phase {
        case .ready:
            return relay(bytes, chunk: chunk)
        case .loggingIn:
            decoder.append(bytes)
            processLogin()
            return false
        case .connecting, .closed:
            return false
        }
    }

    func stream(_ stream: Stream, didEndWith status: Int32) {
        guard phase != .closed else { return }
        let duringLogin = phase != .ready
        let reason = status == UV_EOF.rawValue ? "closed the connection" : String(cString: uv_strerror(status))
        fail(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                         message: "lost the server connection: \(backend.label) \(reason)",
                         hint: "The server may have restarted or crashed; reconnect to continue."),
             duringLogin: duringLogin)
    }

    func streamDidDrain(_ stream: Stream) {
        delegate?.linkDrained(self)
    }

    // MARK: Login

    private func processLogin() {
        while phase == .loggingIn {
            let message: BackendMessage?
            do {
                message = try decoder.nextMessage()
            } catch {
                fail(ServerLogin.failure("\(backend.label) sent invalid data: \(error)"), duringLogin: true)
                return
            }
            guard let message else { return }
            switch login.receive(message) {
            case let .send(bytes):
                stream.write(bytes)
            case .wait:
                continue
            case let .failed(fields):
                fail(fields, duringLogin: true)
                return
            case let .ready(greeting):
                self.greeting = greeting
                transactionStatus = greeting.status
                phase = .ready
                if clientProcessID != 0 {
                    worker.runtime.cancels.noteServerProcess(backend: backendIndex, serverPID: greeting.processID,
                                                             clientProcessID: clientProcessID)
                    registeredServerProcess = true
                }
                if poolKey != nil { worker.pools.linkLoggedIn(self) }
                let leftover = decoder.takeRemainder()
                delegate?.linkReady(self, greeting: greeting)
                if !leftover.isEmpty, phase == .ready {
                    leftover.withUnsafeBytes { bytes in
                        let chunk = worker.chunks.take()
                        let count = min(bytes.count, ChunkPool.capacity)
                        ChunkPool.data(chunk).copyMemory(from: bytes.baseAddress!, byteCount: count)
                        if !relay(UnsafeRawBufferPointer(start: ChunkPool.data(chunk), count: count), chunk: chunk) {
                            worker.chunks.give(chunk)
                        }
                    }
                }
                return
            }
        }
    }

    // MARK: Relay

    private func notificationPID(_ serverPID: Int32) -> Int32? {
        worker.runtime.cancels.clientProcessID(backend: backendIndex, serverPID: serverPID)
    }

    private func relay(_ bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        let wasIdle = isIdle && transactionStatus == .idle
        let ranges: [Range<Int>]?
        do {
            ranges = try responses.process(UnsafeMutableRawBufferPointer(mutating: bytes), notificationPID: notificationPID) { event in
                switch event {
                case let .clientReady(status):
                    transactionStatus = status
                    copyInActive = false
                    if outstanding > 0 { outstanding -= 1 }
                case let .internalDone(_, status):
                    transactionStatus = status
                case .fatalError:
                    sentFatal = true
                case .copyInStarted:
                    copyInActive = true
                case .copyOutStarted, .internalMessage, .clientError:
                    break
                }
                events.append(event)
            }
        } catch {
            events.removeAll(keepingCapacity: true)
            fail(ServerLogin.failure("\(backend.label) sent invalid data: \(error)"), duringLogin: false)
            return false
        }
        if wasIdle && sentFatal {
            // Nobody asked this server anything: a session with nothing open here simply opens
            // another connection later, so its client must not see this one's goodbye. The link
            // goes now, not at the server's EOF: a unit sent in between would die with it.
            sentFatal = false
            endedWhileIdle = true
            events.removeAll(keepingCapacity: true)
            fail(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                             message: "\(backend.label) ended an idle connection"), duringLogin: false)
            return false
        }
        // Bytes go out before the events that end inside them are acted on, so a session that
        // reacts to a ReadyForQuery sees the whole response already relayed (or held).
        guard let delegate else {
            events.removeAll(keepingCapacity: true)
            return false
        }
        let taken = delegate.link(self, forward: bytes, chunk: chunk, ranges: ranges, withheld: responses.takeWithheld())
        if !events.isEmpty {
            // Swap buffers instead of copying: handlers may cause more events on this link.
            swap(&events, &spareEvents)
            for event in spareEvents {
                guard let delegate = self.delegate else { break }
                delegate.link(self, event: event)
            }
            spareEvents.removeAll(keepingCapacity: true)
        }
        return taken
    }
}
