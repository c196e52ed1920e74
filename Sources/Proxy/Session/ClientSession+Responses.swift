import CLibUV
import CShims
import Router
import Wire

/// Responses coming back from server links, and links going away.
extension ClientSession: ServerLinkDelegate {
    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        updateLinkReading()
        retryBlocked()
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
        if copyLink == index { copyLink = nil }
        let hadWork = inFlight.contains { $0.link == index }
        let heldState = index == primaryIndex && (!pins.isEmpty || transactionStatus != .idle)
        if hadWork || (routing.transactionBackend == index && transactionStatus != .idle) || heldState {
            // The server died with the client's work or state on it: PostgreSQL's own behaviour
            // for a lost connection is to end the session, and that is the honest answer here.
            log.warn("server_link_lost", ["session": id, "backend": link.backend.config.name, "in_flight": hadWork])
            sendFatal(error)
            return
        }
        log.info("server_link_unavailable", ["session": id, "backend": link.backend.config.name,
                                             "during_login": duringLogin, "reason": error.message ?? ""])
        if duringLogin && error.sqlState != SQLState.connectionFailure {
            // The server refused the login itself (e.g. too many connections): tell the client.
            var failure = error
            failure.fields = failure.fields.map { field in
                field.code == ErrorFields.FieldCode.severity || field.code == ErrorFields.FieldCode.severityNonLocalized
                    ? (field.code, "ERROR") : field
            }
            if let unit = blockedUnit {
                blockedUnit = nil
                refuseBlocked(unit, failure)
            }
            return
        }
        markUnavailable(index)
        retryBlocked()
    }

    private func refuseBlocked(_ unit: RequestUnit, _ error: ErrorFields) {
        var reply = RequestUnit()
        reply.localReply = [BackendMessage.errorResponse(error).encoded()]
        if unit.end == .flush {
            discardUntilSync = true
        } else {
            reply.localReply!.append(BackendMessage.readyForQuery(transactionStatus).encoded())
        }
        dispatch(reply)
        processInbound()
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?) -> Bool {
        guard phase == .relaying else { return false }
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
            if let position = inFlight.firstIndex(where: { $0.link == link.backendIndex }) {
                inFlight[position].unit.sawError = true
            }
            _ = body
        case let .internalMessage(tag, type, body):
            if type == BackendMessage.TypeByte.errorResponse {
                let message = body.flatMap { try? BackendMessage.decode(type: type, body: $0) }
                var text = ""
                if case let .errorResponse(fields)? = message { text = fields.message ?? "" }
                log.warn(tag == Self.settingsReplayTag ? "settings_replay_failed" : "internal_request_failed",
                         ["session": id, "backend": link.backend.config.name, "message": text])
            }
        case .internalDone:
            break
        case .copyInStarted:
            copyLink = link.backendIndex
        case .copyOutStarted, .fatalError:
            break
        }
    }

    func linkDrained(_ link: ServerLink) {
        updateClientReading()
    }

    func completeUnit(on link: ServerLink, status: BackendMessage.TransactionStatus) {
        guard let position = inFlight.firstIndex(where: { $0.link == link.backendIndex }) else {
            transactionStatus = status
            return
        }
        let record = inFlight.remove(at: position).unit
        transactionStatus = status
        let tracked = record.settingsInUnit.filter { !$0.isLocal }
        switch status {
        case .idle:
            let rolledBack = record.sawError || transactionFailed || record.classification?.transaction == .rollback
            if !rolledBack {
                let before = settings.version
                for command in settingsInTransaction + tracked { settings.apply(command) }
                if link.appliedSettingsVersion == before { link.appliedSettingsVersion = settings.version }
            }
            settingsInTransaction.removeAll()
            transactionFailed = false
        case .inTransaction:
            settingsInTransaction += tracked
        case .failed:
            transactionFailed = true
        }
        routing.inTransaction = status != .idle
        routing.transactionBackend = status != .idle ? link.backendIndex : nil
        if inFlight.isEmpty { updateLinkReading() }
        retryBlocked()
        if shuttingDown && isQuiet {
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                  message: "terminating connection because causeway is shutting down"))
        }
    }

    func markUnavailable(_ index: Int) {
        unavailable.insert(index)
        unavailableUntil = cw_monotonic_nanos() + 2_000_000_000
    }
}
