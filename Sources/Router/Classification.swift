// What the classifier says about one query text (which may hold several statements).

/// Effect of a transaction-control statement.
public enum TransactionEffect: Sendable, Equatable {
    /// BEGIN / START TRANSACTION; `readOnly` is the declared access mode (nil: not declared).
    case begin(readOnly: Bool?)
    /// COMMIT / END (also COMMIT AND CHAIN).
    case commit
    /// ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT, which is `.savepoint`).
    case rollback
    /// SET TRANSACTION … or `SET transaction_read_only|transaction_isolation|transaction_deferrable`.
    case setTransaction(readOnly: Bool?)
    /// SAVEPOINT, RELEASE [SAVEPOINT], ROLLBACK TO [SAVEPOINT].
    case savepoint
    /// PREPARE TRANSACTION (ends the transaction block; the transaction lives on as a prepared one).
    case prepareTransaction
}

/// Why a session must stay on the primary for the rest of its life (until released).
public enum PinReason: String, Sendable, Hashable, CaseIterable {
    /// CREATE TEMP TABLE/VIEW/SEQUENCE, SELECT … INTO TEMP, objects created in `pg_temp`.
    case temporaryTable
    /// `pg_advisory_lock[_shared]` / `pg_try_advisory_lock[_shared]` (session-level locks).
    case sessionAdvisoryLock
    /// DECLARE … WITH HOLD.
    case holdCursor
    /// LISTEN.
    case listen
    /// SQL-level PREPARE.
    case sqlPrepare
    /// `set_config(name, value, false)` whose arguments are not all literals: the proxy cannot
    /// replay it on other connections, so the session stays where it ran.
    case untrackedSetting
}

/// A statement that lets (some) pins go.
public enum UnpinEffect: String, Sendable, Hashable, CaseIterable {
    /// DEALLOCATE [PREPARE] ALL.
    case deallocateAll
    /// UNLISTEN *.
    case unlistenAll
    /// DISCARD ALL: releases every pin.
    case discardAll
    /// DISCARD TEMP / DISCARD TEMPORARY.
    case discardTemp
    /// CLOSE ALL.
    case closeAllCursors
    /// `pg_advisory_unlock_all()`.
    case advisoryUnlockAll
    /// RESET ALL (forgets `set_config(…, false)` values).
    case resetAll

    /// Whether this effect removes the reason for `pin`.
    public func releases(_ pin: PinReason) -> Bool {
        switch self {
        case .discardAll: true
        case .deallocateAll: pin == .sqlPrepare
        case .unlistenAll: pin == .listen
        case .discardTemp: pin == .temporaryTable
        case .closeAllCursors: pin == .holdCursor
        case .advisoryUnlockAll: pin == .sessionAdvisoryLock
        case .resetAll: pin == .untrackedSetting
        }
    }
}

/// One step of a query's effect on the session's pins, in statement order.
public enum PinChange: Sendable, Equatable {
    case pin(PinReason)
    case unpin(UnpinEffect)
}

/// Routing preference: per query (leading comment) or per session (`SET causeway.route`).
public enum RouteHint: String, Sendable, CaseIterable {
    case auto, primary, replica
}

/// Read consistency (design §6).
public enum ConsistencyMode: String, Sendable, CaseIterable {
    /// Any replica within the lag bounds.
    case eventual
    /// Read-your-writes and monotonic reads: replicas must have replayed the session floor.
    case session
    /// Everything to the primary.
    case strong
}

/// A tracked session-state statement the proxy replays on every server connection the session uses.
public struct SessionCommand: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// `name` is the lower-cased parameter (`SET TIME ZONE` → `timezone`, `SET NAMES` →
        /// `client_encoding`, `SET SCHEMA` → `search_path`, `SET ROLE` → `role`,
        /// `SET SESSION AUTHORIZATION` → `session_authorization`); `value` is the value's SQL text
        /// exactly as written (for `set_config` the second argument's literal).
        case set(name: String, value: String)
        /// RESET name, SET name TO DEFAULT.
        case reset(name: String)
        /// RESET ALL. Like PostgreSQL, it leaves `role` and `session_authorization` alone.
        case resetAll
    }

    public var action: Action
    /// The statement to replay, exactly as the client wrote it (or synthesized for
    /// `SET SESSION CHARACTERISTICS` and `set_config`).
    public var sql: String
    /// SET LOCAL: lasts only until the end of the current transaction; never replay it.
    public var isLocal: Bool
    /// An earlier statement of the same query text opened a transaction block that is still open
    /// here, so the setting only sticks if that transaction commits. (The proxy knows on its own
    /// whether the session was already inside a transaction when the query arrived.)
    public var inTransactionBlock: Bool

    public init(action: Action, sql: String, isLocal: Bool = false, inTransactionBlock: Bool = false) {
        self.action = action
        self.sql = sql
        self.isLocal = isLocal
        self.inTransactionBlock = inTransactionBlock
    }

    public static func set(name: String, value: String, sql: String) -> SessionCommand {
        SessionCommand(action: .set(name: name, value: value), sql: sql)
    }

    public static func reset(name: String, sql: String) -> SessionCommand {
        SessionCommand(action: .reset(name: name), sql: sql)
    }

    public static func resetAll(sql: String) -> SessionCommand {
        SessionCommand(action: .resetAll, sql: sql)
    }
}

/// A `causeway.*` setting the proxy answers itself; never sent to a server.
public enum CausewaySetting: String, Sendable, CaseIterable {
    /// `causeway.route`: primary | replica | auto.
    case route
    /// `causeway.consistency`: eventual | session | strong.
    case consistency
    /// `causeway.min_lsn`: raises the session floor (the token from another connection).
    case minLSN = "min_lsn"
    /// `causeway.lsn`: the session's floor, read-only.
    case lsn
}

/// An intercepted command (only recognized when it is the whole query).
public enum CausewayCommand: Sendable, Equatable {
    case setRoute(RouteHint)
    case setConsistency(ConsistencyMode)
    case setMinLSN(LSN)
    /// `SET causeway.min_lsn = '<token>'` with a full token from `SHOW causeway.lsn`.
    case setToken(CausalToken)
    /// RESET causeway.x or SET causeway.x TO DEFAULT.
    case reset(CausewaySetting)
    case show(CausewaySetting)
    /// Answer with an ErrorResponse carrying this SQLSTATE and message.
    case invalid(sqlState: String, message: String)
}

/// The routing-relevant facts about one query text.
public struct Classification: Sendable, Equatable {
    /// Must run on the primary (writes and everything a hot standby rejects or that only makes
    /// sense there). Unknown or unparsable statements count as writes.
    public var isWrite: Bool
    /// The last transaction-control statement of the text.
    public var transaction: TransactionEffect?
    /// Pin and unpin steps in statement order; use `pin`/`unpin` or `applyingPinChanges(to:)`.
    public var pinChanges: [PinChange]
    public var sessionCommands: [SessionCommand]
    /// Leading `/* causeway: primary|replica|auto */` comment.
    public var hint: RouteHint?
    public var causewayCommand: CausewayCommand?
    /// Names of the functions the text calls: unquoted names lower-cased, quoted names verbatim,
    /// without schema. Each name appears once.
    public var functions: [String]
    /// Non-empty statements in the text.
    public var statementCount: Int
    /// The text opens a transaction block and leaves it open (BEGIN without a later COMMIT/ROLLBACK).
    public var leavesTransactionOpen: Bool
    /// Declared access mode of the transaction left open (BEGIN … READ ONLY, or SET TRANSACTION
    /// READ ONLY after the BEGIN); nil when none was declared.
    public var transactionReadOnly: Bool?
    /// `DEALLOCATE [PREPARE] name`: the statement's name as PostgreSQL reads it (unquoted names
    /// lower-cased). A proxy that renames protocol-level statements answers it for them.
    public var deallocates: String?

    public init(
        isWrite: Bool = false,
        transaction: TransactionEffect? = nil,
        pin: PinReason? = nil,
        unpin: UnpinEffect? = nil,
        sessionCommands: [SessionCommand] = [],
        hint: RouteHint? = nil,
        causewayCommand: CausewayCommand? = nil,
        functions: [String] = [],
        statementCount: Int = 1,
        leavesTransactionOpen: Bool = false,
        transactionReadOnly: Bool? = nil
    ) {
        self.isWrite = isWrite
        self.transaction = transaction
        self.pinChanges = (unpin.map { [PinChange.unpin($0)] } ?? []) + (pin.map { [PinChange.pin($0)] } ?? [])
        self.sessionCommands = sessionCommands
        self.hint = hint
        self.causewayCommand = causewayCommand
        self.functions = functions
        self.statementCount = statementCount
        self.leavesTransactionOpen = leavesTransactionOpen
        self.transactionReadOnly = transactionReadOnly
    }

    /// The pin this query leaves in place (the first one not released later in the same text).
    public var pin: PinReason? {
        guard !pinChanges.isEmpty else { return nil }
        let surviving = applyingPinChanges(to: [])
        for case let .pin(reason) in pinChanges where surviving.contains(reason) { return reason }
        return nil
    }

    /// The first unpin effect in the text.
    public var unpin: UnpinEffect? {
        for case let .unpin(effect) in pinChanges { return effect }
        return nil
    }

    /// The session's pins after this query, given the pins it had before.
    public func applyingPinChanges(to pins: Set<PinReason>) -> Set<PinReason> {
        var pins = pins
        for change in pinChanges {
            switch change {
            case .pin(let reason): pins.insert(reason)
            case .unpin(let effect): pins = pins.filter { !effect.releases($0) }
            }
        }
        return pins
    }

    /// True if any called function is in `volatileFunctions` (or this is already a write).
    public func isWrite(volatileFunctions: Set<String>) -> Bool {
        isWrite || (!volatileFunctions.isEmpty && functions.contains { volatileFunctions.contains($0) })
    }
}
