// Per-statement rules. The ground truth is what a hot standby accepts: SELECT, COPY TO,
// DECLARE/FETCH/CLOSE, SHOW/SET/RESET, BEGIN/COMMIT/ROLLBACK/SAVEPOINT, LOCK in ACCESS SHARE,
// ROW SHARE or ROW EXCLUSIVE mode, PREPARE/EXECUTE/DEALLOCATE/DISCARD. Everything else, and
// anything not recognized, goes to the primary.
//
// Token ranges are half-open `[start, end)` into `tokens`; `end` is the statement's `;` (or the
// `)` closing a nested query, or the end of the text), never a word, so looking one past the last
// token of a range is always safe.

extension Analyzer {
    /// Classifies one statement. `effects` is false for the body of a PREPARE, which runs later
    /// (at EXECUTE) and therefore pins nothing and sets nothing now.
    mutating func classify(_ start: Int, _ end: Int, effects: Bool) {
        // EXPLAIN, COPY (…), DECLARE and PREPARE classify the statement they wrap; real SQL nests
        // them a level or two, so a deeper text is hostile or broken: send it to the primary
        // rather than recurse without bound.
        guard nesting < 8 else {
            result.isWrite = true
            return
        }
        nesting += 1
        defer { nesting -= 1 }
        var first = start
        while first < end, tokens[first].kind == .leftParen { first += 1 }
        guard first < end, tokens[first].kind == .word else {
            result.isWrite = true
            return
        }
        switch lowercased(tokens[first].byteRange) {
        case "select", "values", "table", "with":
            query(start, end, effects: effects)
        case "explain":
            explain(first, end, effects: effects)
        case "show":
            show(first, end)
        case "set":
            set(first, end)
        case "reset":
            reset(first, end)
        case "begin", "start":
            begin(first, end)
        case "commit", "end":
            commit(first, end)
        case "rollback", "abort":
            rollback(first, end)
        case "savepoint", "release":
            result.transaction = .savepoint
        case "prepare":
            prepare(first, end, effects: effects)
        case "deallocate":
            if isKeyword(end - 1, "all") {
                unpin(.deallocateAll, effects)
            } else {
                let name = isKeyword(first + 1, "prepare") ? first + 2 : first + 1
                if name == end - 1 { result.deallocates = identifier(name) }
            }
        case "declare":
            declare(first, end, effects: effects)
        case "fetch", "move":
            break
        case "close":
            if isKeyword(first + 1, "all") { unpin(.closeAllCursors, effects) }
        case "copy":
            copy(first, end, effects: effects)
        case "lock":
            lock(first, end)
        case "listen":
            result.isWrite = true
            pin(.listen, effects)
        case "unlisten":
            result.isWrite = true
            if isOperator(first + 1, "*") { unpin(.unlistenAll, effects) }
        case "discard":
            discard(first, end, effects: effects)
        case "wait":
            break  // WAIT FOR LSN (PostgreSQL 19) is meant for standbys.
        case "create":
            result.isWrite = true
            if createsTemporaryObject(first, end) { pin(.temporaryTable, effects) }
            functionCalls(start, end, effects: effects)
        default:
            // INSERT, UPDATE, DELETE, MERGE, TRUNCATE, CALL, DO, EXECUTE, DDL, VACUUM, ANALYZE,
            // CLUSTER, REINDEX, REFRESH, CHECKPOINT, NOTIFY, LOAD, … and anything unknown.
            result.isWrite = true
            functionCalls(start, end, effects: effects)
        }
    }

    // MARK: - Queries

    /// SELECT / VALUES / TABLE / WITH. The lexer has already removed strings, comments and quoted
    /// identifiers, so these words can only be SQL here: a data-modifying statement in a WITH
    /// (at any depth), a locking clause, or SELECT … INTO.
    private mutating func query(_ start: Int, _ end: Int, effects: Bool) {
        for index in start..<end where tokens[index].kind == .word {
            // `t.update` is a column and `AS delete` an alias, not statements.
            let qualifiedOrAlias = index > start && (tokens[index - 1].kind == .dot || isKeyword(index - 1, "as"))
            if isKeyword(index, "insert") || isKeyword(index, "update") || isKeyword(index, "delete")
                || isKeyword(index, "merge") {
                // Also FOR UPDATE / FOR NO KEY UPDATE.
                if !qualifiedOrAlias { result.isWrite = true }
            } else if isKeyword(index, "share") {
                // FOR SHARE / FOR KEY SHARE.
                if isKeyword(index - 1, "for") || isKeyword(index - 1, "key") { result.isWrite = true }
            } else if isKeyword(index, "into") {
                // INSERT INTO / MERGE INTO are caught above; anything else is SELECT … INTO.
                if !(isKeyword(index - 1, "insert") || isKeyword(index - 1, "merge")), !qualifiedOrAlias {
                    result.isWrite = true
                    if intoTargetIsTemporary(index + 1) { pin(.temporaryTable, effects) }
                }
            }
        }
        functionCalls(start, end, effects: effects)
    }

    private func intoTargetIsTemporary(_ index: Int) -> Bool {
        var index = index
        if isKeyword(index, "global") || isKeyword(index, "local") { index += 1 }
        if isKeyword(index, "temp") || isKeyword(index, "temporary") { return true }
        if isKeyword(index, "table") { index += 1 }
        return isKeyword(index, "pg_temp") && index + 1 < tokens.count && tokens[index + 1].kind == .dot
    }

    /// EXPLAIN runs its statement only with ANALYZE; plain EXPLAIN of anything is a read.
    private mutating func explain(_ first: Int, _ end: Int, effects: Bool) {
        var index = first + 1
        var analyze = false
        if index < end, tokens[index].kind == .leftParen {
            let close = matchingClose(index, end)
            let optionDepth = tokens[index].depth + 1
            for option in index + 1..<close
            where tokens[option].depth == optionDepth && (isKeyword(option, "analyze") || isKeyword(option, "analyse")) {
                let value = option + 1
                if value < close, tokens[value].kind != .comma {
                    // ANALYZE false / off / 0; anything we cannot read counts as on.
                    analyze = literalText(value).flatMap(parseBoolean) ?? true
                } else {
                    analyze = true
                }
            }
            index = close + 1
        } else {
            while isKeyword(index, "analyze") || isKeyword(index, "analyse") || isKeyword(index, "verbose") {
                if !isKeyword(index, "verbose") { analyze = true }
                index += 1
            }
        }
        if analyze { classify(index, end, effects: effects) }
    }

    /// COPY … FROM writes, COPY … TO reads; `COPY (query) TO` is as much a write as its query.
    private mutating func copy(_ first: Int, _ end: Int, effects: Bool) {
        var index = first + 1
        if index < end, tokens[index].kind == .leftParen {
            let close = matchingClose(index, end)
            classify(index + 1, close, effects: effects)
            if !isKeyword(close + 1, "to") { result.isWrite = true }
            return
        }
        let depth = tokens[first].depth
        while index < end {
            if tokens[index].depth == depth {
                if isKeyword(index, "from") { break }
                if isKeyword(index, "to") { return }
            }
            index += 1
        }
        result.isWrite = true
    }

    /// DECLARE name … CURSOR [WITH HOLD] FOR query.
    private mutating func declare(_ first: Int, _ end: Int, effects: Bool) {
        var index = first + 2  // past the cursor's name
        var withHold = false
        while index < end, !isKeyword(index, "for") {
            if isKeyword(index, "with"), isKeyword(index + 1, "hold") { withHold = true }
            index += 1
        }
        guard index < end else {
            result.isWrite = true
            return
        }
        if withHold { pin(.holdCursor, effects) }
        classify(index + 1, end, effects: effects)
    }

    /// PREPARE TRANSACTION, or SQL-level PREPARE name [(types)] AS statement.
    private mutating func prepare(_ first: Int, _ end: Int, effects: Bool) {
        if isKeyword(first + 1, "transaction") {
            result.isWrite = true
            setTransactionEffect(.prepareTransaction)
            return
        }
        pin(.sqlPrepare, effects)
        let depth = tokens[first].depth
        var index = first + 1
        while index < end, !(isKeyword(index, "as") && tokens[index].depth == depth) { index += 1 }
        guard index < end else {
            result.isWrite = true
            return
        }
        classify(index + 1, end, effects: false)
    }

    /// LOCK is allowed on a standby only in ACCESS SHARE, ROW SHARE and ROW EXCLUSIVE modes;
    /// plain LOCK means ACCESS EXCLUSIVE.
    private mutating func lock(_ first: Int, _ end: Int) {
        let depth = tokens[first].depth
        var index = first + 1
        while index < end, !(isKeyword(index, "in") && tokens[index].depth == depth) { index += 1 }
        let mode = index + 1
        let weak = isKeyword(mode + 2, "mode")
            && ((isKeyword(mode, "access") && isKeyword(mode + 1, "share"))
                || (isKeyword(mode, "row") && (isKeyword(mode + 1, "share") || isKeyword(mode + 1, "exclusive"))))
        if index >= end || !weak { result.isWrite = true }
    }

    private mutating func discard(_ first: Int, _ end: Int, effects: Bool) {
        if isKeyword(first + 1, "all") {
            unpin(.discardAll, effects)
            // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and RESET ALL.
            appendSessionCommand(.reset(name: "session_authorization"), sql: "SET SESSION AUTHORIZATION DEFAULT", isLocal: false)
            appendSessionCommand(.resetAll, sql: "RESET ALL", isLocal: false)
        } else if isKeyword(first + 1, "temp") || isKeyword(first + 1, "temporary") {
            unpin(.discardTemp, effects)
        }
    }

    /// CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY …, or anything created in `pg_temp`
    /// (a view over a temporary table is temporary too). ON COMMIT DROP tables vanish with their
    /// transaction, which is on the primary anyway, so they do not pin.
    private func createsTemporaryObject(_ first: Int, _ end: Int) -> Bool {
        var index = first + 1
        if isKeyword(index, "or"), isKeyword(index + 1, "replace") { index += 2 }
        if isKeyword(index, "global") || isKeyword(index, "local") { index += 1 }
        var temporary = isKeyword(index, "temp") || isKeyword(index, "temporary")
        if !temporary {
            temporary = (first + 1..<end).contains {
                isKeyword($0, "pg_temp") && $0 + 1 < end && tokens[$0 + 1].kind == .dot
            }
        }
        guard temporary else { return false }
        let onCommitDrop = (first + 1..<end).contains {
            isKeyword($0, "on") && isKeyword($0 + 1, "commit") && isKeyword($0 + 2, "drop")
        }
        return !onCommitDrop
    }

    // MARK: - Transaction control

    private mutating func begin(_ first: Int, _ end: Int) {
        var index = first + 1
        if isKeyword(first, "start") {
            guard isKeyword(index, "transaction") else {
                result.isWrite = true  // START something else: not a statement we know
                return
            }
            index += 1
        } else if isKeyword(index, "work") || isKeyword(index, "transaction") {
            index += 1
        }
        let readOnly = transactionModes(index, end).readOnly
        if readOnly == false { result.isWrite = true }
        result.transaction = .begin(readOnly: readOnly)
        if !blockOpen {
            blockOpen = true
            blockReadOnly = readOnly
        }
    }

    private mutating func commit(_ first: Int, _ end: Int) {
        if isKeyword(first + 1, "prepared") {
            result.isWrite = true  // COMMIT PREPARED 'gid'
            return
        }
        setTransactionEffect(.commit, chained: chains(first, end))
    }

    private mutating func rollback(_ first: Int, _ end: Int) {
        if isKeyword(first + 1, "prepared") {
            result.isWrite = true  // ROLLBACK PREPARED 'gid'
            return
        }
        var index = first + 1
        if isKeyword(index, "work") || isKeyword(index, "transaction") { index += 1 }
        if isKeyword(index, "to") {
            result.transaction = .savepoint  // ROLLBACK TO [SAVEPOINT] name
            return
        }
        setTransactionEffect(.rollback, chained: chains(first, end))
    }

    /// `… AND CHAIN` starts a new transaction at once, so the block stays open.
    private func chains(_ first: Int, _ end: Int) -> Bool {
        (first + 1..<max(first + 1, end)).contains { isKeyword($0, "chain") && !isKeyword($0 - 1, "no") }
    }

    private mutating func setTransactionEffect(_ effect: TransactionEffect, chained: Bool = false) {
        result.transaction = effect
        if !chained {
            blockOpen = false
            blockReadOnly = nil
        }
    }

    private mutating func setTransaction(readOnly: Bool?) {
        result.transaction = .setTransaction(readOnly: readOnly)
        if readOnly == false { result.isWrite = true }
        if blockOpen, let readOnly { blockReadOnly = readOnly }
    }

    struct TransactionModes {
        var isolation: String?
        var readOnly: Bool?
        var deferrable: Bool?
    }

    /// ISOLATION LEVEL …, READ ONLY | READ WRITE, [NOT] DEFERRABLE, in any order.
    private func transactionModes(_ start: Int, _ end: Int) -> TransactionModes {
        var modes = TransactionModes()
        var index = start
        while index < end {
            if isKeyword(index, "isolation"), isKeyword(index + 1, "level") {
                index += 2
                if isKeyword(index, "serializable") {
                    modes.isolation = "serializable"
                    index += 1
                } else if isKeyword(index, "repeatable"), isKeyword(index + 1, "read") {
                    modes.isolation = "repeatable read"
                    index += 2
                } else if isKeyword(index, "read"), isKeyword(index + 1, "committed") {
                    modes.isolation = "read committed"
                    index += 2
                } else if isKeyword(index, "read"), isKeyword(index + 1, "uncommitted") {
                    modes.isolation = "read uncommitted"
                    index += 2
                }
            } else if isKeyword(index, "read"), isKeyword(index + 1, "only") {
                modes.readOnly = true
                index += 2
            } else if isKeyword(index, "read"), isKeyword(index + 1, "write") {
                modes.readOnly = false
                index += 2
            } else if isKeyword(index, "not"), isKeyword(index + 1, "deferrable") {
                modes.deferrable = false
                index += 2
            } else if isKeyword(index, "deferrable") {
                modes.deferrable = true
                index += 1
            } else {
                index += 1
            }
        }
        return modes
    }

    // MARK: - Session commands

    private mutating func set(_ first: Int, _ end: Int) {
        var index = first + 1
        var isLocal = false
        if isKeyword(index, "local") {
            isLocal = true
            index += 1
        } else if isKeyword(index, "session"), !isKeyword(index + 1, "authorization"),
                  !isKeyword(index + 1, "characteristics") {
            index += 1
        }

        if isKeyword(index, "transaction") {
            setTransaction(readOnly: isKeyword(index + 1, "snapshot") ? nil : transactionModes(index + 1, end).readOnly)
            return
        }
        if isKeyword(index, "session"), isKeyword(index + 1, "characteristics") {
            sessionCharacteristics(index + 2, end)
            return
        }
        if isKeyword(index, "constraints") { return }  // SET CONSTRAINTS: this transaction only

        let name: String
        let valueStart: Int
        if isKeyword(index, "session"), isKeyword(index + 1, "authorization") {
            (name, valueStart) = ("session_authorization", index + 2)
        } else if isKeyword(index, "role") {
            (name, valueStart) = ("role", index + 1)
        } else if isKeyword(index, "time"), isKeyword(index + 1, "zone") {
            (name, valueStart) = ("timezone", index + 2)
        } else if isKeyword(index, "names") {
            (name, valueStart) = ("client_encoding", index + 1)
        } else if isKeyword(index, "schema") {
            (name, valueStart) = ("search_path", index + 1)
        } else if isKeyword(index, "xml"), isKeyword(index + 1, "option") {
            (name, valueStart) = ("xmloption", index + 2)
        } else if let parsed = dottedName(index, end), isKeyword(parsed.next, "to") || isOperator(parsed.next, "=") {
            (name, valueStart) = (parsed.name, parsed.next + 1)
        } else {
            result.isWrite = true  // not a SET we understand
            return
        }
        guard valueStart < end else {
            result.isWrite = true
            return
        }
        let isDefault = valueStart + 1 == end
            && (isKeyword(valueStart, "default") || (name == "timezone" && isKeyword(valueStart, "local")))

        if name.hasPrefix("causeway.") {
            intercept(causewayCommand(name, valueStart, end, isLocal: isLocal, isDefault: isDefault))
            return
        }
        switch name {
        case "transaction_read_only":
            // `SET transaction_read_only = off` is refused by a standby.
            let value = valueStart + 1 == end ? literalText(valueStart).flatMap(parseBoolean) : nil
            if value == nil, !isDefault { result.isWrite = true }
            setTransaction(readOnly: value)
        case "transaction_isolation", "transaction_deferrable":
            setTransaction(readOnly: nil)
        default:
            let action: SessionCommand.Action =
                isDefault ? .reset(name: name) : .set(name: name, value: sourceText(valueStart, end))
            appendSessionCommand(action, sql: sourceText(first, end), isLocal: isLocal)
        }
    }

    /// SET SESSION CHARACTERISTICS AS TRANSACTION modes: the session defaults for later
    /// transactions, tracked as the equivalent `default_transaction_*` settings.
    private mutating func sessionCharacteristics(_ start: Int, _ end: Int) {
        var index = start
        if isKeyword(index, "as") { index += 1 }
        if isKeyword(index, "transaction") { index += 1 }
        let modes = transactionModes(index, end)
        // The standby documentation lists READ WRITE here among the commands it refuses.
        if modes.readOnly == false { result.isWrite = true }
        if let isolation = modes.isolation {
            appendSessionCommand(.set(name: "default_transaction_isolation", value: "'\(isolation)'"),
                                 sql: "SET default_transaction_isolation = '\(isolation)'", isLocal: false)
        }
        if let readOnly = modes.readOnly {
            let value = readOnly ? "on" : "off"
            appendSessionCommand(.set(name: "default_transaction_read_only", value: value),
                                 sql: "SET default_transaction_read_only = \(value)", isLocal: false)
        }
        if let deferrable = modes.deferrable {
            let value = deferrable ? "on" : "off"
            appendSessionCommand(.set(name: "default_transaction_deferrable", value: value),
                                 sql: "SET default_transaction_deferrable = \(value)", isLocal: false)
        }
    }

    private mutating func reset(_ first: Int, _ end: Int) {
        let index = first + 1
        let name: String
        if isKeyword(index, "all") {
            appendSessionCommand(.resetAll, sql: sourceText(first, end), isLocal: false)
            unpin(.resetAll, true)
            return
        } else if isKeyword(index, "session"), isKeyword(index + 1, "authorization") {
            name = "session_authorization"
        } else if isKeyword(index, "time"), isKeyword(index + 1, "zone") {
            name = "timezone"
        } else if let parsed = dottedName(index, end) {
            name = parsed.name
        } else {
            result.isWrite = true
            return
        }
        if name.hasPrefix("causeway.") {
            intercept(causewaySetting(name).map { $0 == .lsn ? readOnlyLSN() : .reset($0) } ?? unknownCausewaySetting(name))
            return
        }
        if name.hasPrefix("transaction_") { return }  // transaction-scoped; nothing to track
        appendSessionCommand(.reset(name: name), sql: sourceText(first, end), isLocal: false)
    }

    private mutating func show(_ first: Int, _ end: Int) {
        guard let parsed = dottedName(first + 1, end), parsed.name.hasPrefix("causeway.") else { return }
        intercept(causewaySetting(parsed.name).map(CausewayCommand.show) ?? unknownCausewaySetting(parsed.name))
    }

    private mutating func appendSessionCommand(_ action: SessionCommand.Action, sql: String, isLocal: Bool) {
        result.sessionCommands.append(
            SessionCommand(action: action, sql: sql, isLocal: isLocal, inTransactionBlock: blockOpen))
    }

    // MARK: - causeway.* settings

    private mutating func intercept(_ command: CausewayCommand) {
        causewayStatements += 1
        result.causewayCommand = command
    }

    private func causewayCommand(_ name: String, _ valueStart: Int, _ end: Int, isLocal: Bool, isDefault: Bool) -> CausewayCommand {
        guard let setting = causewaySetting(name) else { return unknownCausewaySetting(name) }
        if setting == .lsn { return readOnlyLSN() }
        if isLocal {
            return .invalid(sqlState: "0A000", message: "SET LOCAL is not supported for \(name); use SET")
        }
        if isDefault { return .reset(setting) }
        guard valueStart + 1 == end, let value = literalText(valueStart) else {
            return .invalid(sqlState: "22023", message: "invalid value for parameter \"\(name)\": expected a single value")
        }
        switch setting {
        case .route:
            if let hint = RouteHint(rawValue: asciiLowercased(value)) { return .setRoute(hint) }
            return invalidValue(name, value, expected: "primary, replica or auto")
        case .consistency:
            if let mode = ConsistencyMode(rawValue: asciiLowercased(value)) { return .setConsistency(mode) }
            return invalidValue(name, value, expected: "eventual, session or strong")
        case .minLSN:
            if let lsn = LSN(parsing: value) { return .setMinLSN(lsn) }
            if let token = CausalToken(parsing: value) { return .setToken(token) }
            return invalidValue(name, value, expected: "a token from SHOW causeway.lsn, or an LSN such as '16/B374D848'")
        case .lsn:
            return readOnlyLSN()
        }
    }

    private func causewaySetting(_ name: String) -> CausewaySetting? {
        CausewaySetting(rawValue: String(name.dropFirst("causeway.".count)))
    }

    private func unknownCausewaySetting(_ name: String) -> CausewayCommand {
        .invalid(sqlState: "42704", message: "unrecognized configuration parameter \"\(name)\"")
    }

    private func readOnlyLSN() -> CausewayCommand {
        .invalid(sqlState: "55P02",
                 message: "parameter \"causeway.lsn\" cannot be changed; SET causeway.min_lsn raises the session's floor")
    }

    private func invalidValue(_ name: String, _ value: String, expected: String) -> CausewayCommand {
        .invalid(sqlState: "22023", message: "invalid value for parameter \"\(name)\": \"\(value)\" (expected \(expected))")
    }

    // MARK: - Function calls

    /// Records every `name(` call and applies the built-in function rules.
    private mutating func functionCalls(_ start: Int, _ end: Int, effects: Bool) {
        var index = start
        while index + 1 < end {
            defer { index += 1 }
            let kind = tokens[index].kind
            guard kind == .word || kind == .quotedIdentifier, tokens[index + 1].kind == .leftParen else { continue }
            // `AS alias(cols)`, `INTO t(cols)`, `TABLE t(cols)` name relations, not functions.
            if index > start, isKeyword(index - 1, "as") || isKeyword(index - 1, "into") || isKeyword(index - 1, "table") {
                continue
            }
            guard let name = identifier(index) else { continue }
            if kind == .word, BuiltinFunctions.notFunctions.contains(name) { continue }
            if seenFunctions.insert(name).inserted { result.functions.append(name) }
            if BuiltinFunctions.requiresPrimary(name) { result.isWrite = true }
            if BuiltinFunctions.sessionAdvisoryLocks.contains(name) {
                pin(.sessionAdvisoryLock, effects)
            } else if name == "pg_advisory_unlock_all" {
                unpin(.advisoryUnlockAll, effects)
            } else if name == "set_config", effects {
                setConfig(open: index + 1, end)
            }
        }
    }

    /// `set_config(name, value, is_local)`. Local settings end with the transaction: nothing to do.
    /// Session settings with literal arguments are tracked like SET (and replayed as the same
    /// call); anything else cannot be replayed, so it pins the session where it ran.
    private mutating func setConfig(open: Int, _ end: Int) {
        // Literal arguments take a handful of tokens; looking further only costs time (and a text
        // of nested calls would cost quadratic time).
        let close = matchingClose(open, end, limit: 16)
        let depth = tokens[open].depth + 1
        var arguments: [Range<Int>] = []
        var argumentStart = open + 1
        for index in open + 1...close where index == close || (tokens[index].kind == .comma && tokens[index].depth == depth) {
            arguments.append(argumentStart..<index)
            argumentStart = index + 1
        }
        func literal(_ range: Range<Int>) -> String? { range.count == 1 ? literalText(range.lowerBound) : nil }

        guard close < tokens.count, tokens[close].kind == .rightParen, arguments.count == 3 else {
            pin(.untrackedSetting, true)
            return
        }
        let isLocal = literal(arguments[2]).flatMap(parseBoolean)
        if isLocal == true { return }
        guard isLocal == false, let name = literal(arguments[0]), isPlainSettingName(name),
              let value = literal(arguments[1])
        else {
            pin(.untrackedSetting, true)
            return
        }
        let lowered = asciiLowercased(name)
        if lowered == "transaction_read_only", parseBoolean(value) == false { result.isWrite = true }
        let sql = "SELECT pg_catalog.set_config(\(quoteLiteral(lowered)), \(quoteLiteral(value)), false)"
        appendSessionCommand(.set(name: lowered, value: quoteLiteral(value)), sql: sql, isLocal: false)
    }

    private func isPlainSettingName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { isLetter($0) || isDigit($0) || $0 == .underscore || $0 == .dot }
    }

    private func quoteLiteral(_ value: String) -> String {
        var quoted = "'"
        for character in value {
            quoted.append(character)
            if character == "'" { quoted.append("'") }
        }
        return quoted + "'"
    }

    // MARK: - Pins

    private mutating func pin(_ reason: PinReason, _ effects: Bool) {
        if effects { result.pinChanges.append(.pin(reason)) }
    }

    private mutating func unpin(_ effect: UnpinEffect, _ effects: Bool) {
        if effects { result.pinChanges.append(.unpin(effect)) }
    }
}
