import Router
import Wire

/// A protocol-level prepared statement as the client defined it; the proxy re-creates it on any
/// server that has to execute it, under the name `ServerSessionState.statementName(id)` (the
/// unnamed statement stays unnamed).
struct PreparedStatement {
    var query: String
    var parameterTypes: [UInt32]
    var classification: Classification
    /// The proxy's id for this text and parameter types (`StatementCatalog`): statements with
    /// the same id are the same on any server, whichever client prepared them.
    var id: UInt64 = 0
}

/// Session settings (SET …) the proxy brings every server connection the session uses to.
/// Kept compact: the last command per parameter, in the order they were issued. A RESET is not
/// kept: the parameter's wanted value is then its startup value, which RESET gives on a server
/// opened with the same startup parameters.
struct TrackedSettings {
    struct Command: Equatable {
        var name: String
        var sql: String
    }

    /// Which session's settings, at which version, a server was brought to.
    struct Stamp: Equatable {
        var session: Int32
        var version: Int
    }

    private(set) var version = 0
    private(set) var commands: [Command] = []

    var isEmpty: Bool { commands.isEmpty }

    init() {}

    /// Settings a server connection holds, to follow what a query does to them.
    init(_ commands: [Command]) {
        self.commands = commands
    }

    /// Settings the session starts with besides its startup parameters (transaction pooling:
    /// the client's `application_name`); RESET and RESET ALL return to them.
    private(set) var baseline: [Command] = []

    /// Whether `command` resets a baseline setting (on a server it gives the connection's own
    /// startup value, not the session's).
    func resetsBaseline(_ command: SessionCommand) -> Bool {
        switch command.action {
        case let .reset(name): baseline.contains { $0.name == name }
        case .resetAll: !baseline.isEmpty
        case .set: false
        }
    }

    mutating func setBaseline(_ commands: [Command]) {
        baseline = commands
        for command in commands {
            self.commands.removeAll { $0.name == command.name }
            self.commands.append(command)
        }
        version += 1
    }

    mutating func apply(_ command: SessionCommand) {
        guard !command.isLocal else { return }
        switch command.action {
        case let .set(name, _):
            commands.removeAll { $0.name == name }
            commands.append(Command(name: name, sql: command.sql))
        case let .reset(name):
            commands.removeAll { $0.name == name }
            if let base = baseline.first(where: { $0.name == name }) { commands.append(base) }
        case .resetAll:
            // RESET ALL leaves role and session authorization alone, as PostgreSQL does.
            commands.removeAll { $0.name != "role" && $0.name != "session_authorization" }
            commands += baseline
        }
        version += 1
    }

    /// One simple-query text that brings a server with `applied` settings to these: RESET
    /// what it has that the session does not, SET what differs, in the session's order. Nil
    /// when they already agree.
    func replaySQL(from applied: [Command]) -> String? {
        var parts: [String] = []
        for old in applied where !commands.contains(where: { $0.name == old.name }) {
            parts.append(Self.resetSQL(old.name))
        }
        for command in commands where !applied.contains(command) {
            parts.append(command.sql.hasSuffix(";") ? String(command.sql.dropLast()) : command.sql)
        }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }

    static func resetSQL(_ name: String) -> String {
        switch name {
        case "session_authorization": "RESET SESSION AUTHORIZATION"
        case "role": "RESET ROLE"
        default: "RESET \(name)"
        }
    }
}

/// The client messages that travel together to one server: a simple Query, a function call, or an
/// extended-protocol batch up to Sync — or the part of a batch that has arrived so far (`flush`,
/// `partial`): a batch is forwarded as it arrives, and its later parts follow to the same server.
struct RequestUnit {
    enum End {
        case query, sync, functionCall
        /// A Flush: the client wants the responses so far, and the batch goes on.
        case flush
        /// The client's input ran out in the middle of a batch; the rest follows later.
        case partial
    }

    var bytes: [UInt8] = []
    var end: End = .sync
    /// A Parse in this unit: where its message starts in `bytes`, and how many Parse/Close
    /// messages of the unit come before it.
    struct Parse {
        var name: String
        var statement: PreparedStatement
        var offset: Int
        var completionsBefore: Int
    }

    /// Statements this unit defines (Parse), in order.
    var parses: [Parse] = []
    /// Statements it uses that it does not define itself (Bind/Describe of a named statement).
    var uses: [String] = []
    /// Statements it closes, with the number of Parse/Close messages before each.
    var closes: [(name: String, completionsBefore: Int)] = []
    /// Parse and Close messages in it (each answered by a ParseComplete or CloseComplete).
    var completions = 0
    var classification: Classification?
    /// Must run on the primary whatever it looks like (FunctionCall).
    var forcePrimary = false
    /// May start a COPY (nothing may be pipelined behind it).
    var mayStartCopy = false
    /// Runs something (Query, Execute, FunctionCall) rather than only preparing or describing:
    /// only then do its pins and settings take effect.
    var executes = false
    /// Nothing but Parse messages (and the Sync that ends them): the client only prepares.
    var onlyParses = true
    /// Uses a `causeway.*` command through the extended protocol (answered by the proxy).
    var usesCausewayCommand = false
    /// A Query or FunctionCall that arrived while an extended batch that executed nothing was
    /// open without Sync: it need not join that batch's server.
    var followsIdleBatch = false
    /// Answered by the proxy itself, in order with the server responses before it.
    var localReply: [[UInt8]]?

    var isEmpty: Bool { bytes.isEmpty && localReply == nil }

    /// The batch goes on after this part (Flush, or input that ran out before Sync).
    var continuesBatch: Bool { end == .flush || end == .partial }

    /// ReadyForQuery messages the server will send for this unit.
    var readies: Int { continuesBatch ? 0 : 1 }

    /// An empty unit for the rest of this batch, carrying what the batch's parts so far were: the
    /// LSN capture at its Sync depends on whether any part executed a write.
    func continuation() -> RequestUnit {
        var next = RequestUnit()
        next.classification = classification
        next.executes = executes
        next.mayStartCopy = mayStartCopy
        next.usesCausewayCommand = usesCausewayCommand
        return next
    }

    /// Appends a later part of the same batch (for a retry copy that must re-run it whole).
    mutating func absorb(_ part: RequestUnit) {
        let shift = bytes.count, completionShift = completions
        bytes += part.bytes
        end = part.end
        for var parse in part.parses {
            parse.offset += shift
            parse.completionsBefore += completionShift
            parses.append(parse)
        }
        for name in part.uses where !uses.contains(name) && !parses.contains(where: { $0.name == name }) {
            uses.append(name)
        }
        closes += part.closes.map { ($0.name, $0.completionsBefore + completionShift) }
        completions += part.completions
        if let other = part.classification { merge(other) }
        executes = executes || part.executes
        mayStartCopy = mayStartCopy || part.mayStartCopy
        onlyParses = onlyParses && part.onlyParses
    }

    mutating func append(_ type: UInt8, _ body: ArraySlice<UInt8>) {
        appendHeader(type, bodyLength: body.count)
        bytes.append(contentsOf: body)
    }

    /// Appends a message whose statement name (`nameLength` bytes at `nameOffset` in `body`,
    /// before its terminating zero) becomes the proxy's name for statement `id`.
    mutating func append(_ type: UInt8, _ body: ArraySlice<UInt8>, renamingAt nameOffset: Int, nameLength: Int, to id: UInt64) {
        let digits = Self.decimalDigits(id)
        let nameStart = body.startIndex + nameOffset
        appendHeader(type, bodyLength: body.count - nameLength + Self.namePrefix.count + digits)
        bytes.append(contentsOf: body[body.startIndex..<nameStart])
        bytes.append(contentsOf: Self.namePrefix)
        let end = bytes.count + digits
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: digits))
        var value = id, position = end
        repeat {
            position -= 1
            bytes[position] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        } while value > 0
        bytes.append(contentsOf: body[(nameStart + nameLength)...])
    }

    /// `ServerSessionState.statementName` as bytes: "causeway_" and the id in decimal.
    static let namePrefix = Array("causeway_".utf8)

    private static func decimalDigits(_ value: UInt64) -> Int {
        var count = 1, rest = value / 10
        while rest > 0 {
            count += 1
            rest /= 10
        }
        return count
    }

    @inline(__always)
    private mutating func appendHeader(_ type: UInt8, bodyLength: Int) {
        // A batch (Parse, Bind, Execute, Sync) would otherwise grow the buffer three times.
        if bytes.capacity == 0 { bytes.reserveCapacity(max(256, bodyLength + 5)) }
        bytes.append(type)
        let length = UInt32(bodyLength + 4)
        bytes.append(UInt8(length >> 24))
        bytes.append(UInt8(length >> 16 & 0xff))
        bytes.append(UInt8(length >> 8 & 0xff))
        bytes.append(UInt8(length & 0xff))
    }

    /// Folds a statement's classification in: the unit is as demanding as its most demanding part.
    mutating func merge(_ other: Classification) {
        if other.causewayCommand != nil { usesCausewayCommand = true }
        guard let current = classification else {
            classification = other
            return
        }
        if other.isWrite && !current.isWrite { classification = other }
    }
}
