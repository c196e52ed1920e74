import Router
import Wire

/// What the assembler needs to know of the session.
protocol RequestContext {
    /// The Router's classification of a statement text.
    func classify(_ text: String) -> Classification
    /// A prepared statement the client defined earlier in the session.
    func statement(named name: String) -> PreparedStatement?
    /// The proxy's id for a named statement's text and parameter types.
    func statementID(query: String, parameterTypes: [UInt32]) -> UInt64
    /// An id of its own, for an unnamed statement.
    func freshStatementID() -> UInt64
}

/// Cuts the client's message stream after login into request units: a simple Query, a
/// FunctionCall, or an extended-protocol batch up to Sync — forwarded in parts as it arrives
/// (up to a Flush, or up to where the client's input ran out), each later part following the
/// first to the same server. Pure: decoded messages in, units out; routing and sending are the
/// session's.
struct RequestAssembler {
    enum Output {
        /// A unit, or the part of a batch that has arrived, to route and send.
        case unit(RequestUnit)
        /// CopyData/CopyDone/CopyFail outside a batch: for the server that runs the client's COPY.
        case copy
        /// The Sync that ends a batch the proxy refused: answer it with ReadyForQuery.
        case syncAfterRefusal
        case terminate
    }

    /// The same, as closures (for tests and tools).
    struct Context: RequestContext {
        var classifier: (String) -> Classification
        var statements: (String) -> PreparedStatement?
        var ids: (String, [UInt32]) -> UInt64 = { _, _ in 1 }
        func classify(_ text: String) -> Classification { classifier(text) }
        func statement(named name: String) -> PreparedStatement? { statements(name) }
        func statementID(query: String, parameterTypes: [UInt32]) -> UInt64 { ids(query, parameterTypes) }
        func freshStatementID() -> UInt64 { 0 }
    }

    private(set) var pending = RequestUnit()
    /// After the proxy refused part of a batch, the server would skip to Sync: so does the proxy.
    private(set) var discardingUntilSync = false

    /// The client's batch that the proxy refused: the rest up to Sync is dropped.
    mutating func discardUntilSync() {
        discardingUntilSync = true
        pending = RequestUnit()
    }

    /// One message (already validated by Wire); at most two outputs: what was pending of a
    /// batch, then a Query or FunctionCall behind it.
    mutating func receive(_ request: FrontendRequest, type: UInt8, body: ArraySlice<UInt8>,
                          context: some RequestContext) -> (Output?, Output?) {
        if discardingUntilSync {
            guard request == .sync else { return (nil, nil) }
            discardingUntilSync = false
            return (.syncAfterRefusal, nil)
        }
        switch request {
        case let .query(text):
            var unit = standalone(type, body, end: .query)
            unit.classification = context.classify(text)
            if unit.classification?.isWrite == true { unit.mayStartCopy = Self.mentionsCopy(text) }
            return (takePartial(), .unit(unit))
        case .functionCall:
            var unit = standalone(type, body, end: .functionCall)
            unit.classification = Router.functionCallClassification
            unit.forcePrimary = true
            return (takePartial(), .unit(unit))
        case let .parse(name, query, types):
            let classification = context.classify(query)
            if classification.isWrite && Self.mentionsCopy(query) { pending.mayStartCopy = true }
            let id = name.isEmpty ? context.freshStatementID() : context.statementID(query: query, parameterTypes: types)
            pending.parses.append(.init(name: name, statement: PreparedStatement(query: query, parameterTypes: types,
                                                                                classification: classification, id: id),
                                        offset: pending.bytes.count, completionsBefore: pending.completions))
            pending.merge(classification)
            pending.completions += 1
            if !name.isEmpty {
                pending.append(type, body, renamingAt: 0, nameLength: name.utf8.count, to: id)
                return (nil, nil)
            }
        case let .bind(portal, statement):
            pending.onlyParses = false
            if let id = noteUse(of: statement, context) {
                pending.append(type, body, renamingAt: portal.utf8.count + 1, nameLength: statement.utf8.count, to: id)
                return (nil, nil)
            }
        case let .describe(kind, name):
            pending.onlyParses = false
            if kind == .statement, let id = noteUse(of: name, context) {
                pending.append(type, body, renamingAt: 1, nameLength: name.utf8.count, to: id)
                return (nil, nil)
            }
        case let .close(kind, name):
            pending.onlyParses = false
            if kind == .statement { pending.closes.append((name, pending.completions)) }
            pending.completions += 1
            if kind == .statement && !name.isEmpty {
                // The server's statement stays (other clients may share it, and the connection
                // keeps it until evicted); the Close goes to a name that never exists, which
                // the server answers with CloseComplete as PostgreSQL answers any Close.
                pending.append(type, body, renamingAt: 1, nameLength: name.utf8.count, to: 0)
                return (nil, nil)
            }
        case .execute:
            pending.executes = true
            pending.onlyParses = false
        case .sync, .flush:
            if request == .flush { pending.onlyParses = false }
            pending.append(type, body)
            pending.end = request == .sync ? .sync : .flush
            let unit = pending
            pending = unit.end == .flush ? unit.continuation() : RequestUnit()
            return (.unit(unit), nil)
        case .copyData, .copyDone, .copyFail:
            // Outside a batch the data follows its COPY statement; inside one (COPY through the
            // extended protocol) it belongs to the batch.
            guard !pending.isEmpty else { return (.copy, nil) }
            pending.onlyParses = false
        case .terminate:
            return (.terminate, nil)
        }
        pending.append(type, body)
        return (nil, nil)
    }

    /// The client's input ran out: what has arrived of an unfinished batch goes now. PostgreSQL
    /// runs each Execute as it comes and flushes an error at once, and pipelining clients (libpq
    /// pipeline mode, asyncpg's executemany) wait for that before they send Sync.
    mutating func inputEnded() -> RequestUnit? {
        guard !pending.isEmpty, !discardingUntilSync else { return nil }
        pending.end = .partial
        let unit = pending
        pending = unit.continuation()
        return unit
    }

    /// A Query or FunctionCall: it belongs to the open batch's implicit transaction only if that
    /// batch executed something; otherwise it is routed on its own (asyncpg prepares with
    /// Parse/Describe/Flush, then sends COPY as a Query).
    private func standalone(_ type: UInt8, _ body: ArraySlice<UInt8>, end: RequestUnit.End) -> RequestUnit {
        var unit = RequestUnit()
        unit.append(type, body)
        unit.end = end
        unit.executes = true
        unit.followsIdleBatch = !pending.executes
        return unit
    }

    /// What came before a Query or FunctionCall of a batch without Sync goes out first.
    private mutating func takePartial() -> Output? {
        defer { pending = RequestUnit() }
        guard !pending.isEmpty else { return nil }
        pending.end = .partial
        return .unit(pending)
    }

    /// Notes a Bind or Describe of `statement`; the proxy's id of a named statement the client
    /// defined (nil for the unnamed one or a name it never prepared, which the server refuses).
    private mutating func noteUse(of statement: String, _ context: some RequestContext) -> UInt64? {
        if let parse = pending.parses.last(where: { $0.name == statement }) {
            return statement.isEmpty ? nil : parse.statement.id
        }
        if !pending.uses.contains(statement) { pending.uses.append(statement) }
        guard let known = context.statement(named: statement) else { return nil }
        pending.merge(known.classification)
        return statement.isEmpty ? nil : known.id
    }

    /// Cheap and conservative: any mention of COPY (a false positive only delays an LSN capture).
    static func mentionsCopy(_ text: String) -> Bool {
        var state = 0
        for byte in text.utf8 {
            switch (state, byte | 0x20) {
            case (0, UInt8(ascii: "c")): state = 1
            case (1, UInt8(ascii: "o")): state = 2
            case (2, UInt8(ascii: "p")): state = 3
            case (3, UInt8(ascii: "y")): return true
            case (_, UInt8(ascii: "c")): state = 1
            default: state = 0
            }
        }
        return false
    }
}
