import CLibUV
import Router
import Wire

/// The admin console (database `causeway`) and session-side maintenance for DRAIN.
extension ClientSession {
    static let adminDatabase = "causeway"

    /// After authentication on database `causeway`: greet as a server would, no backend involved.
    func beginAdminSession() {
        guard worker.settings.config.proxy.adminUsers.contains(userName) else {
            log.info("admin_refused", ["session": id, "user": userName])
            sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.insufficientPrivilege,
                                  message: "user \"\(userName)\" may not use the causeway admin console",
                                  hint: "Add the user to proxy.admin_users."))
            return
        }
        isAdmin = true
        var writer = ByteWriter(capacity: 256)
        if let saslFinal { BackendMessage.authentication(.saslFinal(saslFinal)).encode(into: &writer) }
        BackendMessage.authentication(.ok).encode(into: &writer)
        for (name, value) in [("server_version", "15.0 (causeway \(CausewayVersion.string))"), ("server_encoding", "UTF8"),
                              ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"),
                              ("standard_conforming_strings", "on"), ("application_name", startup?["application_name"] ?? "")] {
            BackendMessage.parameterStatus(name: name, value: value).encode(into: &writer)
        }
        BackendMessage.backendKeyData(processID: id, secret: cancelKey.secret).encode(into: &writer)
        BackendMessage.readyForQuery(.idle).encode(into: &writer)
        client.write(writer.bytes)
        saslFinal = nil
        phase = .relaying
        log.info("admin_session_started", ["session": id, "user": userName])
        let early = frontend.takeRemainder()
        if !early.isEmpty { inbound.append(early) }
        client.startReading()
        processInbound()
    }

    func handleAdminMessage(_ type: UInt8, _ body: ArraySlice<UInt8>) {
        var writer = ByteWriter()
        switch type {
        case FrontendMessage.TypeByte.query:
            var reader = ByteReader(body, messageType: type)
            let text = (try? reader.readCString()) ?? ""
            let console = AdminConsole(runtime: worker.runtime, topology: worker.topology)
            var shutdown = false
            switch console.execute(text) {
            case let .rows(result):
                result.encode(into: &writer)
            case let .done(tag):
                if tag == "EMPTY" {
                    BackendMessage.emptyQueryResponse.encode(into: &writer)
                } else {
                    BackendMessage.commandComplete(tag).encode(into: &writer)
                }
            case let .error(fields):
                BackendMessage.errorResponse(fields).encode(into: &writer)
            case .shutdown:
                BackendMessage.commandComplete("SHUTDOWN").encode(into: &writer)
                shutdown = true
            }
            BackendMessage.readyForQuery(.idle).encode(into: &writer)
            client.write(writer.bytes)
            if shutdown {
                log.info("admin_shutdown", ["session": id, "user": userName])
                // The same path as SIGTERM: sessions finish their transactions first.
                raise(SIGTERM)
            }
        case FrontendMessage.TypeByte.terminate:
            clientTerminated = true
            finish()
        case FrontendMessage.TypeByte.sync:
            BackendMessage.errorResponse(ErrorFields(severity: .error, sqlState: SQLState.featureNotSupported,
                                                     message: "the causeway admin console speaks the simple query protocol only")).encode(into: &writer)
            BackendMessage.readyForQuery(.idle).encode(into: &writer)
            client.write(writer.bytes)
        case FrontendMessage.TypeByte.parse, FrontendMessage.TypeByte.bind, FrontendMessage.TypeByte.describe,
             FrontendMessage.TypeByte.execute, FrontendMessage.TypeByte.close, FrontendMessage.TypeByte.flush:
            break // answered at Sync
        default:
            sendFatal(ClientAuthenticator.protocolViolation("unexpected message for the admin console"))
        }
    }

    /// DRAIN, or a reload that removed a backend: an idle connection to it closes now; a busy one
    /// at its next transaction boundary; once the time is up, one still busy is cut with an error.
    func releaseDrainingLinks(_ topology: Topology, _ settings: RuntimeSettings) {
        guard phase == .relaying, !isAdmin else { return }
        for (index, link) in links where topology.backend(at: index)?.draining == true || settings.isRemoved(index) {
            // Pinned state (temp tables, advisory locks, LISTEN) lives on the primary's connection:
            // closing it quietly would lose it, so such a session waits for the cut and is told.
            let busy = ledger.hasWork(on: index) || routing.transactionBackend == index
                || boundLink == index || ledger.holding.link == index
                || (index == primaryIndex && !pins.isEmpty)
            if !busy && link.isIdle {
                dropLink(index, link)
            } else if worker.runtime.drainExpired(index) {
                log.warn("drain_cut", ["session": id, "backend": link.backend.config.name])
                sendFatal(ErrorFields(severity: .fatal, sqlState: SQLState.adminShutdown,
                                      message: settings.isRemoved(index)
                                          ? "terminating connection: backend \(link.backend.config.name) was removed from the configuration and this session was still using it when the grace period ended"
                                          : "terminating connection: backend \(link.backend.config.name) was drained for maintenance and this session was still using it when the drain timed out",
                                      hint: "Reconnect; new sessions avoid the drained backend."))
                return
            }
        }
    }

    private func dropLink(_ index: Int, _ link: ServerLink) {
        links.removeValue(forKey: index)
        link.close()
        if routing.stickyReplica == index {
            worker.releaseReplica(index)
            routing.stickyReplica = nil
        }
        if lastLink == index { lastLink = nil }
        log.debug("drained_link_closed", ["session": id, "backend": link.backend.config.name])
    }
}
