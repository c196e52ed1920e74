import CLibUV
import CShims
import Wire

/// One client connection and, in session mode, the server connection it owns. The handshake is
/// decoded message by message; once both sides are logged in, bytes are relayed in whole chunks
/// and only scanned for message boundaries.
final class ClientSession: StreamDelegate {
    enum Phase { case startup, authenticating, connectingServer, loggingIn, relaying, finished }

    let id: Int32
    let secret: [UInt8]
    unowned let worker: Worker
    let client: Stream
    private var server: Stream?
    private(set) var phase = Phase.startup
    private let log: Log

    private var frontend = FrontendDecoder()
    private var backend = BackendDecoder()
    private var authenticator: ClientAuthenticator?
    private var login: ServerLogin?
    private var userName = ""
    private var database = ""
    private var startup: StartupMessage?
    private var clientKey: [UInt8]?
    private var saslFinal: [UInt8]?
    private var candidates: [ResolvedBackend] = []
    private var currentBackend: ResolvedBackend?
    private var connectFailures: [String] = []
    private var countedAsClient = false
    private var serverConnected = false
    private var registeredCancelKey = false

    private var clientScanner = MessageScanner(interestingTypes: [])
    private var serverScanner = MessageScanner(
        interestingTypes: [BackendMessage.TypeByte.readyForQuery, BackendMessage.TypeByte.errorResponse])
    private var transactionStatus = BackendMessage.TransactionStatus.idle
    /// Requests (Query, Sync, FunctionCall) whose ReadyForQuery has not come back yet.
    private var outstanding = 0
    private var clientTerminated = false
    private var serverSentFatal = false
    private var clientPausedForBackpressure = false
    private var serverPausedForBackpressure = false
    private var shuttingDown = false

    init(worker: Worker, client: Stream) {
        self.worker = worker
        self.client = client
        id = worker.runtime.counters.makeSessionID()
        secret = Crypto.randomBytes(4)
        log = worker.runtime.log("session")
    }

    func start() {
        client.delegate = self
        client.startReading()
    }

    // MARK: - Stream events

    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        if stream === client {
            if phase == .relaying { return relayFromClient(bytes, chunk: chunk) }
            frontend.append(bytes)
            processClientHandshake()
            return false
        }
        guard stream === server else { return false }
        if phase == .relaying { return relayFromServer(bytes, chunk: chunk) }
        backend.append(bytes)
        processServerLogin()
        return false
    }

    func stream(_ stream: Stream, didEndWith status: Int32) {
        if stream === client {
            if phase == .relaying && !clientTerminated && outstanding > 0 {
                log.info("client_vanished", ["session": id, "transaction": transactionStatus == .idle ? "none" : "open"])
            }
            closeServer()
            end()
        } else if stream === server {
            server = nil
            switch phase {
            case .connectingServer, .loggingIn:
                connectFailures.append("\(currentBackend?.label ?? "server") closed the connection during login")
                connectNextBackend()
            case .relaying:
                if !serverSentFatal {
                    let reason = status == UV_EOF.rawValue ? "closed the connection unexpectedly" : String(cString: uv_strerror(status))
                    sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                          message: "lost the server connection: \(currentBackend?.label ?? "server") \(reason)",
                                          hint: "The server may have restarted or crashed; reconnect to continue."))
                } else {
                    client.shutdownAndClose()
                    end()
                }
            default:
                break
            }
        }
    }

    func streamDidDrain(_ stream: Stream) {
        if stream === server && clientPausedForBackpressure && phase == .relaying {
            clientPausedForBackpressure = false
            client.startReading()
        } else if stream === client && serverPausedForBackpressure && phase == .relaying {
            serverPausedForBackpressure = false
            server?.startReading()
        }
    }

    func stream(_ stream: Stream, didConnectWith status: Int32) {
        guard stream === server, phase == .connectingServer else { return }
        guard status == 0 else {
            connectFailures.append("\(currentBackend?.label ?? "server") \(String(cString: uv_strerror(status)))")
            server = nil
            stream.close()
            connectNextBackend()
            return
        }
        stream.setNoDelay()
        serverConnected = true
        phase = .loggingIn
        backend = BackendDecoder()
        let secret: ServerLogin.Secret
        let user = worker.runtime.config.user(named: userName)
        if let password = user?.password {
            secret = .password(password)
        } else if let verifier = user?.scram, let clientKey {
            secret = .scramKeys(clientKey: clientKey, keys: ScramKeys(verifier: verifier))
        } else {
            secret = .none
        }
        let worker = self.worker
        login = ServerLogin(user: userName, secret: secret) { password, salt, iterations in
            worker.deriveScram(password: password, salt: salt, iterations: iterations)
        }
        stream.write(ServerLogin.startupPacket(parameters: serverStartupParameters()))
        stream.startReading()
    }

    // MARK: - Client handshake

    private func processClientHandshake() {
        while phase == .startup || phase == .authenticating {
            do {
                if phase == .startup {
                    guard let packet = try frontend.nextStartupPacket() else { return }
                    handleStartupPacket(packet)
                } else {
                    guard let message = try frontend.nextMessage() else { return }
                    handleAuthenticationMessage(message)
                }
            } catch {
                if case .unsupportedProtocol = error {
                    sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.featureNotSupported, message: error.description))
                } else {
                    sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.protocolViolation,
                                          message: "invalid \(phase == .startup ? "startup packet" : "message"): \(error)"))
                }
            }
        }
    }

    private func handleStartupPacket(_ packet: StartupPacket) {
        switch packet {
        case .sslRequest, .gssEncryptionRequest:
            // Bytes already behind the request would be read as if they came over the encrypted
            // channel (CVE-2021-23222): refuse them.
            guard frontend.bufferedByteCount == 0 else {
                sendFatal(ClientAuthenticator.protocolViolation("received unencrypted data after an encryption request"))
                return
            }
            client.write([UInt8(ascii: "N")])
        case let .cancelRequest(processID, secret):
            if let target = worker.runtime.cancels.lookup(processID: processID, secret: secret) {
                log.info("cancel_forwarded", ["session": processID, "backend": target.backend.config.name])
                CancelForwarder(worker: worker, processID: target.processID, secret: target.secret)
                    .start(address: target.backend.address)
            } else {
                log.debug("cancel_unknown_key", ["session": processID])
            }
            phase = .finished
            client.close()
            end()
        case let .startup(message):
            beginAuthentication(message)
        }
    }

    private func beginAuthentication(_ message: StartupMessage) {
        let runtime = worker.runtime
        if runtime.shuttingDown.load(ordering: .relaxed) {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.cannotConnectNow, message: "causeway is shutting down"))
            return
        }
        let limit = runtime.config.proxy.maxClientConnections
        let count = runtime.counters.clientConnections.add(1, ordering: .relaxed).newValue
        countedAsClient = true
        guard count <= limit else {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.tooManyConnections,
                                  message: "sorry, too many clients already (max_client_conn = \(limit))"))
            return
        }
        guard let user = message["user"], !user.isEmpty else {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.invalidAuthorization,
                                  message: "no PostgreSQL user name specified in startup packet"))
            return
        }
        if let replication = message["replication"], !["false", "off", "no", "0"].contains(replication.lowercased()) {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.featureNotSupported,
                                  message: "replication connections are not supported through causeway",
                                  hint: "Connect to the server directly for replication."))
            return
        }
        userName = user
        database = message["database"].flatMap { $0.isEmpty ? nil : $0 } ?? user
        startup = message
        frontend.startupCompleted()
        if message.minorVersion > 0 || !message.protocolExtensionNames.isEmpty {
            // We speak 3.0 and no extensions; negotiate down rather than refuse (PG19 libpq greases).
            client.write(BackendMessage.negotiateProtocolVersion(newestMinor: 0,
                                                                 unsupportedOptions: message.protocolExtensionNames).encoded())
        }
        phase = .authenticating
        let userConfig = runtime.config.user(named: user)
        let method = userConfig.map { runtime.config.effectiveAuthType(for: $0) } ?? runtime.config.proxy.authType
        var authenticator = ClientAuthenticator(userName: user, user: userConfig, method: method,
                                                scramKeys: runtime.scramKeys[user])
        let action = authenticator.begin()
        self.authenticator = authenticator
        perform(action)
    }

    private func handleAuthenticationMessage(_ message: FrontendMessage) {
        switch message {
        case let .passwordFamily(body):
            guard var authenticator else { return }
            let action = authenticator.receive(body)
            self.authenticator = authenticator
            perform(action)
        case .terminate:
            phase = .finished
            client.close()
            end()
        default:
            sendFatal(ClientAuthenticator.protocolViolation("expected a password response during authentication"))
        }
    }

    private func perform(_ action: ClientAuthenticator.Action) {
        switch action {
        case let .send(request):
            client.write(BackendMessage.authentication(request).encoded())
        case let .authenticated(clientKey, saslFinal):
            self.clientKey = clientKey
            self.saslFinal = saslFinal
            authenticator = nil
            // Nothing more is expected from the client until it is told the login succeeded.
            client.stopReading()
            candidates = worker.runtime.primaryCandidates
            connectNextBackend()
        case let .reject(fields):
            log.info("client_auth_failed", ["session": id, "user": userName, "sqlstate": fields.sqlState ?? ""])
            sendFatal(fields)
        }
    }

    // MARK: - Server login

    private func connectNextBackend() {
        guard phase != .finished else { return }
        guard !candidates.isEmpty else {
            let reasons = connectFailures.isEmpty ? "no backend is configured as primary or auto" : connectFailures.joined(separator: "; ")
            log.warn("no_primary_available", ["session": id, "reasons": reasons])
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                  message: "no primary backend available: \(reasons)",
                                  hint: "Check that the primary is running and reachable from causeway."))
            return
        }
        let backend = candidates.removeFirst()
        currentBackend = backend
        phase = .connectingServer
        let stream = Stream(worker: worker)
        stream.delegate = self
        server = stream
        let status = backend.address.withUnsafeBytes { stream.connect(to: $0.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
        if status != 0 {
            connectFailures.append("\(backend.label) \(String(cString: uv_strerror(status)))")
            server = nil
            stream.close()
            connectNextBackend()
        }
    }

    private func serverStartupParameters() -> [(String, String)] {
        var parameters = [("user", userName), ("database", database)]
        for (name, value) in startup?.parameters ?? [] {
            switch name {
            case "user", "database", "replication": continue
            default:
                if name.hasPrefix("_pq_.") || name.hasPrefix("causeway.") { continue }
                parameters.append((name, value))
            }
        }
        return parameters
    }

    private func processServerLogin() {
        while phase == .loggingIn, var login {
            let message: BackendMessage?
            do {
                message = try backend.nextMessage()
            } catch {
                sendFatal(ServerLogin.failure("\(currentBackend?.label ?? "server") sent invalid data: \(error)"))
                return
            }
            guard let message else { return }
            let action = login.receive(message)
            self.login = login
            switch action {
            case let .send(bytes):
                server?.write(bytes)
            case .wait:
                continue
            case let .failed(fields):
                log.warn("server_login_failed", ["session": id, "backend": currentBackend?.config.name ?? "",
                                                 "sqlstate": fields.sqlState ?? "", "message": fields.message ?? ""])
                sendFatal(fields)
                return
            case let .ready(greeting):
                if greeting.parameter("in_hot_standby") == "on", currentBackend?.config.role == .auto {
                    connectFailures.append("\(currentBackend?.label ?? "server") is a standby")
                    closeServer()
                    connectNextBackend()
                    return
                }
                becomeReady(greeting)
                return
            }
        }
    }

    private func becomeReady(_ greeting: ServerGreeting) {
        var writer = ByteWriter(capacity: 512)
        if let saslFinal { BackendMessage.authentication(.saslFinal(saslFinal)).encode(into: &writer) }
        BackendMessage.authentication(.ok).encode(into: &writer)
        for notice in greeting.notices { BackendMessage.noticeResponse(notice).encode(into: &writer) }
        for (name, value) in greeting.parameters {
            BackendMessage.parameterStatus(name: name, value: value).encode(into: &writer)
        }
        BackendMessage.backendKeyData(processID: id, secret: secret).encode(into: &writer)
        BackendMessage.readyForQuery(greeting.status).encode(into: &writer)
        client.write(writer.bytes)
        transactionStatus = greeting.status
        login = nil
        saslFinal = nil
        if let currentBackend {
            worker.runtime.cancels.register(processID: id, secret: secret, target: .init(
                backend: currentBackend, processID: greeting.processID, secret: greeting.secret))
            registeredCancelKey = true
        }
        phase = .relaying
        log.info("session_started", ["session": id, "user": userName, "database": database,
                                     "backend": currentBackend?.config.name ?? "", "server_pid": greeting.processID])
        let early = frontend.takeRemainder()
        if !early.isEmpty {
            early.withUnsafeBytes { bytes in
                let chunk = worker.chunks.take()
                // Early bytes are at most what one read delivered before login finished.
                let count = min(bytes.count, ChunkPool.capacity)
                ChunkPool.data(chunk).copyMemory(from: bytes.baseAddress!, byteCount: count)
                if !relayFromClient(UnsafeRawBufferPointer(start: ChunkPool.data(chunk), count: count), chunk: chunk) {
                    worker.chunks.give(chunk)
                }
            }
        }
        client.startReading()
    }

    // MARK: - Relay

    private func relayFromClient(_ bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        do {
            try clientScanner.scan(bytes) { type, _ in
                switch type {
                case FrontendMessage.TypeByte.query, FrontendMessage.TypeByte.sync, FrontendMessage.TypeByte.functionCall:
                    outstanding += 1
                case FrontendMessage.TypeByte.terminate:
                    clientTerminated = true
                default:
                    break
                }
            }
        } catch {
            sendFatal(ClientAuthenticator.protocolViolation("invalid message from client: \(error)"))
            return false
        }
        guard let server else { return false }
        server.write(chunk: chunk, length: bytes.count)
        if server.isAboveHighWater {
            clientPausedForBackpressure = true
            client.stopReading()
        }
        return true
    }

    private func relayFromServer(_ bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        do {
            try serverScanner.scan(bytes) { type, body in
                if type == BackendMessage.TypeByte.readyForQuery {
                    if let status = body?.first.flatMap(BackendMessage.TransactionStatus.init(rawValue:)) {
                        transactionStatus = status
                    }
                    if outstanding > 0 { outstanding -= 1 }
                } else if type == BackendMessage.TypeByte.errorResponse, let body, Self.isFatal(body) {
                    serverSentFatal = true
                }
            }
        } catch {
            sendFatal(ServerLogin.failure("\(currentBackend?.label ?? "server") sent invalid data: \(error)"))
            return false
        }
        client.write(chunk: chunk, length: bytes.count)
        if client.isAboveHighWater, let server {
            serverPausedForBackpressure = true
            server.stopReading()
        }
        if shuttingDown && isIdle { terminateForShutdown() }
        return true
    }

    private var isIdle: Bool {
        outstanding == 0 && transactionStatus == .idle && serverScanner.isAtBoundary
    }

    static func isFatal(_ body: ArraySlice<UInt8>) -> Bool {
        var reader = ByteReader(body, messageType: BackendMessage.TypeByte.errorResponse)
        while let code = try? reader.readUInt8(), code != 0, let value = try? reader.readCString() {
            if code == ErrorFields.FieldCode.severityNonLocalized || code == ErrorFields.FieldCode.severity {
                return value == "FATAL" || value == "PANIC"
            }
        }
        return false
    }

    // MARK: - Ending

    /// Stops the session for a proxy shutdown: right away, or once its transaction is over.
    func shutDown(immediately: Bool) {
        guard phase != .finished else { return }
        shuttingDown = true
        if immediately || phase != .relaying || isIdle {
            terminateForShutdown()
        }
    }

    private func terminateForShutdown() {
        sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                              message: "terminating connection because causeway is shutting down"))
    }

    /// Sends a final error to the client (only at a message boundary: injecting it mid-message
    /// would corrupt the stream), then closes both sides.
    private func sendFatal(_ fields: ErrorFields) {
        guard phase != .finished else { return }
        if phase != .relaying || serverScanner.isAtBoundary {
            client.write(BackendMessage.errorResponse(fields).encoded())
        }
        phase = .finished
        client.shutdownAndClose()
        closeServer()
        end()
    }

    private func closeServer() {
        guard let server else { return }
        self.server = nil
        server.delegate = nil
        defer { serverConnected = false }
        if serverConnected && !clientTerminated {
            // Rolls back any open transaction before the server even notices the socket closing.
            server.write(FrontendMessage.terminate.encoded())
        }
        server.shutdownAndClose()
    }

    private func end() {
        if phase != .finished { phase = .finished }
        if registeredCancelKey {
            registeredCancelKey = false
            worker.runtime.cancels.remove(processID: id, secret: secret)
        }
        if countedAsClient {
            countedAsClient = false
            worker.runtime.counters.clientConnections.subtract(1, ordering: .relaxed)
        }
        worker.sessionEnded(self)
    }
}
