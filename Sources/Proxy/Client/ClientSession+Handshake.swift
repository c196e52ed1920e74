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
            guard let (target, key) = worker.runtime.cancels.cancelTarget(processID: processID, secret: secret) else {
                log.debug("cancel_not_forwarded", ["session": processID])
                finish()
                return
            }
            log.info("cancel_forwarded", ["session": processID, "backend": target.backend.config.name])
            // As with PostgreSQL, this connection closes only once the server has the cancel: a
            // client that waits for that before its next statement (asyncpg does) must not have
            // the late cancel land on it.
            phase = .connecting
            CancelForwarder(worker: worker, processID: target.processID, secret: target.secret) { [self] in
                key.cancelDelivered()
                finish()
            }
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
                                                    worker: worker.index, connectedAt: Date().timeIntervalSince1970,
                                                    status: status))
            if database == Self.adminDatabase {
                beginAdminSession()
                return
            }
            if let parameters = worker.runtime.greetings.parameters(for: GreetingCache.key(sharedStartupParameters())) {
                // Greeted as the primary greeted the last login like this one; servers are
                // logged in to when a unit needs them.
                greet(parameters: parameters, notices: [], status: .idle, loginLink: nil)
                log.info("session_started", ["session": id, "user": userName, "database": database, "backend": "none"])
                return
            }
            phase = .connecting
            beginFirstLogin()
        case let .reject(fields):
            log.info("client_auth_failed", ["session": id, "user": userName, "sqlstate": fields.sqlState ?? ""])
            worker.runtime.stats.authFailures.add(1, ordering: .relaxed)
            sendFatal(fields)
        }
    }

    // MARK: - First login: the primary

    /// A login with startup parameters not seen before logs in to a server first (FirstLogin
    /// decides which) and greets its client with that server's parameters.
    private func beginFirstLogin() {
        var login = FirstLogin(session: id)
        let actions = login.start(topology: worker.topology, configured: worker.settings.primaryCandidateIndexes)
        firstLogin = login
        perform(actions)
    }

    private func perform(_ actions: [FirstLogin.Action]) {
        for action in actions where phase == .connecting {
            switch action {
            case let .connect(index):
                worker.pools.acquire(for: self, backend: index)
            case let .close(index):
                if let link = serverLinks.removeValue(forKey: index) { worker.pools.release(link, reusable: true) }
            case let .greet(index, isPrimary):
                guard let link = serverLinks[index] else { continue }
                firstLogin = nil
                link.delegate = self
                var parameters = link.greeting.parameters
                if isPrimary {
                    worker.runtime.greetings.store(parameters, for: GreetingCache.key(sharedStartupParameters()))
                    countOnPrimary(index)
                } else {
                    // Only a primary's in_hot_standby is ever reported: a client told "on" would
                    // take the whole proxy for a read-only server.
                    parameters.removeAll { $0.0 == "in_hot_standby" }
                }
                greet(parameters: parameters, notices: link.greeting.notices, status: link.greeting.status,
                      loginLink: (index, isPrimary: isPrimary))
                pointCancelKey(at: link)
                log.info("session_started", ["session": id, "user": userName, "database": database,
                                             "backend": link.backend.config.name, "server_pid": link.greeting.processID])
            case let .refuse(error):
                firstLogin = nil
                sendFatal(error)
            case let .log(level, event, fields):
                log.write(level, event, fields)
            }
        }
    }

    func firstLoginLinkReady(_ link: ServerLink, greeting: ServerGreeting) {
        guard phase == .connecting, var login = firstLogin else { return }
        let actions = login.linkReady(link.backendIndex, standby: greeting.parameter("in_hot_standby") == "on",
                                      label: link.backend.label, topology: worker.topology)
        firstLogin = login
        perform(actions)
    }

    fileprivate func firstLoginLinkFailed(_ link: ServerLink, error: ErrorFields) {
        firstLoginFailed(link.backendIndex, error)
    }

    func firstLoginFailed(_ index: Int, _ error: ErrorFields) {
        guard phase == .connecting, var login = firstLogin else { return }
        serverLinks.removeValue(forKey: index)
        let backend = worker.settings.slots[index].backend
        let actions = login.linkFailed(index, error, label: backend.label, name: backend.config.name, topology: worker.topology)
        firstLogin = login
        perform(actions)
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
                          startupParameters: sharedStartupParameters(), clientProcessID: id)
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

    /// The startup parameters of the server connections this session can use. In transaction
    /// pooling `application_name` is left out, as PgBouncer does: clients that differ only in it
    /// share connections, and each one's name is SET on whichever connection it borrows
    /// (`TrackedSettings.baseline`).
    func sharedStartupParameters() -> [(String, String)] {
        let parameters = serverStartupParameters()
        guard environment.transactionPooling else { return parameters }
        return parameters.filter { $0.0 != "application_name" }
    }

    /// Transaction pooling: the client's own `application_name` is a setting of the session, not
    /// of the server connection it borrows.
    func trackApplicationName() {
        guard environment.transactionPooling,
              let name = startup?.parameters.last(where: { $0.0 == "application_name" })?.1 else { return }
        let literal = "'" + name.replacingOccurrences(of: "'", with: "''") + "'"
        machine.settings.setBaseline([.init(name: "application_name", sql: "SET application_name = \(literal)")])
    }

    /// The parameters a client is greeted with: its own `application_name` when that is its own
    /// setting rather than the server connection's.
    func greetingParameters(_ parameters: [(String, String)]) -> [(String, String)] {
        guard environment.transactionPooling,
              let name = startup?.parameters.last(where: { $0.0 == "application_name" })?.1 else { return parameters }
        var adjusted = parameters.filter { $0.0 != "application_name" }
        adjusted.append(("application_name", name))
        return adjusted
    }

    /// The session's first link to the primary: counted in SHOW BACKENDS' sessions.
    func countOnPrimary(_ index: Int) {
        guard countedOnPrimary == nil else { return }
        countedOnPrimary = index
        worker.settings.counters(index)?.sessions.add(1, ordering: .relaxed)
    }

    /// Ends the login: AuthenticationOk, the parameters, the proxy's own backend key, ready.
    private func greet(parameters serverParameters: [(String, String)], notices: [ErrorFields],
                       status: BackendMessage.TransactionStatus, loginLink: (index: Int, isPrimary: Bool)?) {
        let parameters = greetingParameters(serverParameters)
        trackApplicationName()
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
                      loginLinkIsPrimary: loginLink?.isPrimary ?? false,
                      loginServer: loginLink.flatMap { serverLinks[$0.index]?.sessionState } ?? ServerSessionState()))
        let early = frontend.takeRemainder()
        if !early.isEmpty { inbound.append(early) }
        client.startReading()
        processInbound()
    }

    /// Cancel requests from this client go to whichever server runs its queries now.
    func pointCancelKey(at link: ServerLink) {
        guard cancelKeyTarget != ObjectIdentifier(link) else { return }
        cancelKeyTarget = ObjectIdentifier(link)
        cancelKey.point(at: .init(backend: link.backend, processID: link.greeting.processID, secret: link.greeting.secret))
    }
}

/// Passes the first login's link events to its session (the session becomes the link's
/// delegate once the login is settled).
final class FirstLoginObserver: ServerLinkDelegate {
    unowned let session: ClientSession

    init(session: ClientSession) {
        self.session = session
    }

    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        session.firstLoginLinkReady(link, greeting: greeting)
    }

    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool) {
        session.firstLoginLinkFailed(link, error: error)
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool { false }
    func link(_ link: ServerLink, event: ResponseStream.Event) {}
    func linkDrained(_ link: ServerLink) {}
}
