import CLibUV
import Foundation
import Router
import Wire

/// Startup, client authentication and the first server login.
extension ClientSession {
    func processClientHandshake() {
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
            guard let target = worker.runtime.cancels.cancelTarget(processID: processID, secret: secret) else {
                log.debug("cancel_not_forwarded", ["session": processID])
                finish()
                return
            }
            log.info("cancel_forwarded", ["session": processID, "backend": target.backend.config.name])
            // As with PostgreSQL, this connection closes only once the server has the cancel: a
            // client that waits for that before its next statement (asyncpg does) must not have
            // the late cancel land on it.
            phase = .connecting
            CancelForwarder(worker: worker, processID: target.processID, secret: target.secret) { [self] in finish() }
                .start(address: target.backend.address)
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
        let settings = worker.settings
        let limit = settings.config.proxy.maxClientConnections
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
        if let problem = applyStartupOptions(message) {
            sendFatal(problem)
            return
        }
        frontend.startupCompleted()
        if message.minorVersion > 0 || !message.protocolExtensionNames.isEmpty {
            // We speak 3.0 and no extensions; negotiate down rather than refuse (PG19 libpq greases).
            client.write(BackendMessage.negotiateProtocolVersion(newestVersion: 3 << 16,
                                                                 unsupportedOptions: message.protocolExtensionNames).encoded())
        }
        phase = .authenticating
        let userConfig = settings.config.user(named: user)
        let method = userConfig.map { settings.config.effectiveAuthType(for: $0) } ?? settings.config.proxy.authType
        var authenticator = ClientAuthenticator(userName: user, user: userConfig, method: method,
                                                scramKeys: settings.scramKeys[user],
                                                mockKeys: runtime.mockScramKeys(for: user))
        let action = authenticator.begin()
        self.authenticator = authenticator
        perform(action)
    }

    /// `causeway.*` startup parameters: the session's consistency, route and token.
    private func applyStartupOptions(_ message: StartupMessage) -> ErrorFields? {
        machine.configuredConsistency = worker.settings.config.consistency(user: userName, database: database)
        machine.routing.consistency = machine.configuredConsistency
        for (name, value) in message.parameters where name.hasPrefix("causeway.") {
            switch name {
            case "causeway.consistency":
                guard let mode = ConsistencyMode(rawValue: value.lowercased()) else {
                    return ErrorFields(severity: .fatal, sqlState: SQLState.invalidParameterValue,
                                       message: "invalid value for causeway.consistency: \"\(value)\" (use eventual, session or strong)")
                }
                machine.routing.consistency = mode
            case "causeway.route":
                guard let hint = RouteHint(rawValue: value.lowercased()) else {
                    return ErrorFields(severity: .fatal, sqlState: SQLState.invalidParameterValue,
                                       message: "invalid value for causeway.route: \"\(value)\" (use primary, replica or auto)")
                }
                machine.routing.hint = hint
            case "causeway.min_lsn":
                if let lsn = LSN(parsing: value) {
                    machine.routing.floor = max(machine.routing.floor ?? lsn, lsn)
                } else if let token = CausalToken(parsing: value) {
                    if var problem = machine.acceptToken(token, environment) {
                        problem.fields[0].value = "FATAL"
                        problem.fields[1].value = "FATAL"
                        return problem
                    }
                } else {
                    return ErrorFields(severity: .fatal, sqlState: SQLState.invalidParameterValue,
                                       message: "invalid value for causeway.min_lsn: \"\(value)\" (expected a token from SHOW causeway.lsn, or an LSN such as 0/16B3748)")
                }
            default:
                return ErrorFields(severity: .fatal, sqlState: SQLState.undefinedObject,
                                   message: "unrecognized startup parameter \"\(name)\"",
                                   hint: "causeway understands causeway.consistency, causeway.route and causeway.min_lsn.")
            }
        }
        return nil
    }

    private func handleAuthenticationMessage(_ message: FrontendMessage) {
        switch message {
        case let .passwordFamily(body):
            guard var authenticator else { return }
            let action = authenticator.receive(body)
            self.authenticator = authenticator
            perform(action)
        case .terminate:
            finish()
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
            worker.runtime.stats.clientOpened(.init(id: id, user: userName, database: database, address: client.peerAddress(),
                                                    worker: worker.index, connectedAt: Date().timeIntervalSince1970))
            if database == Self.adminDatabase {
                beginAdminSession()
                return
            }
            if let parameters = worker.runtime.greetings.parameters(for: GreetingCache.key(serverStartupParameters())) {
                // Greeted as the primary greeted the last login like this one; servers are
                // logged in to when a unit needs them.
                greet(parameters: parameters, notices: [], status: .idle, loginLink: nil)
                log.info("session_started", ["session": id, "user": userName, "database": database, "backend": "none"])
                return
            }
            phase = .connecting
            connectToPrimary(candidates: nil)
        case let .reject(fields):
            log.info("client_auth_failed", ["session": id, "user": userName, "sqlstate": fields.sqlState ?? ""])
            worker.runtime.stats.authFailures.add(1, ordering: .relaxed)
            sendFatal(fields)
        }
    }

    // MARK: - First login: the primary

    /// A login with startup parameters not seen before greets its client with the primary's
    /// parameters, so it logs in there first. Until the monitor has seen the cluster, candidates
    /// are tried in configuration order and a standby (`in_hot_standby = on`) is skipped. When no
    /// primary can be reached, a replica's parameters (never its `in_hot_standby`) let the
    /// client in for reads.
    private func connectToPrimary(candidates: [Int]?, standbysToo: Bool = false) {
        var remaining: [Int]
        if let candidates {
            remaining = candidates
        } else {
            let topology = worker.topology
            if let primary = topology.primary, primary.health != .down, !topology.hasMultiplePrimaries {
                remaining = [primary.index]
            } else if topology.hasMultiplePrimaries {
                sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                      message: "two backends report being primary; causeway refuses to guess which one to write to",
                                      hint: "Demote or stop one of them."))
                return
            } else {
                remaining = worker.settings.primaryCandidateIndexes
            }
        }
        if remaining.isEmpty && !standbysToo {
            let topology = worker.topology
            let replicas = topology.backends.filter { $0.role == .replica && $0.health == .up && !$0.draining }.map(\.index)
            if !replicas.isEmpty {
                log.info("login_without_primary", ["session": id, "reasons": connectFailures.joined(separator: "; ")])
                connectToPrimary(candidates: replicas, standbysToo: true)
                return
            }
        }
        guard !remaining.isEmpty else {
            let reasons = connectFailures.isEmpty ? "no backend is configured as primary or auto" : connectFailures.joined(separator: "; ")
            log.warn("no_primary_available", ["session": id, "reasons": reasons])
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                  message: "no primary backend available: \(reasons)",
                                  hint: "Check that the primary is running and reachable from causeway."))
            return
        }
        let index = remaining.removeFirst()
        let link = makeLink(index)
        let observer = PrimaryLoginObserver(session: self, remaining: remaining, standbysToo: standbysToo)
        primaryLoginObserver = observer
        link.delegate = observer
        serverLinks[index] = link
        link.connect()
    }

    func makeLink(_ index: Int) -> ServerLink {
        let settings = worker.settings
        let backend = settings.slots[index].backend
        let user = settings.config.user(named: userName)
        let secret: ServerLogin.Secret
        if let password = user?.password {
            secret = .password(password)
        } else if let verifier = user?.scram, let clientKey {
            secret = .scramKeys(clientKey: clientKey, keys: ScramKeys(verifier: verifier))
        } else {
            secret = .none
        }
        let worker = self.worker
        let login = ServerLogin(user: userName, secret: secret) { password, salt, iterations in
            worker.deriveScram(password: password, salt: salt, iterations: iterations)
        }
        return ServerLink(worker: worker, backend: backend, index: index, login: login,
                          startupParameters: serverStartupParameters(), clientProcessID: id)
    }

    func serverStartupParameters() -> [(String, String)] {
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

    fileprivate func primaryLoginFinished(_ link: ServerLink, greeting: ServerGreeting, remaining: [Int], standbysToo: Bool) {
        guard phase == .connecting else { return }
        let standby = greeting.parameter("in_hot_standby") == "on"
        if standby && !standbysToo {
            connectFailures.append("\(link.backend.label) is a standby")
            serverLinks.removeValue(forKey: link.backendIndex)
            link.close()
            connectToPrimary(candidates: remaining)
            return
        }
        link.delegate = self
        var parameters = greeting.parameters
        if standby {
            // Only a primary's in_hot_standby is ever reported: a client told "on" would take
            // the whole proxy for a read-only server.
            parameters.removeAll { $0.0 == "in_hot_standby" }
        } else {
            worker.runtime.greetings.store(parameters, for: GreetingCache.key(serverStartupParameters()))
            countOnPrimary(link.backendIndex)
        }
        greet(parameters: parameters, notices: greeting.notices, status: greeting.status,
              loginLink: (link.backendIndex, isPrimary: !standby))
        pointCancelKey(at: link)
        log.info("session_started", ["session": id, "user": userName, "database": database,
                                     "backend": link.backend.config.name, "server_pid": greeting.processID])
    }

    /// The session's first link to the primary: counted in SHOW BACKENDS' sessions.
    func countOnPrimary(_ index: Int) {
        guard countedOnPrimary == nil else { return }
        countedOnPrimary = index
        worker.settings.counters(index)?.sessions.add(1, ordering: .relaxed)
    }

    /// Ends the login: AuthenticationOk, the parameters, the proxy's own backend key, ready.
    private func greet(parameters: [(String, String)], notices: [ErrorFields], status: BackendMessage.TransactionStatus,
                       loginLink: (index: Int, isPrimary: Bool)?) {
        var writer = ByteWriter(capacity: 512)
        if let saslFinal { BackendMessage.authentication(.saslFinal(saslFinal)).encode(into: &writer) }
        BackendMessage.authentication(.ok).encode(into: &writer)
        for notice in notices { BackendMessage.noticeResponse(notice).encode(into: &writer) }
        for (name, value) in parameters {
            BackendMessage.parameterStatus(name: name, value: value).encode(into: &writer)
        }
        BackendMessage.backendKeyData(processID: id, secret: cancelKey.secret).encode(into: &writer)
        BackendMessage.readyForQuery(status).encode(into: &writer)
        client.write(writer.bytes)
        saslFinal = nil
        phase = .relaying
        feed(.greeted(status: status, parameters: parameters, loginLink: loginLink?.index,
                      loginLinkIsPrimary: loginLink?.isPrimary ?? false))
        let early = frontend.takeRemainder()
        if !early.isEmpty { inbound.append(early) }
        client.startReading()
        processInbound()
    }

    fileprivate func primaryLoginFailed(_ link: ServerLink, error: ErrorFields, remaining: [Int], standbysToo: Bool) {
        guard phase == .connecting else { return }
        serverLinks.removeValue(forKey: link.backendIndex)
        if error.sqlState == SQLState.connectionFailure && !remaining.isEmpty {
            connectFailures.append(error.message ?? link.backend.label)
            connectToPrimary(candidates: remaining, standbysToo: standbysToo)
            return
        }
        if error.sqlState == SQLState.connectionFailure, let message = error.message {
            connectFailures.append(message)
            connectToPrimary(candidates: [], standbysToo: standbysToo)
            return
        }
        log.warn("server_login_failed", ["session": id, "backend": link.backend.config.name,
                                         "sqlstate": error.sqlState ?? "", "message": error.message ?? ""])
        sendFatal(error)
    }

    /// Cancel requests from this client go to whichever server runs its queries now.
    func pointCancelKey(at link: ServerLink) {
        guard cancelKeyTarget != link.backendIndex else { return }
        cancelKeyTarget = link.backendIndex
        cancelKey.point(at: .init(backend: link.backend, processID: link.greeting.processID, secret: link.greeting.secret))
    }
}

/// Watches the first login, which may have to move on to the next candidate.
private final class PrimaryLoginObserver: ServerLinkDelegate {
    unowned let session: ClientSession
    let remaining: [Int]
    let standbysToo: Bool

    init(session: ClientSession, remaining: [Int], standbysToo: Bool) {
        self.session = session
        self.remaining = remaining
        self.standbysToo = standbysToo
    }

    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        session.primaryLoginObserver = nil
        session.primaryLoginFinished(link, greeting: greeting, remaining: remaining, standbysToo: standbysToo)
    }

    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool) {
        session.primaryLoginObserver = nil
        session.primaryLoginFailed(link, error: error, remaining: remaining, standbysToo: standbysToo)
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool { false }
    func link(_ link: ServerLink, event: ResponseStream.Event) {}
    func linkDrained(_ link: ServerLink) {}
}
