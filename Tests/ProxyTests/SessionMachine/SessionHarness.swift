@testable import Proxy
import Router
import Wire

/// The world as a session machine under test sees it: a primary (backend 0) and two replicas
/// (1 and 2), all caught up at LSN 5000 unless a test says otherwise; a clock that moves only
/// when a test moves it.
struct TestEnvironment: SessionEnvironment {
    var now: UInt64 = 1_000_000_000
    var topology = Topology(generation: 1, backends: [
        BackendStatus(index: 0, name: "pg0", role: .primary, currentLSN: LSN(5000)),
        BackendStatus(index: 1, name: "pg1", role: .replica, replayLSN: LSN(5000)),
        BackendStatus(index: 2, name: "pg2", role: .replica, replayLSN: LSN(5000)),
    ])
    var policy = RoutingPolicy(consistency: .session)
    var replicaLoad = [0, 0, 0]
    var paused = false
    var pauseTimeoutNanos: UInt64 = 30_000_000_000
    var reportLSN = false
    var removed: Set<Int> = []
    var expiredDrains: Set<Int> = []

    var topologyPrimary: Int? {
        guard let primary = topology.primary, primary.health != .down, !topology.hasMultiplePrimaries else { return nil }
        return primary.index
    }

    var transactionPooling = false
    var maxPreparedStatements = 200
    /// A cancel is on its way to the server the session's query runs on.
    var cancelInFlight = false
    let catalog = StatementCatalog()

    func statementID(query: String, parameterTypes: [UInt32]) -> UInt64 {
        catalog.id(query: query, parameterTypes: parameterTypes)
    }
    func freshStatementID() -> UInt64 { catalog.fresh() }
    func quietCancels() -> Bool { !cancelInFlight }

    func isRemoved(_ backend: Int) -> Bool { removed.contains(backend) }
    func drainExpired(_ backend: Int) -> Bool { expiredDrains.contains(backend) }
    func classify(_ text: String) -> Classification {
        QueryClassifier.classify(text, volatileFunctions: topology.volatileFunctions)
    }
    func backendName(_ backend: Int) -> String { "pg\(backend)" }
    func backendLabel(_ backend: Int) -> String { "pg\(backend) (127.0.0.1:\(5432 + backend))" }

    /// A new monitor snapshot with the same backends, changed by `change`.
    mutating func publish(_ change: (inout Topology) -> Void = { _ in }) {
        change(&topology)
        topology.generation += 1
    }

    mutating func setReplay(_ backend: Int, _ lsn: UInt64) {
        publish { $0.backends[backend].replayLSN = LSN(lsn) }
    }
}

/// Drives one `SessionMachine` with events and reads its actions back as short strings:
/// `open 1`, `send 0 P B E S` (the message types of the bytes), `expect 0 capture`,
/// `note 0 readies=1`, `client E Z`, `hold release` … Counting, logging and cancel-key
/// bookkeeping are left out unless `everything` is asked for.
struct SessionHarness {
    var machine = SessionMachine(id: 4_200_001)
    var env = TestEnvironment()
    /// What each connection held when the session last lent it back to its pool.
    var lent: [Int: ServerSessionState] = [:]
    /// The last bytes sent to each link.
    var sent: [Int: [UInt8]] = [:]

    /// The session is logged in; `loginLink` is the server the login used (nil: greeted from
    /// what the proxy knew, no server yet).
    init(consistency: ConsistencyMode = .session, loginLink: Int? = nil, id: Int32 = 4_200_001,
         configure: (inout TestEnvironment) -> Void = { _ in }) {
        machine = SessionMachine(id: id)
        configure(&env)
        machine.configuredConsistency = consistency
        machine.routing.consistency = consistency
        _ = handle(.greeted(status: .idle, parameters: [("server_version", "15.0"), ("in_hot_standby", "off")],
                            loginLink: loginLink, loginLinkIsPrimary: loginLink == 0))
    }

    mutating func handle(_ event: SessionMachine.Event, everything: Bool = false) -> [String] {
        machine.handle(event, env)
        defer { machine.actions.removeAll() }
        for action in machine.actions {
            if case let .lendLink(index, state) = action { lent[index] = state }
            if case let .sendToLink(index, bytes) = action { sent[index] = bytes }
        }
        return machine.actions.compactMap { Self.describe($0, everything: everything) }
    }

    /// Client messages, each decoded as Wire decodes them; then the client's input runs out.
    mutating func client(_ messages: FrontendMessage..., inputPauses: Bool = true) -> [String] {
        var out: [String] = []
        for message in messages {
            let bytes = message.encoded()
            let body = bytes[5...]
            let request = try! FrontendRequest.decode(type: bytes[0], body: body)
            out += handle(.clientMessage(request, type: bytes[0], body: body))
        }
        if inputPauses { out += handle(.clientInputPaused) }
        return out
    }

    mutating func query(_ text: String) -> [String] { client(.query(text)) }

    /// The messages last sent to `backend`, with the names and texts that matter here:
    /// `P causeway_1`, `B causeway_1`, `C S causeway_0`, `Q RESET search_path`, `S`.
    func sentMessages(_ backend: Int) -> [String] {
        var framer = MessageFramer(maximumLength: 1 << 30)
        framer.append(sent[backend] ?? [])
        var out: [String] = []
        while let (type, body) = try? framer.nextTyped() {
            switch try? FrontendRequest.decode(type: type, body: body) {
            case let .query(text)?: out.append("Q \(text)")
            case let .parse(name, _, _)?: out.append("P \(name)")
            case let .bind(_, statement)?: out.append("B \(statement)")
            case let .describe(kind, name)?: out.append("D \(kind == .statement ? "S" : "P") \(name)")
            case let .close(kind, name)?: out.append("C \(kind == .statement ? "S" : "P") \(name)")
            default: out.append(String(UnicodeScalar(type)))
            }
        }
        return out
    }

    /// A pooled connection comes up holding `server` (what another session lent back).
    mutating func linkUp(_ backend: Int, holding server: ServerSessionState) -> [String] {
        var greeting = ServerGreeting()
        greeting.parameters = [("server_version", "15.0"), ("in_hot_standby", backend == 0 ? "off" : "on")]
        greeting.processID = Int32(1000 + backend)
        return handle(.linkReady(backend, greeting, server))
    }

    mutating func linkUp(_ backend: Int, parameters: [(String, String)] = []) -> [String] {
        var greeting = ServerGreeting()
        greeting.parameters = parameters.isEmpty
            ? [("server_version", "15.0"), ("in_hot_standby", backend == 0 ? "off" : "on")] : parameters
        greeting.processID = Int32(1000 + backend)
        return handle(.linkReady(backend, greeting))
    }

    mutating func ready(_ backend: Int, _ status: BackendMessage.TransactionStatus = .idle) -> [String] {
        handle(.linkResponse(backend, .clientReady(status)))
    }

    mutating func serverError(_ backend: Int, _ sqlState: String, _ message: String = "error") -> [String] {
        let bytes = BackendMessage.errorResponse(ErrorFields(severity: .error, sqlState: sqlState, message: message)).encoded()
        return handle(.linkResponse(backend, .clientError(bytes[5...])))
    }

    /// The LSN capture's row and its ReadyForQuery.
    mutating func captured(_ backend: Int, _ lsn: String) -> [String] {
        let text = Array(lsn.utf8)
        let count = UInt32(text.count)
        let body: [UInt8] = [0, 1, UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + text
        return handle(.linkResponse(backend, .internalMessage(tag: SessionMachine.lsnCaptureTag,
                                                              type: BackendMessage.TypeByte.dataRow, body: body[...])))
            + handle(.linkResponse(backend, .internalDone(tag: SessionMachine.lsnCaptureTag, status: .idle)))
    }

    mutating func linkLost(_ backend: Int, duringLogin: Bool = false, sqlState: String = SQLState.connectionFailure,
                           serverSaidWhy: Bool = false, endedWhileIdle: Bool = false) -> [String] {
        handle(.linkFailed(backend, ErrorFields(severity: .fatal, sqlState: sqlState, message: "lost pg\(backend)"),
                           duringLogin: duringLogin, serverSaidWhy: serverSaidWhy, endedWhileIdle: endedWhileIdle))
    }

    static func describe(_ action: SessionAction, everything: Bool) -> String? {
        switch action {
        case let .writeClient(bytes): return "client " + messageTypes(bytes)
        case let .openLink(index): return "open \(index)"
        case let .closeLink(index, _): return "close \(index)"
        case let .lendLink(index, _): return "lend \(index)"
        case let .sendToLink(index, bytes): return "send \(index) " + messageTypes(bytes)
        case let .expect(index, expectation):
            switch expectation {
            case .settingsReplay: return "expect \(index) settings"
            case let .internalRequest(tag):
                let name = [SessionMachine.settingsReplayTag: "settings", SessionMachine.closeTag: "closes",
                            SessionMachine.lsnCaptureTag: "capture"][tag] ?? "tag\(tag)"
                return "expect \(index) \(name)"
            case let .injectedCompletions(count, after, _): return "expect \(index) injected=\(count) after=\(after)"
            case let .clientReadies(count): return "expect \(index) readies=\(count)"
            case .batchEnd: return "expect \(index) batchEnd"
            }
        case let .noteClientRequest(index, readies, completions):
            return "note \(index) readies=\(readies)" + (completions > 0 ? " completions=\(completions)" : "")
        case let .noteBatchEnd(index): return "batchEnd \(index)"
        case .releaseHeld: return "hold release"
        case .dropHeld: return "hold drop"
        case .markHeldReady: return "hold ready"
        case let .insertToken(bytes): return "token " + messageTypes(bytes)
        case .waitForTopology: return "wait topology"
        case let .fatal(error): return "fatal \(error.sqlState ?? "")"
        case .end: return "end"
        case .requestFastPoll: return everything ? "fast poll" : nil
        case let .adoptReplica(index): return everything ? "adopt \(index)" : nil
        case let .releaseReplica(index): return everything ? "release \(index)" : nil
        case let .pointCancelKey(index): return everything ? "cancel key \(index)" : nil
        case let .setRunning(running): return everything ? "running \(running)" : nil
        case let .primaryLinkReady(index, _): return everything ? "primary ready \(index)" : nil
        case let .countUnit(backend, isWrite, reason): return everything ? "count \(backend) \(isWrite ? "write" : "read") \(reason)" : nil
        case let .countProxyError(state): return everything ? "count error \(state ?? "")" : nil
        case .countServerError: return everything ? "count server error" : nil
        case .countRetry: return everything ? "count retry" : nil
        case let .log(_, event, _): return everything ? "log \(event)" : nil
        }
    }

    /// The type letters of the messages in `bytes`, e.g. "P B E S".
    static func messageTypes(_ bytes: [UInt8]) -> String {
        var framer = MessageFramer(maximumLength: 1 << 30)
        framer.append(bytes)
        var types: [String] = []
        while let (type, _) = try? framer.nextTyped() { types.append(String(UnicodeScalar(type))) }
        return types.joined(separator: " ")
    }
}

extension FrontendMessage {
    static func bind(_ statement: String = "", portal: String = "") -> FrontendMessage {
        .bind(Bind(portal: portal, statement: statement, parameterFormats: [], parameters: [], resultFormats: []))
    }

    static func execute(_ portal: String = "") -> FrontendMessage { .execute(portal: portal, maxRows: 0) }
    static func parse(_ name: String = "", _ query: String) -> FrontendMessage { .parse(name: name, query: query, parameterTypes: []) }
}
