import Router
import Wire

/// `SET causeway.*` / `SHOW causeway.*` / `RESET causeway.*`: the session's own settings, answered
/// by the proxy and never sent to a server.
extension SessionMachine {
    /// Sent with Parse/Bind/Execute (JDBC, asyncpg, psycopg once it prepares): answered message
    /// by message, as a server would.
    mutating func answerCausewayBatch(_ unit: RequestUnit, _ env: some SessionEnvironment) {
        for parse in unit.parses { statements[parse.name] = parse.statement }
        var framer = MessageFramer(maximumLength: 1 << 30)
        framer.append(unit.bytes)
        var writer = ByteWriter()
        var portals: [String: String] = [:]
        var failed = false
        func command(of statement: String) -> CausewayCommand? {
            // The unit's bytes carry the proxy's names for named statements.
            if let named = statements[statement] { return named.classification.causewayCommand }
            return statements.values.first { ServerSessionState.statementName($0.id) == statement }?
                .classification.causewayCommand
        }
        func describe(_ command: CausewayCommand?) {
            if case let .show(setting)? = command {
                ResultSet(columns: ["causeway.\(setting.rawValue)"], rows: []).encodeDescription(into: &writer)
            } else {
                BackendMessage.noData.encode(into: &writer)
            }
        }
        while let (type, body) = try? framer.nextTyped() {
            if failed && type != FrontendMessage.TypeByte.sync { continue }
            // The messages were validated when they arrived.
            guard let request = try? FrontendRequest.decode(type: type, body: body) else { continue }
            switch request {
            case let .parse(name, _, _):
                if command(of: name) == nil {
                    encodeLocalError(ErrorFields(
                        severity: .error, sqlState: SQLState.featureNotSupported,
                        message: "causeway.* commands cannot share an extended-protocol batch with other statements",
                        hint: "Send SET/SHOW causeway.* in a batch of its own."), into: &writer)
                    failed = true
                } else {
                    BackendMessage.parseComplete.encode(into: &writer)
                }
            case let .bind(portal, statement):
                portals[portal] = statement
                BackendMessage.bindComplete.encode(into: &writer)
            case let .describe(kind, name):
                if kind == .statement {
                    BackendMessage.parameterDescription([]).encode(into: &writer)
                    describe(command(of: name))
                } else {
                    describe(command(of: portals[name] ?? ""))
                }
            case let .execute(portal):
                guard let command = command(of: portals[portal] ?? "") else {
                    encodeLocalError(ErrorFields(severity: .error, sqlState: SQLState.invalidCursorName,
                                                 message: "portal \"\(portal)\" does not exist"), into: &writer)
                    failed = true
                    continue
                }
                applyCausewayCommand(command, into: &writer, withDescription: false, env)
                if case .invalid = command { failed = true }
            case let .close(_, name):
                statements.removeValue(forKey: name)
                BackendMessage.closeComplete.encode(into: &writer)
            case .sync:
                BackendMessage.readyForQuery(transaction.status).encode(into: &writer)
                failed = false
            default:
                break
            }
        }
        actions.append(.writeClient(writer.bytes))
    }

    mutating func answerCausewayCommand(_ command: CausewayCommand, _ env: some SessionEnvironment) {
        var writer = ByteWriter()
        applyCausewayCommand(command, into: &writer, withDescription: true, env)
        BackendMessage.readyForQuery(transaction.status).encode(into: &writer)
        actions.append(.writeClient(writer.bytes))
    }

    /// An error the proxy answers itself (counted for SHOW STATS and /metrics).
    private mutating func encodeLocalError(_ error: ErrorFields, into writer: inout ByteWriter) {
        actions.append(.countProxyError(error.sqlState))
        BackendMessage.errorResponse(error).encode(into: &writer)
    }

    /// Carries out one `causeway.*` command and encodes its result (for SHOW, the row; with its
    /// RowDescription in the simple protocol, where no Describe came first).
    private mutating func applyCausewayCommand(_ command: CausewayCommand, into writer: inout ByteWriter,
                                               withDescription: Bool, _ env: some SessionEnvironment) {
        switch command {
        case let .setRoute(hint):
            routing.hint = hint
            BackendMessage.commandComplete("SET").encode(into: &writer)
        case let .setConsistency(mode):
            routing.consistency = mode
            BackendMessage.commandComplete("SET").encode(into: &writer)
        case let .setMinLSN(lsn):
            routing.floor = max(routing.floor ?? lsn, lsn)
            BackendMessage.commandComplete("SET").encode(into: &writer)
        case let .setToken(token):
            if let problem = acceptToken(token, env) {
                encodeLocalError(problem, into: &writer)
            } else {
                BackendMessage.commandComplete("SET").encode(into: &writer)
            }
        case let .reset(setting):
            switch setting {
            case .route: routing.hint = .auto
            case .consistency: routing.consistency = configuredConsistency
            case .minLSN, .lsn: break
            }
            BackendMessage.commandComplete("RESET").encode(into: &writer)
        case let .show(setting):
            let value: String
            switch setting {
            case .route: value = routing.hint.rawValue
            case .consistency: value = routing.consistency.rawValue
            case .minLSN, .lsn: value = currentToken(env)
            }
            let result = ResultSet(columns: ["causeway.\(setting.rawValue)"], rows: [[value]])
            if withDescription {
                result.encode(into: &writer)
            } else {
                result.encodeRows(into: &writer)
            }
        case let .invalid(sqlState, message):
            encodeLocalError(ErrorFields(severity: .error, sqlState: sqlState, message: message), into: &writer)
        }
    }

    /// The session's floor as a token other connections can present; a bare LSN while the
    /// monitor has not read the cluster's identity yet.
    func currentToken(_ env: some SessionEnvironment) -> String {
        let floor = routing.floor ?? LSN(0)
        let topology = env.topology
        guard let timeline = topology.timeline, let identifier = topology.systemIdentifier else {
            return floor.description
        }
        return CausalToken(timeline: timeline, lsn: floor, systemIdentifier: identifier).description
    }

    /// Raises the floor to a token's position if it belongs to this cluster.
    mutating func acceptToken(_ token: CausalToken, _ env: some SessionEnvironment) -> ErrorFields? {
        let topology = env.topology
        if let identifier = topology.systemIdentifier, identifier != token.systemIdentifier {
            return ErrorFields(severity: .error, sqlState: SQLState.invalidParameterValue,
                               message: "causeway.min_lsn token belongs to another cluster (system identifier \(token.systemIdentifier); this cluster is \(identifier))",
                               hint: "Tokens are only meaningful for the cluster that issued them.")
        }
        if let timeline = topology.timeline, token.timeline > timeline {
            return ErrorFields(severity: .error, sqlState: SQLState.invalidParameterValue,
                               message: "causeway.min_lsn token is from timeline \(token.timeline), newer than this cluster's timeline \(timeline)",
                               hint: "The token was issued after a failover this cluster has not followed.")
        }
        // An older timeline is fine: LSNs keep increasing across a promotion, so the position
        // still bounds what the session saw.
        routing.floor = max(routing.floor ?? token.lsn, token.lsn)
        return nil
    }
}
