import Router
import Wire

/// Server links coming up, answering and going away.
extension SessionMachine {
    mutating func linkReady(_ index: Int, _ greeting: ServerGreeting, _ server: ServerSessionState,
                            _ env: some SessionEnvironment) {
        guard phase == .relaying, links.at(index)?.phase == .opening else { return }
        links[index]!.phase = .ready
        links[index]!.status = greeting.status
        links[index]!.server = server
        let standby = greeting.parameter("in_hot_standby") == "on"
        if !standby && index == currentPrimary(env) {
            if primaryIndex == nil { primaryIndex = index }
            // Every primary login refreshes what later logins like this one are greeted with (a
            // connection lent before says only what it said at its login).
            actions.append(.primaryLinkReady(index, server.lent ? nil : greeting.parameters))
        }
        // A connection lent before was brought to its last client's settings: its greeting
        // no longer says what it reports, and bringing it to this session's settings reports
        // what changes.
        if !server.lent { reportParameterChanges(greeting.parameters, standby: standby) }
        retryWaiting(env)
    }

    /// A server the session starts using reports a parameter differently from what the client
    /// was told (a role or database setting changed since the greeting was cached, another
    /// server's configuration): the client hears the new value, as it would from PostgreSQL.
    /// A standby's `in_hot_standby` is never reported: a client told "on" would take the whole
    /// proxy for a read-only server.
    private mutating func reportParameterChanges(_ parameters: [(String, String)], standby: Bool) {
        var writer = ByteWriter()
        for (name, value) in parameters where reportedParameters[name] != value {
            if standby && name == "in_hot_standby" { continue }
            // A parameter the session sets itself is brought to its value on this server before
            // anything runs there: what the server logged in with is not the client's.
            if settings.commands.contains(where: { $0.name == name.lowercased() }) { continue }
            BackendMessage.parameterStatus(name: name, value: value).encode(into: &writer)
            reportedParameters[name] = value
        }
        if !writer.bytes.isEmpty { actions.append(.writeClient(writer.bytes)) }
    }

    mutating func linkFailed(_ index: Int, _ error: ErrorFields, duringLogin: Bool, serverSaidWhy: Bool,
                             endedWhileIdle: Bool, _ env: some SessionEnvironment) {
        guard phase == .relaying, links.take(index) != nil else { return }
        let name = env.backendName(index)
        if routing.stickyReplica == index {
            actions.append(.releaseReplica(index))
            routing.stickyReplica = nil
        }
        if boundLink == index { boundLink = nil }
        if lastLink == index { lastLink = nil }
        if cancelKeyLink == index { cancelKeyLink = nil }
        if deferredCaptureLink == index { deferredCaptureLink = nil }
        if let action = ledger.linkLost(index) {
            // Nothing of this read reached the client yet: run it somewhere else.
            avoid(index, env)
            perform(action, on: index, env)
            return
        }
        let onPrimary = index == primaryIndex || index == currentPrimary(env)
        if capture != .none && onPrimary {
            // The commit's LSN will not come: stay conservative with the primary's last known
            // position, and let the session go on.
            capture = .none
            if let known = env.topology.primary?.currentLSN { routing.floor = max(routing.floor ?? known, known) }
            if ledger.tokenResolved() != nil { actions.append(.releaseHeld) }
        }
        let hadWork = ledger.hasWork(on: index)
        let heldState = index == primaryIndex && (!pins.isEmpty || inTransaction)
        if hadWork || (routing.transactionBackend == index && inTransaction) || heldState {
            // The server died with the client's work or state on it: PostgreSQL's own behaviour
            // for a lost connection is to end the session, and that is the honest answer here.
            log(.warn, "server_link_lost", ["session": id, "backend": name, "in_flight": hadWork])
            if serverSaidWhy {
                // The server already said why (e.g. 57P01); PostgreSQL sends nothing after that.
                end()
            } else if endedWhileIdle {
                fatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                  message: "terminating connection: the server \(env.backendLabel(index)) ended the connection that held this session's open transaction or session state",
                                  hint: "Reconnect; the new session goes to the current primary."))
            } else {
                fatal(error)
            }
            return
        }
        log(.info, "server_link_unavailable", ["session": id, "backend": name, "during_login": duringLogin,
                                               "reason": error.message ?? ""])
        if duringLogin && error.sqlState != SQLState.connectionFailure && index != currentPrimary(env) {
            // A replica refused the login (a database it has not replayed yet, too many
            // connections, still starting up): this session avoids it for a while and the unit
            // is routed again; the client hears of it only if no other backend can serve it.
            log(.info, "replica_login_refused", ["session": id, "backend": name, "sqlstate": error.sqlState ?? ""])
            avoid(index, env)
            retryWaiting(env)
            return
        }
        if duringLogin && error.sqlState != SQLState.connectionFailure {
            // The server refused the login itself (e.g. too many connections): tell the client.
            var failure = error
            failure.fields = failure.fields.map { field in
                field.code == ErrorFields.FieldCode.severity || field.code == ErrorFields.FieldCode.severityNonLocalized
                    ? (field.code, "ERROR") : field
            }
            if !waiting.isEmpty {
                refuse(waiting.removeFirst(), failure, env)
                retryWaiting(env)
            }
            return
        }
        // A server that ended an idle connection (idle_session_timeout, a restart) is not
        // known to be down: the next unit simply opens a new connection.
        if !endedWhileIdle { avoid(index, env) }
        retryWaiting(env)
    }

    /// The session just failed to reach this backend: avoided for a while even if the monitor
    /// has not noticed yet.
    private mutating func avoid(_ index: Int, _ env: some SessionEnvironment) {
        avoided[index] = env.now + Self.avoidNanos
    }

    /// The event `linkResponse`, also called directly on the response path.
    mutating func linkResponse(_ index: Int, _ event: ResponseStream.Event, _ env: some SessionEnvironment) {
        guard phase == .relaying, links.at(index) != nil else { return }
        defer { finishEvent(env) }
        switch event {
        case let .clientReady(status):
            links[index]!.status = status
            completeUnit(on: index, status: status, env)
        case let .clientError(body):
            actions.append(.countServerError)
            let retryable = ledger.holding.link == index && body.map(Self.isRetryableOnPrimary) == true
            if let action = ledger.serverError(on: index, retryableElsewhere: retryable) {
                perform(action, on: index, env)
            }
        case let .internalMessage(tag, type, body):
            if tag == Self.lsnCaptureTag, type == BackendMessage.TypeByte.dataRow, let body {
                capture = .inFlight(captured: Self.singleTextValue(body).flatMap(LSN.init(parsing:)))
            } else if type == BackendMessage.TypeByte.errorResponse {
                let message = body.flatMap { try? BackendMessage.decode(type: type, body: $0) }
                var text = ""
                if case let .errorResponse(fields)? = message { text = fields.message ?? "" }
                log(.warn, tag == Self.settingsReplayTag ? "settings_replay_failed" : "internal_request_failed",
                    ["session": id, "backend": env.backendName(index), "message": text])
            }
        case let .internalDone(tag, status):
            links[index]!.status = status
            if links[index]!.internalRequests > 0 { links[index]!.internalRequests -= 1 }
            if tag == Self.lsnCaptureTag { lsnCaptured(env) }
            if tag == Self.batchEndTag { completeUnit(on: index, status: status, env) }
        case .copyInStarted, .copyOutStarted, .fatalError:
            break
        }
    }

    private mutating func completeUnit(on index: Int, status: BackendMessage.TransactionStatus,
                                       _ env: some SessionEnvironment) {
        let (completed, action) = ledger.ready(on: index, tokenPending: capture != .none)
        guard let record = completed else {
            transaction.status = status
            return
        }
        if let action {
            perform(action, on: index, env)
            // A retried read: what the replica said is forgotten, the read runs again.
            if case .retry = action { return }
        }
        transaction.status = status
        let tracked = record.settingsInUnit.filter { !$0.isLocal }
        switch status {
        case .idle:
            let rolledBack = record.sawError || transaction.failed || record.endsWithRollback
            if !rolledBack {
                let before = TrackedSettings.Stamp(session: id, version: settings.version)
                let commands = transaction.settings + tracked
                for command in commands { settings.apply(command) }
                // This server ran the SETs itself: it is up to date — unless it reset a setting
                // the session starts with (its RESET gave the connection's own startup value).
                if links.at(index)?.server.settingsStamp == before {
                    if commands.contains(where: settings.resetsBaseline) {
                        // The server's RESET gave it the connection's own startup value: its
                        // record follows what it ran, and the next unit brings it to the session's.
                        var applied = TrackedSettings(links[index]!.server.settings)
                        for command in commands { applied.apply(command) }
                        links[index]!.server.settings = applied.commands
                        links[index]!.server.settingsStamp = nil
                    } else {
                        links[index]!.server.settings = settings.commands
                        links[index]!.server.settingsStamp = TrackedSettings.Stamp(session: id, version: settings.version)
                    }
                }
            }
            transaction.settings.removeAll()
            transaction.failed = false
            if ledger.isEmpty { transaction.wrote = false }
        case .inTransaction:
            transaction.settings += tracked
        case .failed:
            transaction.failed = true
        }
        routing.inTransaction = status != .idle
        routing.transactionBackend = status != .idle ? index : nil
        if deferredCaptureLink == index && status == .idle {
            deferredCaptureLink = nil
            captureLSN(on: index)
        }
        retryWaiting(env)
        checkShutdown()
    }

    /// Carries out what the ledger decided about held responses.
    mutating func perform(_ action: UnitLedger.Action, on index: Int, _ env: some SessionEnvironment) {
        switch action {
        case .releaseHeld:
            actions.append(.releaseHeld)
        case .awaitToken:
            // The token goes in front of this ReadyForQuery once the LSN is in.
            actions.append(.markHeldReady)
        case .retry(var unit, let onPrimary):
            // The client never sees the refusal (read-only, recovery conflict) or the lost server.
            actions.append(.dropHeld)
            log(.info, "read_retried", ["session": id, "backend": env.backendName(index),
                                        "reason": onPrimary ? "refused" : "server_lost"])
            actions.append(.countRetry)
            unit.forcePrimary = onPrimary
            resend(unit, env)
        }
    }

    private mutating func lsnCaptured(_ env: some SessionEnvironment) {
        if case let .inFlight(lsn?) = capture {
            routing.floor = max(routing.floor ?? lsn, lsn)
            if env.reportLSN {
                actions.append(.insertToken(BackendMessage.parameterStatus(name: "causeway.lsn",
                                                                           value: currentToken(env)).encoded()))
            }
        }
        capture = .none
        if ledger.tokenResolved() != nil { actions.append(.releaseHeld) }
        retryWaiting(env)
        checkShutdown()
    }

    /// Whether a server error lets an autocommit read that returned nothing yet run elsewhere.
    static func isRetryableOnPrimary(_ body: ArraySlice<UInt8>) -> Bool {
        guard case let .errorResponse(fields)? = try? BackendMessage.decode(type: BackendMessage.TypeByte.errorResponse, body: body),
              let state = fields.sqlState else { return false }
        return Router.isRetryableElsewhere(sqlState: state, message: fields.message)
    }

    /// The text of the first column of a one-column DataRow.
    static func singleTextValue(_ body: ArraySlice<UInt8>) -> String? {
        var reader = ByteReader(body, messageType: BackendMessage.TypeByte.dataRow)
        guard let columns = try? reader.readInt16(), columns >= 1, let length = try? reader.readInt32(), length >= 0,
              let bytes = try? reader.readBytes(Int(length)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Draining

    /// DRAIN, or a reload that removed a backend: an idle connection to it closes now; a busy one
    /// at its next transaction boundary; once the time is up, one still busy is cut with an error.
    mutating func releaseDrainingLinks(_ env: some SessionEnvironment) {
        guard phase == .relaying else { return }
        let topology = env.topology
        for index in links.open where topology.backend(at: index)?.draining == true || env.isRemoved(index) {
            // Pinned state (temp tables, advisory locks, LISTEN) lives on the primary's connection:
            // closing it quietly would lose it, so such a session waits for the cut and is told.
            let busy = ledger.hasWork(on: index) || routing.transactionBackend == index || boundLink == index
                || ledger.holding.link == index || (index == primaryIndex && !pins.isEmpty)
            if !busy && isIdle(index) {
                closeLink(index)
                if routing.stickyReplica == index {
                    actions.append(.releaseReplica(index))
                    routing.stickyReplica = nil
                }
                log(.debug, "drained_link_closed", ["session": id, "backend": env.backendName(index)])
            } else if env.drainExpired(index) {
                let name = env.backendName(index)
                log(.warn, "drain_cut", ["session": id, "backend": name])
                fatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                  message: env.isRemoved(index)
                                      ? "terminating connection: backend \(name) was removed from the configuration and this session was still using it when the grace period ended"
                                      : "terminating connection: backend \(name) was drained for maintenance and this session was still using it when the drain timed out",
                                  hint: "Reconnect; new sessions avoid the drained backend."))
                return
            }
        }
    }
}
