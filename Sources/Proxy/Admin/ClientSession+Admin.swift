import CLibUV
import Router
import Wire

/// The admin console (database `causeway`).
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
        status.code.store(UInt32(ClientState.idle.rawValue), ordering: .relaxed)
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
}
