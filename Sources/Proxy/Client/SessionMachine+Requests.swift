import Router
import Wire

/// Client messages: cutting them into units, routing each unit, and bringing the chosen link up to
/// date (closed statements, settings, prepared statements) before it runs the unit.
extension SessionMachine {
    /// What the request assembler needs of the session: the Router's classification and the
    /// statements the client prepared.
    struct AssemblyContext<Environment: SessionEnvironment>: RequestContext {
        let env: Environment
        let statements: [String: PreparedStatement]
        func classify(_ text: String) -> Classification { env.classify(text) }
        func statement(named name: String) -> PreparedStatement? { statements[name] }
        func statementID(query: String, parameterTypes: [UInt32]) -> UInt64 {
            env.statementID(query: query, parameterTypes: parameterTypes)
        }
        func freshStatementID() -> UInt64 { env.freshStatementID() }
    }

    /// The event `clientMessage`, also called directly on the request path.
    mutating func clientMessage(_ request: FrontendRequest, type: UInt8, body: ArraySlice<UInt8>,
                                _ env: some SessionEnvironment) {
        guard phase == .relaying else { return }
        defer { finishEvent(env) }
        // The context's reference to `statements` must be gone before a unit is sent: sending
        // records the unit's Parse there, and a second reference would copy the whole table.
        let (first, second) = requests.receive(request, type: type, body: body,
                                               context: AssemblyContext(env: env, statements: statements))
        if let first { perform(first, type, body, env) }
        if let second {
            if case let .unit(unit) = second, !waiting.isEmpty {
                // What was pending of a batch had to wait: the Query or FunctionCall follows it.
                waiting.append(unit)
            } else {
                perform(second, type, body, env)
            }
        }
    }

    private mutating func perform(_ output: RequestAssembler.Output, _ type: UInt8, _ body: ArraySlice<UInt8>,
                                  _ env: some SessionEnvironment) {
        switch output {
        case let .unit(unit):
            dispatch(unit, env)
        case .copy:
            forwardCopyMessage(type, body)
        case .syncAfterRefusal:
            var unit = RequestUnit()
            unit.end = .sync
            unit.localReply = [BackendMessage.readyForQuery(transaction.status).encoded()]
            dispatch(unit, env)
        case .terminate:
            end()
        }
    }

    /// CopyData/CopyDone/CopyFail go to the server that was sent the statement before them —
    /// at once, even before its CopyInResponse is back: clients such as asyncpg send the data
    /// right behind the COPY. (A server not in copy mode ignores them, as the protocol says.)
    private mutating func forwardCopyMessage(_ type: UInt8, _ body: ArraySlice<UInt8>) {
        guard let index = lastLink, links.at(index) != nil else { return }
        var message = RequestUnit()
        message.append(type, body)
        actions.append(.sendToLink(index, message.bytes))
    }

    // MARK: - Dispatch

    mutating func dispatch(_ unit: RequestUnit, _ env: some SessionEnvironment) {
        guard phase == .relaying else { return }
        // The floor is about to rise: route nothing new until it has.
        if capture != .none && boundLink == nil {
            block(unit)
            return
        }
        // Replies the proxy makes itself must come after everything already in flight.
        if let reply = unit.localReply {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            for message in reply { actions.append(.writeClient(message)) }
            return
        }
        if unit.usesCausewayCommand && unit.end != .query && boundLink == nil {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            answerCausewayBatch(unit, env)
            return
        }
        if let command = unit.classification?.causewayCommand, unit.end == .query {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            answerCausewayCommand(command, env)
            return
        }
        if env.transactionPooling && unit.onlyParses && unit.end == .sync && !unit.parses.isEmpty
            && transaction.status == .idle && boundLink == nil && ledger.isEmpty {
            // Only preparing, outside a transaction (libpq's PQprepare, pgbench -M prepared):
            // the proxy takes note and answers; each server connection gets the statement when a
            // client first runs it there (an error in its text is reported then). A client that
            // prepares synchronously, as pgbench does, would otherwise wait for a connection that
            // its own other sessions hold.
            for parse in unit.parses { statements[parse.name] = parse.statement }
            var reply = [[UInt8]](repeating: BackendMessage.parseComplete.encoded(), count: unit.parses.count)
            reply.append(BackendMessage.readyForQuery(.idle).encoded())
            replyLocally(reply, env)
            return
        }
        if unit.end == .query, let name = unit.classification?.deallocates, unit.classification?.statementCount == 1,
           statements[name] != nil, transaction.status != .failed, boundLink == nil, ledger.isEmpty {
            // DEALLOCATE of a protocol-level statement (psycopg evicts its statements this way):
            // servers know it under the proxy's name, which other clients may share, so the
            // proxy answers it. A name the client did not prepare this way goes to the server.
            statements.removeValue(forKey: name)
            replyLocally([BackendMessage.commandComplete("DEALLOCATE").encoded(),
                          BackendMessage.readyForQuery(transaction.status).encoded()], env)
            return
        }
        let target: Int
        let reason: RouteReason
        if boundLink != nil && unit.followsIdleBatch { endIdleBatch() }
        if let bound = boundLink {
            target = bound
            reason = .transaction
        } else if unit.classification == nil && !unit.forcePrimary {
            guard let primary = currentPrimary(env) else {
                refuse(unit, ErrorFields(severity: .error, sqlState: SQLState.connectionFailure,
                                         message: "no primary backend is available"), env)
                return
            }
            // A unit with nothing to classify (a lone Sync, Execute of an open portal) goes where
            // the previous one went.
            target = lastLink ?? primary
            reason = .transaction
        } else {
            let decision = unit.forcePrimary ? primaryDecision(for: unit, env) : route(unit.classification!, env)
            // A replica merely behind the floor gets causal_wait_ms (the monitor polls faster
            // meanwhile); PAUSE holds a new write transaction until RESUME.
            let paused = env.paused
            if decision.shouldWait || paused {
                let clock = UnitWait.Clock(now: env.now, generation: env.topology.generation, paused: paused,
                                           causalWaitNanos: env.causalWaitNanos, pauseTimeoutNanos: env.pauseTimeoutNanos)
                switch unitWait.admit(decision, classification: unit.classification, inTransaction: inTransaction, clock: clock) {
                case .wait:
                    block(unit)
                    actions.append(.waitForTopology)
                    return
                case let .refuse(error):
                    refuse(unit, error, env)
                    return
                case .proceed:
                    break
                }
            } else {
                unitWait = .none
            }
            if let error = decision.error {
                refuse(unit, ErrorFields(severity: .error, sqlState: error.sqlState, message: error.message), env)
                return
            }
            guard let chosen = decision.target else {
                refuse(unit, ErrorFields(severity: .error, sqlState: SQLState.connectionFailure,
                                         message: "no backend available for this query"), env)
                return
            }
            target = chosen
            reason = decision.reason
        }
        if links.at(target) == nil {
            // Connecting starts now, even if the unit then waits for the servers ahead of it.
            links.put(target, LinkState(phase: .opening))
            actions.append(.openLink(target))
        }
        // Responses must reach the client in request order: a unit for another server waits
        // until the servers ahead of it have answered.
        if let head = ledger.headLink, head != target {
            block(unit)
            return
        }
        guard links.at(target)?.phase == .ready else {
            block(unit)
            return
        }
        send(unit, to: target, reason: reason, env)
    }

    /// A new query arrives while an extended batch that ran nothing (Parse/Describe and Flush,
    /// as asyncpg prepares a statement) is open on a server without its Sync. The query is
    /// routed on its own; the batch is ended on its server with a Sync whose ReadyForQuery the
    /// client never asked for and does not get, and the query waits until that server's
    /// responses are complete, so responses still reach the client in order.
    private mutating func endIdleBatch() {
        guard let index = boundLink else { return }
        boundLink = nil
        guard links.at(index) != nil else { return }
        actions.append(.sendToLink(index, FrontendMessage.sync.encoded()))
        actions.append(.noteBatchEnd(index))
        links[index]!.internalRequests += 1
        ledger.batchEnded(on: index)
    }

    /// Where a unit that must run on the primary goes: a function call (a write), or a read
    /// re-run there after a replica refused it.
    private func primaryDecision(for unit: RequestUnit, _ env: some SessionEnvironment) -> RouteDecision {
        let reason: RouteReason = unit.classification?.isWrite == true ? .write : .fallback
        guard let primary = currentPrimary(env) else {
            return RouteDecision(target: nil, isPrimary: true, reason: reason,
                                 error: RoutingError(kind: .noPrimary, sqlState: SQLState.connectionFailure,
                                                     message: "no primary backend is available"))
        }
        return RouteDecision(target: primary, isPrimary: true, reason: reason)
    }

    /// `unit`, being dispatched, cannot go yet: it heads the waiting units.
    private mutating func block(_ unit: RequestUnit) {
        waiting.insert(unit, at: 0)
    }

    /// Tries the waiting units again, in order (a link became ready, responses came back, the
    /// topology changed); the connection reads client input again once none waits.
    mutating func retryWaiting(_ env: some SessionEnvironment) {
        while phase == .relaying, !waiting.isEmpty {
            let unit = waiting.removeFirst()
            let behind = waiting.count
            dispatch(unit, env)
            if waiting.count > behind { return }
        }
    }

    /// Runs `unit` again before the units waiting behind it (they came after it).
    mutating func resend(_ unit: RequestUnit, _ env: some SessionEnvironment) {
        waiting.insert(unit, at: 0)
        retryWaiting(env)
    }

    private mutating func route(_ classification: Classification, _ env: some SessionEnvironment) -> RouteDecision {
        // A transaction open on a backend a reload removed finishes there (the link closes at
        // its boundary); the monitor's topology no longer lists that backend.
        if routing.inTransaction, let index = routing.transactionBackend, env.isRemoved(index), links.at(index) != nil {
            return RouteDecision(target: index, isPrimary: index == primaryIndex, reason: .transaction)
        }
        var topology = env.topology
        if !avoided.isEmpty {
            let now = env.now
            avoided = avoided.filter { $0.value > now }
            for position in topology.backends.indices where avoided[topology.backends[position].index] != nil {
                topology.backends[position].health = .down
            }
        }
        // (The cached primary first: computing the topology's primary copies backend records.)
        if env.topologyPrimary == nil, let known = primaryIndex, topology.primary == nil, !topology.hasMultiplePrimaries,
           let position = topology.backends.firstIndex(where: { $0.index == known }),
           topology.backends[position].role == .unknown {
            // The monitor cannot see the cluster yet (or at all), but this session logged in to
            // a server that is not a standby: keep writing there rather than refuse.
            topology.backends[position].role = .primary
            topology.backends[position].health = .up
        }
        routing.pin = pins.first
        let decision = Router.route(classification, session: routing, topology: topology, policy: env.policy,
                                    load: env.replicaLoad)
        if decision.reason == .floor {
            // A replica is only behind this session's own writes: look again soon, so the
            // session's next reads can go back to it as early as the data is there.
            actions.append(.requestFastPoll)
        }
        guard let last = lastReplicaRead else { return decision }
        switch Router.replicaMove(from: last, decision: decision, topology: topology, consistency: routing.consistency,
                                  forcedToReplica: (classification.hint ?? routing.hint) == .replica) {
        case .proceed:
            return decision
        case let .raiseFloor(seen):
            routing.floor = max(routing.floor ?? seen, seen)
            return Router.route(classification, session: routing, topology: topology, policy: env.policy,
                                load: env.replicaLoad)
        case let .usePrimary(primary):
            actions.append(.requestFastPoll)
            return RouteDecision(target: primary, isPrimary: true, reason: .floor)
        }
    }

    func currentPrimary(_ env: some SessionEnvironment) -> Int? {
        if let primary = env.topologyPrimary { return primary }
        // The primary this session logged in to, unless a reload has removed it since.
        guard let primaryIndex, !env.isRemoved(primaryIndex) else { return nil }
        return primaryIndex
    }

    /// Answers `unit` with an error in the proxy's name (after whatever is in flight); the rest
    /// of its batch is dropped up to Sync, as a server would. The one refusal path.
    mutating func refuse(_ unit: RequestUnit, _ error: ErrorFields, _ env: some SessionEnvironment) {
        actions.append(.countProxyError(error.sqlState))
        var reply = [BackendMessage.errorResponse(error).encoded()]
        if unit.continuesBatch {
            requests.discardUntilSync()
        } else {
            reply.append(BackendMessage.readyForQuery(transaction.status == .idle ? .idle : .failed).encoded())
        }
        replyLocally(reply, env)
    }

    /// Messages the proxy answers with itself, in order after whatever is in flight.
    private mutating func replyLocally(_ messages: [[UInt8]], _ env: some SessionEnvironment) {
        var local = RequestUnit()
        local.localReply = messages
        dispatch(local, env)
    }

    // MARK: - Sending

    private mutating func send(_ unit: RequestUnit, to index: Int, reason: RouteReason, _ env: some SessionEnvironment) {
        var out: [UInt8] = []
        // The server connection first gets the session's settings, where they differ.
        let stamp = TrackedSettings.Stamp(session: id, version: settings.version)
        if links[index]!.server.settingsStamp != stamp {
            if let sql = settings.replaySQL(from: links[index]!.server.settings) {
                out += FrontendMessage.query(sql).encoded()
                actions.append(.expect(index, .settingsReplay(tag: Self.settingsReplayTag)))
                links[index]!.internalRequests += 1
                // A simple query destroys the server's unnamed statement.
                links[index]!.server.unnamed = nil
            }
            links[index]!.server.settings = settings.commands
            links[index]!.server.settingsStamp = stamp
        }
        // Statements the unit uses that this server does not have: prepared first, their
        // ParseCompletes swallowed.
        let firstTick = links[index]!.server.nextTick
        var parses: ByteWriter?
        var injectedParses = 0
        for name in unit.uses {
            guard let statement = statements[name] else { continue }
            if name.isEmpty {
                guard links[index]!.server.unnamed != statement.id else { continue }
                links[index]!.server.unnamed = statement.id
            } else if links[index]!.server.has(statement.id) {
                links[index]!.server.touch(statement.id)
                continue
            } else {
                if links[index]!.server.isUncertain(statement.id) {
                    if parses == nil { parses = ByteWriter() }
                    FrontendMessage.close(kind: .statement, name: ServerSessionState.statementName(statement.id))
                        .encode(into: &parses!)
                    injectedParses += 1
                }
                links[index]!.server.touch(statement.id)
            }
            if parses == nil { parses = ByteWriter() }
            FrontendMessage.parse(name: name.isEmpty ? "" : ServerSessionState.statementName(statement.id),
                                  query: statement.query, parameterTypes: statement.parameterTypes).encode(into: &parses!)
            injectedParses += 1
        }
        // The client's own Parses: one of a statement this server already has (another client
        // prepared the same text here) is preceded by a Close of it, whose CloseComplete is
        // swallowed, so the Parse succeeds as the client expects.
        var reparsed: [RequestUnit.Parse] = []
        for parse in unit.parses {
            if parse.name.isEmpty {
                links[index]!.server.unnamed = parse.statement.id
                continue
            }
            let id = parse.statement.id
            if links[index]!.server.has(id) || links[index]!.server.isUncertain(id) { reparsed.append(parse) }
            links[index]!.server.touch(id)
        }
        // Beyond max_prepared_statements, the least recently used go (not those this unit uses).
        let evicted = links[index]!.server.evict(toFit: env.maxPreparedStatements, keepFrom: firstTick)
        if !evicted.isEmpty {
            var writer = ByteWriter()
            for statement in evicted {
                FrontendMessage.close(kind: .statement, name: ServerSessionState.statementName(statement)).encode(into: &writer)
            }
            FrontendMessage.sync.encode(into: &writer)
            out += writer.bytes
            actions.append(.expect(index, .internalRequest(tag: Self.closeTag)))
            links[index]!.internalRequests += 1
        }
        if let parses {
            out += parses.bytes
            // Behind whatever of the client's batch is still unanswered (it may have come in parts).
            actions.append(.expect(index, .injectedCompletions(count: injectedParses,
                                                               afterClientCompletions: links[index]!.clientCompletionsSent)))
        }
        var capture = needsLSNCapture(unit, on: index, reason: reason, env)
        if capture && unit.mayStartCopy {
            // A COPY FROM STDIN puts the server in copy mode: a query behind it would be read as
            // stray input. Capture once the unit's ReadyForQuery is back instead.
            capture = false
            deferredCaptureLink = index
        }
        if out.isEmpty && !capture && reparsed.isEmpty {
            actions.append(.sendToLink(index, unit.bytes))
        } else {
            var from = 0
            for parse in reparsed {
                out += unit.bytes[from..<parse.offset]
                out += FrontendMessage.close(kind: .statement, name: ServerSessionState.statementName(parse.statement.id))
                    .encoded()
                from = parse.offset
                actions.append(.expect(index, .injectedCompletions(
                    count: 1, afterClientCompletions: links[index]!.clientCompletionsSent + parse.completionsBefore)))
            }
            out += unit.bytes[from...]
            if capture { out += Self.lsnCaptureQuery }
            actions.append(.sendToLink(index, out))
        }
        actions.append(.noteClientRequest(index, readies: unit.readies, completions: unit.completions))
        links[index]!.clientCompletionsSent += unit.completions
        if capture {
            // Pipelined behind the client's own request: the client's ReadyForQuery is relayed
            // first, the LSN arrives a moment later on the same connection and is swallowed.
            actions.append(.expect(index, .internalRequest(tag: Self.lsnCaptureTag)))
            links[index]!.internalRequests += 1
            self.capture = .inFlight(captured: nil)
        }

        // What the client now has, in the order of its Parse and Close messages.
        var closes = unit.closes[...]
        for parse in unit.parses {
            while let close = closes.first, close.completionsBefore < parse.completionsBefore {
                forget(close.name, on: index)
                closes = closes.dropFirst()
            }
            statements[parse.name] = parse.statement
        }
        for close in closes { forget(close.name, on: index) }
        // A simple query (the client's or the capture) destroys the unnamed statement.
        if unit.end == .query || capture { links[index]!.server.unnamed = nil }
        if unit.executes, let classification = unit.classification {
            // The server drops every prepared statement. The client's stay known to the proxy and
            // are prepared again if used: psycopg runs DEALLOCATE ALL without forgetting its own.
            if classification.pinChanges.contains(.unpin(.discardAll)) {
                links[index]!.server.discardAll()
            } else if classification.pinChanges.contains(.unpin(.deallocateAll)) {
                links[index]!.server.deallocateAll()
            }
            pins = classification.applyingPinChanges(to: pins)
        }

        let primary = currentPrimary(env)
        let onReplica = index != primary
        let retryable = onReplica && ledger.isEmpty && transaction.status == .idle && boundLink == nil
            && unit.end != .flush && !(unit.classification?.leavesTransactionOpen ?? false)
        if let action = ledger.sent(.init(unit: unit, link: index, retryable: retryable,
                                          reportsToken: capture && env.reportLSN)) {
            perform(action, on: index, env)
        }
        boundLink = unit.continuesBatch ? index : nil
        lastLink = index
        if cancelKeyLink != index {
            cancelKeyLink = index
            actions.append(.pointCancelKey(index))
        }
        if index != primaryIndex && index != primary {
            adoptReplica(index)
            // Monotonic reads: later reads must see at least what this one sees, which is at
            // least the replay position the router relied on.
            let topology = env.topology
            if let replay = topology.backend(at: index)?.replayLSN {
                routing.floor = max(routing.floor ?? replay, replay)
            }
            lastReplicaRead = (index, topology.generation)
        }
        actions.append(.countUnit(backend: index, isWrite: index == primary && reason == .write, reason: reason))
    }

    /// The client closed a statement: it is gone for the client; the server keeps the proxy's
    /// copy (shared, and evicted when least used) except the unnamed one.
    private mutating func forget(_ name: String, on index: Int) {
        statements.removeValue(forKey: name)
        if name.isEmpty { links[index]!.server.unnamed = nil }
    }

    /// Sends the LSN capture now (for a unit whose capture had to wait for its ReadyForQuery).
    mutating func captureLSN(on index: Int) {
        actions.append(.sendToLink(index, Self.lsnCaptureQuery))
        actions.append(.expect(index, .internalRequest(tag: Self.lsnCaptureTag)))
        guard links.at(index) != nil else { return }
        links[index]!.server.unnamed = nil
        links[index]!.internalRequests += 1
        capture = .inFlight(captured: nil)
    }

    /// Whether this unit may end a transaction that wrote, so its commit LSN must be captured.
    /// Only units that end outside a transaction qualify: inside one, the LSN would precede the
    /// commit.
    private mutating func needsLSNCapture(_ unit: RequestUnit, on index: Int, reason: RouteReason,
                                          _ env: some SessionEnvironment) -> Bool {
        guard unit.readies > 0, index == currentPrimary(env) || index == primaryIndex else { return false }
        let classification = unit.classification
        let topology = env.topology
        let facts = Router.PrimaryUnit(
            executes: unit.executes,
            writes: unit.forcePrimary || (classification?.isWrite(volatileFunctions: topology.volatileFunctions) ?? false),
            transaction: classification?.transaction, leavesTransactionOpen: classification?.leavesTransactionOpen ?? false,
            reason: reason)
        let rule = Router.captureCommitLSN(after: facts, inTransaction: inTransaction, transactionWrote: transaction.wrote,
                                           consistency: routing.consistency, pinned: !pins.isEmpty)
        transaction.wrote = rule.transactionWrote
        return rule.capture
    }

    /// The session reads from one replica at a time (sticky while eligible); moving to another
    /// closes the old link so a session never holds more than a primary and a replica.
    private mutating func adoptReplica(_ index: Int) {
        guard routing.stickyReplica != index else { return }
        if let old = routing.stickyReplica {
            actions.append(.releaseReplica(old))
            if links.at(old) != nil, isIdle(old), old != primaryIndex { closeLink(old) }
        }
        routing.stickyReplica = index
        actions.append(.adoptReplica(index))
    }

    /// Closes a link the session no longer needs.
    mutating func closeLink(_ index: Int) {
        let state = links.take(index)
        if lastLink == index { lastLink = nil }
        if cancelKeyLink == index { cancelKeyLink = nil }
        actions.append(.closeLink(index, state?.server))
    }
}
