import Router
import Wire

/// A protocol-level prepared statement as the client defined it; the proxy re-creates it on any
/// server that has to execute it.
struct PreparedStatement {
    var query: String
    var parameterTypes: [UInt32]
    var classification: Classification
}

/// Session settings (SET …) the proxy replays on every server connection the session uses.
/// Kept compact: the last command per parameter, in the order they were issued.
struct TrackedSettings {
    private(set) var version = 0
    private var commands: [(name: String, sql: String)] = []

    var isEmpty: Bool { commands.isEmpty }

    mutating func apply(_ command: SessionCommand) {
        guard !command.isLocal else { return }
        switch command.action {
        case let .set(name, _):
            commands.removeAll { $0.name == name }
            commands.append((name, command.sql))
        case let .reset(name):
            commands.removeAll { $0.name == name }
            commands.append((name, command.sql))
        case .resetAll:
            // RESET ALL leaves role and session authorization alone, as PostgreSQL does.
            commands.removeAll { $0.name != "role" && $0.name != "session_authorization" }
            commands.append(("*reset_all", command.sql))
        }
        version += 1
    }

    /// One simple-query text that brings a fresh or stale connection to the session's settings.
    var replaySQL: String {
        commands.map { $0.sql.hasSuffix(";") ? String($0.sql.dropLast()) : $0.sql }.joined(separator: "; ")
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
    /// Statements this unit defines (Parse), in order.
    var parses: [(name: String, statement: PreparedStatement)] = []
    /// Statements it uses that it does not define itself (Bind/Describe of a named statement).
    var uses: [String] = []
    /// Statements it closes.
    var closes: [String] = []
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
        bytes += part.bytes
        end = part.end
        parses += part.parses
        for name in part.uses where !uses.contains(name) && !parses.contains(where: { $0.name == name }) {
            uses.append(name)
        }
        closes += part.closes
        completions += part.completions
        if let other = part.classification { merge(other) }
        executes = executes || part.executes
        mayStartCopy = mayStartCopy || part.mayStartCopy
    }

    mutating func append(_ type: UInt8, _ body: ArraySlice<UInt8>) {
        // A batch (Parse, Bind, Execute, Sync) would otherwise grow the buffer three times.
        if bytes.capacity == 0 { bytes.reserveCapacity(max(256, body.count + 5)) }
        bytes.append(type)
        let length = UInt32(body.count + 4)
        bytes.append(UInt8(length >> 24))
        bytes.append(UInt8(length >> 16 & 0xff))
        bytes.append(UInt8(length >> 8 & 0xff))
        bytes.append(UInt8(length & 0xff))
        bytes.append(contentsOf: body)
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
