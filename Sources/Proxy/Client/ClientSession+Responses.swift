import CLibUV
import CShims
import Router
import Wire

/// Responses coming back from server links, and links going away.
extension ClientSession: ServerLinkDelegate {
    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        if greeting.parameter("in_hot_standby") != "on" && link.backendIndex == currentPrimaryIndex() {
            notePrimaryLink(link)
            // Every primary login refreshes what later logins like this one are greeted with.
            worker.runtime.greetings.store(greeting.parameters, for: GreetingCache.key(serverStartupParameters()))
        }
        reportParameterChanges(of: link)
        updateLinkReading()
        retryWaiting()
    }

    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool) {
        guard phase == .relaying else { return }
        links.removeValue(forKey: link.backendIndex)
        let index = link.backendIndex
        if routing.stickyReplica == index {
            worker.releaseReplica(index)
            routing.stickyReplica = nil
        }
        if boundLink == index { boundLink = nil }
        if let action = ledger.linkLost(index) {
            // Nothing of this read reached the client yet: run it somewhere else.
            markUnavailable(index)
            perform(action, from: link)
            return
        }
        if lsnCapturePending && (index == primaryIndex || index == currentPrimaryIndex()) {
            // The commit's LSN will not come: stay conservative with the primary's last known
            // position, and let the session go on.
            lsnCapturePending = false
            if let known = worker.topology.primary?.currentLSN { routing.floor = max(routing.floor ?? known, known) }
            if let action = ledger.tokenResolved() { perform(action, from: link) }
        }
        let hadWork = ledger.hasWork(on: index)
        let heldState = index == primaryIndex && (!pins.isEmpty || transactionStatus != .idle)
        if hadWork || (routing.transactionBackend == index && transactionStatus != .idle) || heldState {
            // The server died with the client's work or state on it: PostgreSQL's own behaviour
            // for a lost connection is to end the session, and that is the honest answer here.
            log.warn("server_link_lost", ["session": id, "backend": link.backend.config.name, "in_flight": hadWork])
            if link.sentFatal {
                // The server already said why (e.g. 57P01); PostgreSQL sends nothing after that.
                finish()
            } else if link.endedWhileIdle {
                sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                      message: "terminating connection: the server \(link.backend.label) ended the connection that held this session's open transaction or session state",
                                      hint: "Reconnect; the new session goes to the current primary."))
            } else {
                sendFatal(error)
            }
            return
        }
        log.info("server_link_unavailable", ["session": id, "backend": link.backend.config.name,
                                             "during_login": duringLogin, "reason": error.message ?? ""])
        if duringLogin && error.sqlState != SQLState.connectionFailure && index != currentPrimaryIndex() {
            // A replica refused the login (a database it has not replayed yet, too many
            // connections, still starting up): this session avoids it for a while and the unit
            // is routed again; the client hears of it only if no other backend can serve it.
            log.info("replica_login_refused", ["session": id, "backend": link.backend.config.name,
                                               "sqlstate": error.sqlState ?? ""])
            markUnavailable(index)
            retryWaiting()
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
                refuse(waiting.removeFirst(), failure)
                retryWaiting()
            }
            return
        }
        // A server that ended an idle connection (idle_session_timeout, a restart) is not
        // known to be down: the next unit simply opens a new connection.
        if !link.endedWhileIdle { markUnavailable(index) }
        retryWaiting()
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool {
        guard phase == .relaying else { return false }
        let holding = ledger.holding.link == link.backendIndex
        if let withheld {
            if holding { held += withheld } else { client.write(withheld) }
        }
        if holding {
            if let ranges {
                for range in ranges { held.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[range])) }
            } else {
                held.append(contentsOf: bytes)
            }
            if held.count > UnitLedger.holdLimit, let action = ledger.heldOverflowed() { perform(action, from: link) }
            return false
        }
        defer {
            if client.isAboveHighWater { updateLinkReading() }
        }
        guard let ranges else {
            client.write(chunk: chunk, length: bytes.count)
            return true
        }
        for range in ranges where !range.isEmpty {
            var offset = range.lowerBound
            while offset < range.upperBound {
                let count = min(ChunkPool.capacity, range.upperBound - offset)
                let out = worker.chunks.take()
                ChunkPool.data(out).copyMemory(from: bytes.baseAddress! + offset, byteCount: count)
                client.write(chunk: out, length: count)
                offset += count
            }
        }
        return false
    }

    func link(_ link: ServerLink, event: ResponseStream.Event) {
        guard phase == .relaying else { return }
        switch event {
        case let .clientReady(status):
            completeUnit(on: link, status: status)
        case let .clientError(body):
            worker.runtime.stats.serverErrors.add(1, ordering: .relaxed)
            let retryable = ledger.holding.link == link.backendIndex && body.map(Self.isRetryableOnPrimary) == true
            if let action = ledger.serverError(on: link.backendIndex, retryableElsewhere: retryable) {
                perform(action, from: link)
            }
        case let .internalMessage(tag, type, body):
            if tag == Self.lsnCaptureTag, type == BackendMessage.TypeByte.dataRow, let body {
                capturedLSN = Self.parseSingleTextValue(body).flatMap(LSN.init(parsing:))
            } else if type == BackendMessage.TypeByte.errorResponse {
                let message = body.flatMap { try? BackendMessage.decode(type: type, body: $0) }
                var text = ""
                if case let .errorResponse(fields)? = message { text = fields.message ?? "" }
                log.warn(tag == Self.settingsReplayTag ? "settings_replay_failed" : "internal_request_failed",
                         ["session": id, "backend": link.backend.config.name, "message": text])
            }
        case let .internalDone(tag, status):
            if tag == Self.lsnCaptureTag { lsnCaptured() }
            if tag == Self.batchEndTag { completeUnit(on: link, status: status) }
        case .copyInStarted, .copyOutStarted, .fatalError:
            break
        }
    }

    func linkDrained(_ link: ServerLink) {
        updateClientReading()
    }

    func completeUnit(on link: ServerLink, status: BackendMessage.TransactionStatus) {
        let (completed, action) = ledger.ready(on: link.backendIndex, tokenPending: lsnCapturePending)
        guard let record = completed else {
            transactionStatus = status
            return
        }
        if let action {
            perform(action, from: link)
            // A retried read: what the replica said is forgotten, the read runs again.
            if case .retry = action { return }
        }
        transactionStatus = status
        let tracked = record.settingsInUnit.filter { !$0.isLocal }
        switch status {
        case .idle:
            let rolledBack = record.sawError || transactionFailed || record.endsWithRollback
            if !rolledBack {
                let before = settings.version
                for command in settingsInTransaction + tracked { settings.apply(command) }
                if link.appliedSettingsVersion == before { link.appliedSettingsVersion = settings.version }
            }
            settingsInTransaction.removeAll()
            transactionFailed = false
            if ledger.isEmpty { transactionWrote = false }
        case .inTransaction:
            settingsInTransaction += tracked
        case .failed:
            transactionFailed = true
        }
        routing.inTransaction = status != .idle
        routing.transactionBackend = status != .idle ? link.backendIndex : nil
        if deferredCaptureLink == link.backendIndex && status == .idle {
            deferredCaptureLink = nil
            captureLSN(on: link)
        }
        if ledger.isEmpty { updateLinkReading() }
        publishRunning()
        retryWaiting()
        checkShutdown()
    }

    /// Re-dispatches a unit that has not produced any client-visible output yet.
    func resend(_ unit: RequestUnit) {
        // It goes before the units waiting behind it: they came after it.
        waiting.insert(unit, at: 0)
        retryWaiting()
        updateLinkReading()
    }

    /// Carries out what the ledger decided about held responses.
    func perform(_ action: UnitLedger.Action, from link: ServerLink) {
        switch action {
        case .releaseHeld:
            heldReadyEnd = 0
            flushHeld()
        case .awaitToken:
            // The token goes in front of this ReadyForQuery once the LSN is in.
            heldReadyEnd = held.count
        case .retry(var unit, let onPrimary):
            // The client never sees the refusal (read-only, recovery conflict) or the lost server.
            held.removeAll(keepingCapacity: true)
            log.info("read_retried", ["session": id, "backend": link.backend.config.name,
                                      "reason": onPrimary ? "refused" : "server_lost"])
            worker.runtime.stats.retries.add(1, ordering: .relaxed)
            unit.forcePrimary = onPrimary
            resend(unit)
        }
    }

    func flushHeld() {
        guard !held.isEmpty else { return }
        client.write(held)
        held.removeAll(keepingCapacity: true)
    }

    /// Whether a server error lets an autocommit read that returned nothing yet run elsewhere.
    static func isRetryableOnPrimary(_ body: ArraySlice<UInt8>) -> Bool {
        guard case let .errorResponse(fields)? = try? BackendMessage.decode(type: BackendMessage.TypeByte.errorResponse, body: body),
              let state = fields.sqlState else { return false }
        return Router.isRetryableElsewhere(sqlState: state, message: fields.message)
    }

    private func lsnCaptured() {
        lsnCapturePending = false
        if let lsn = capturedLSN {
            capturedLSN = nil
            routing.floor = max(routing.floor ?? lsn, lsn)
            if worker.settings.reportLSN {
                let status = BackendMessage.parameterStatus(name: "causeway.lsn", value: currentToken()).encoded()
                if heldReadyEnd >= 6 && heldReadyEnd <= held.count {
                    held.insert(contentsOf: status, at: heldReadyEnd - 6)
                } else {
                    client.write(status)
                }
            }
        }
        if let action = ledger.tokenResolved() {
            heldReadyEnd = 0
            if case .releaseHeld = action { flushHeld() }
        }
        retryWaiting()
        checkShutdown()
    }

    /// The text of the first column of a one-column DataRow.
    static func parseSingleTextValue(_ body: ArraySlice<UInt8>) -> String? {
        var reader = ByteReader(body, messageType: BackendMessage.TypeByte.dataRow)
        guard let columns = try? reader.readInt16(), columns >= 1, let length = try? reader.readInt32(), length >= 0,
              let bytes = try? reader.readBytes(Int(length)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    func markUnavailable(_ index: Int) {
        unavailable.insert(index)
        unavailableUntil = cw_monotonic_nanos() + 2_000_000_000
    }
}
