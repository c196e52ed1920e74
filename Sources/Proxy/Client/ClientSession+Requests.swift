import CLibUV
import CShims
import Router
import Wire

/// Cutting the client stream into request units, routing them, and bringing each server link up
/// to date (settings, prepared statements) before it runs a unit.
extension ClientSession {
    static let settingsReplayTag = 1
    static let closeTag = 2
    static let lsnCaptureTag = 3
    static let batchEndTag = 4
    static let lsnCaptureQuery = FrontendMessage.query("SELECT pg_catalog.pg_current_wal_insert_lsn()").encoded()

    func processInbound() {
        while phase == .relaying && waiting.isEmpty {
            let frame: (type: UInt8, body: ArraySlice<UInt8>)?
            do {
                frame = try inbound.nextTyped()
            } catch {
                sendFatal(ClientAuthenticator.protocolViolation("invalid message from client: \(error)"))
                return
            }
            guard let frame else { break }
            if isAdmin {
                handleAdminMessage(frame.type, frame.body)
                continue
            }
            let request: FrontendRequest
            do {
                request = try FrontendRequest.decode(type: frame.type, body: frame.body)
            } catch {
                sendFatal(ClientAuthenticator.protocolViolation("invalid message from client: \(error)"))
                return
            }
            let (first, second) = requests.receive(request, type: frame.type, body: frame.body, context: requestContext)
            if let first { perform(first, frame.type, frame.body) }
            if let second {
                if case let .unit(unit) = second, !waiting.isEmpty {
                    // What was pending of a batch had to wait: the Query or FunctionCall follows it.
                    waiting.append(unit)
                } else {
                    perform(second, frame.type, frame.body)
                }
            }
        }
        if phase == .relaying && waiting.isEmpty && !isAdmin, let part = requests.inputEnded() {
            dispatch(part)
        }
        updateClientReading()
    }

    private func perform(_ output: RequestAssembler.Output, _ type: UInt8, _ body: ArraySlice<UInt8>) {
        switch output {
        case let .unit(unit):
            dispatch(unit)
        case .copy:
            forwardCopyMessage(type, body)
        case .syncAfterRefusal:
            var unit = RequestUnit()
            unit.end = .sync
            unit.localReply = [BackendMessage.readyForQuery(transactionStatus).encoded()]
            dispatch(unit)
        case .terminate:
            clientTerminated = true
            finish()
        }
    }

    /// Reads from the client only while its input can go somewhere.
    func updateClientReading() {
        guard phase == .relaying else { return }
        let congested = links.values.contains { $0.stream.isAboveHighWater }
        if !waiting.isEmpty || congested {
            client.stopReading()
        } else {
            client.startReading()
        }
    }

    /// A new query arrives while an extended batch that ran nothing (Parse/Describe and Flush,
    /// as asyncpg prepares a statement) is open on a server without its Sync. The query is
    /// routed on its own; the batch is ended on its server with a Sync whose ReadyForQuery the
    /// client never asked for and does not get, and the query waits until that server's
    /// responses are complete, so responses still reach the client in order.
    private func endIdleBatch() {
        guard let index = boundLink else { return }
        boundLink = nil
        guard let link = links[index] else { return }
        link.send(FrontendMessage.sync.encoded())
        link.noteBatchEnd()
        ledger.batchEnded(on: index)
        updateLinkReading()
    }

    func classify(_ text: String) -> Classification {
        worker.classifications.classify(text, volatileFunctions: worker.topology.volatileFunctions)
    }

    /// CopyData/CopyDone/CopyFail go to the server that was sent the statement before them —
    /// at once, even before its CopyInResponse is back: clients such as asyncpg send the data
    /// right behind the COPY. (A server not in copy mode ignores them, as the protocol says.)
    private func forwardCopyMessage(_ type: UInt8, _ body: ArraySlice<UInt8>) {
        guard let index = lastLink, let link = links[index] else { return }
        var message = RequestUnit()
        message.append(type, body)
        link.send(message.bytes)
    }

    // MARK: - Dispatch

    func dispatch(_ unit: RequestUnit) {
        guard phase == .relaying else { return }
        // The floor is about to rise: route nothing new until it has.
        if lsnCapturePending && boundLink == nil {
            block(unit)
            return
        }
        // Replies the proxy makes itself must come after everything already in flight.
        if let reply = unit.localReply {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            for message in reply { client.write(message) }
            return
        }
        if unit.usesCausewayCommand && unit.end != .query && boundLink == nil {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            answerCausewayBatch(unit)
            return
        }
        if let command = unit.classification?.causewayCommand, unit.end == .query {
            guard ledger.isEmpty else {
                block(unit)
                return
            }
            answerCausewayCommand(command)
            return
        }
        let target: Int
        let reason: RouteReason
        if boundLink != nil && unit.followsIdleBatch { endIdleBatch() }
        if let bound = boundLink {
            target = bound
            reason = .transaction
        } else if unit.classification == nil && !unit.forcePrimary {
            guard let primary = currentPrimaryIndex() else {
                refuse(unit, ErrorFields(severity: .error, sqlState: SQLState.connectionFailure,
                                         message: "no primary backend is available"))
                return
            }
            // A unit with nothing to classify (a lone Sync, Execute of an open portal) goes where
            // the previous one went.
            target = lastLink ?? primary
            reason = .transaction
        } else {
            let decision = unit.forcePrimary ? primaryDecision(for: unit) : route(unit.classification!)
            // A replica merely behind the floor gets causal_wait_ms (the monitor polls faster
            // meanwhile); PAUSE holds a new write transaction until RESUME.
            let clock = UnitWait.Clock(now: cw_monotonic_nanos(), generation: worker.topology.generation,
                                       paused: worker.runtime.paused.load(ordering: .relaxed),
                                       causalWaitNanos: UInt64(max(0, worker.settings.policy.causalWaitMs)) * 1_000_000,
                                       pauseTimeoutNanos: worker.runtime.pauseTimeoutNanos.load(ordering: .relaxed))
            switch unitWait.admit(decision, classification: unit.classification, inTransaction: transactionStatus != .idle,
                                  clock: clock) {
            case .wait:
                block(unit)
                worker.waitForTopology(self)
                return
            case let .refuse(error):
                refuse(unit, error)
                return
            case .proceed:
                break
            }
            if let error = decision.error {
                refuse(unit, ErrorFields(severity: .error, sqlState: error.sqlState, message: error.message))
                return
            }
            guard let chosen = decision.target else {
                refuse(unit, ErrorFields(severity: .error, sqlState: SQLState.connectionFailure,
                                         message: "no backend available for this query"))
                return
            }
            target = chosen
            reason = decision.reason
        }
        // Responses must reach the client in request order: a unit for another server waits
        // until the servers ahead of it have answered.
        if let head = ledger.headLink, head != target {
            block(unit)
            return
        }
        let link: ServerLink
        if let existing = links[target] {
            link = existing
        } else {
            link = makeLink(target)
            link.delegate = self
            links[target] = link
            link.connect()
        }
        guard link.phase == .ready else {
            block(unit)
            return
        }
        send(unit, to: link, reason: reason)
    }

    /// Where a unit that must run on the primary goes: a function call (a write), or a read
    /// re-run there after a replica refused it.
    private func primaryDecision(for unit: RequestUnit) -> RouteDecision {
        let reason: RouteReason = unit.classification?.isWrite == true ? .write : .fallback
        guard let primary = currentPrimaryIndex() else {
            return RouteDecision(target: nil, isPrimary: true, reason: reason,
                                 error: RoutingError(kind: .noPrimary, sqlState: SQLState.connectionFailure,
                                                     message: "no primary backend is available"))
        }
        return RouteDecision(target: primary, isPrimary: true, reason: reason)
    }

    /// `unit`, being dispatched, cannot go yet: it heads the waiting units.
    private func block(_ unit: RequestUnit) {
        waiting.insert(unit, at: 0)
        client.stopReading()
    }

    /// Tries the waiting units again, in order (a link became ready, responses drained, the
    /// topology changed); once none waits, reads client input again.
    func retryWaiting() {
        while phase == .relaying, !waiting.isEmpty {
            let unit = waiting.removeFirst()
            let behind = waiting.count
            dispatch(unit)
            if waiting.count > behind { return }
        }
        if phase == .relaying && waiting.isEmpty { processInbound() }
    }

    private func route(_ classification: Classification) -> RouteDecision {
        // A transaction open on a backend a reload removed finishes there (the link closes at
        // its boundary); the monitor's topology no longer lists that backend.
        if routing.inTransaction, let index = routing.transactionBackend, worker.settings.isRemoved(index),
           links[index] != nil {
            return RouteDecision(target: index, isPrimary: index == primaryIndex, reason: .transaction)
        }
        var topology = worker.topology
        if !unavailable.isEmpty && cw_monotonic_nanos() > unavailableUntil { unavailable.removeAll() }
        if !unavailable.isEmpty {
            for position in topology.backends.indices where unavailable.contains(topology.backends[position].index) {
                topology.backends[position].health = .down
            }
        }
        if topology.primary == nil, !topology.hasMultiplePrimaries, let known = primaryIndex,
           let position = topology.backends.firstIndex(where: { $0.index == known }),
           topology.backends[position].role == .unknown {
            // The monitor cannot see the cluster yet (or at all), but this session logged in to
            // a server that is not a standby: keep writing there rather than refuse.
            topology.backends[position].role = .primary
            topology.backends[position].health = .up
        }
        routing.pin = pins.first
        let decision = Router.route(classification, session: routing, topology: topology,
                                    policy: worker.settings.policy, load: worker.replicaLoad)
        if decision.reason == .floor {
            // A replica is only behind this session's own writes: look again soon, so the
            // session's next reads can go back to it as early as the data is there.
            worker.requestFastPoll()
        }
        guard let last = lastReplicaRead else { return decision }
        switch Router.replicaMove(from: last, decision: decision, topology: topology, consistency: routing.consistency,
                                  forcedToReplica: (classification.hint ?? routing.hint) == .replica) {
        case .proceed:
            return decision
        case let .raiseFloor(seen):
            routing.floor = max(routing.floor ?? seen, seen)
            return Router.route(classification, session: routing, topology: topology,
                                policy: worker.settings.policy, load: worker.replicaLoad)
        case let .usePrimary(primary):
            worker.requestFastPoll()
            return RouteDecision(target: primary, isPrimary: true, reason: .floor)
        }
    }

    func currentPrimaryIndex() -> Int? {
        if let primary = worker.topologyPrimary { return primary }
        // The primary this session logged in to, unless a reload has removed it since.
        guard let primaryIndex, !worker.settings.isRemoved(primaryIndex) else { return nil }
        return primaryIndex
    }

    /// An error the proxy answers itself (counted for SHOW STATS and /metrics).
    func encodeLocalError(_ error: ErrorFields, into writer: inout ByteWriter) {
        worker.runtime.stats.countProxyError(error.sqlState)
        BackendMessage.errorResponse(error).encode(into: &writer)
    }

    /// Answers `unit` with an error in the proxy's name (after whatever is in flight); the rest
    /// of its batch is dropped up to Sync, as a server would.
    func refuse(_ unit: RequestUnit, _ error: ErrorFields) {
        worker.runtime.stats.countProxyError(error.sqlState)
        var reply = [BackendMessage.errorResponse(error).encoded()]
        if unit.continuesBatch {
            requests.discardUntilSync()
        } else {
            reply.append(BackendMessage.readyForQuery(transactionStatus == .idle ? .idle : .failed).encoded())
        }
        var local = RequestUnit()
        local.localReply = reply
        dispatch(local)
    }

    private func send(_ unit: RequestUnit, to link: ServerLink, reason: RouteReason) {
        var out: [UInt8] = []
        // Statements the client closed while this server was not in use.
        if !link.pendingCloses.isEmpty {
            var writer = ByteWriter()
            for name in link.pendingCloses {
                FrontendMessage.close(kind: .statement, name: name).encode(into: &writer)
            }
            FrontendMessage.sync.encode(into: &writer)
            out += writer.bytes
            link.expectInternal(.internalRequest(tag: Self.closeTag))
            link.pendingCloses.removeAll()
        }
        if link.appliedSettingsVersion != settings.version {
            if !settings.isEmpty {
                out += FrontendMessage.query(settings.replaySQL).encoded()
                link.expectInternal(.internalRequest(tag: Self.settingsReplayTag))
                // A simple query destroys the server's unnamed statement: re-create it if used.
                link.preparedStatements.remove("")
            }
            link.appliedSettingsVersion = settings.version
        }
        var injectedParses = 0
        for name in unit.uses where !link.preparedStatements.contains(name) {
            guard let statement = statements[name] else { continue }
            out += FrontendMessage.parse(name: name, query: statement.query, parameterTypes: statement.parameterTypes).encoded()
            injectedParses += 1
            link.preparedStatements.insert(name)
        }
        if injectedParses > 0 {
            // Behind whatever of the client's batch is still unanswered (it may have come in parts).
            link.expectInternal(.injectedCompletions(count: injectedParses, afterClientCompletions: link.clientCompletionsSent))
        }
        var capture = needsLSNCapture(unit, on: link, reason: reason)
        if capture && unit.mayStartCopy {
            // A COPY FROM STDIN puts the server in copy mode: a query behind it would be read as
            // stray input. Capture once the unit's ReadyForQuery is back instead.
            capture = false
            deferredCaptureLink = link.backendIndex
        }
        if out.isEmpty && !capture {
            link.send(unit.bytes)
        } else {
            out += unit.bytes
            if capture { out += Self.lsnCaptureQuery }
            link.send(out)
        }
        link.noteClientRequest(readies: unit.readies, completions: unit.completions)
        if capture {
            // Pipelined behind the client's own request: the client's ReadyForQuery is relayed
            // first, the LSN arrives a moment later on the same connection and is swallowed.
            link.expectInternal(.internalRequest(tag: Self.lsnCaptureTag))
            lsnCapturePending = true
        }

        // What the server now holds.
        for (name, statement) in unit.parses {
            statements[name] = statement
            link.preparedStatements.insert(name)
            for other in links.values where other !== link && other.preparedStatements.contains(name) {
                other.preparedStatements.remove(name)
                if !name.isEmpty { other.pendingCloses.append(name) }
            }
        }
        for name in unit.closes {
            statements.removeValue(forKey: name)
            link.preparedStatements.remove(name)
            for other in links.values where other !== link && other.preparedStatements.contains(name) {
                other.preparedStatements.remove(name)
                if !name.isEmpty { other.pendingCloses.append(name) }
            }
        }
        if unit.end == .query || capture { link.preparedStatements.remove("") }
        if unit.executes, let classification = unit.classification {
            if classification.pinChanges.contains(where: { if case .unpin(.discardAll) = $0 { return true }; if case .unpin(.deallocateAll) = $0 { return true }; return false }) {
                link.preparedStatements.removeAll()
            }
            pins = classification.applyingPinChanges(to: pins)
        }

        let onReplica = link.backendIndex != currentPrimaryIndex()
        let retryable = onReplica && ledger.isEmpty && transactionStatus == .idle && boundLink == nil
            && unit.end != .flush && !(unit.classification?.leavesTransactionOpen ?? false)
        if let action = ledger.sent(.init(unit: unit, link: link.backendIndex, retryable: retryable,
                                          reportsToken: capture && worker.settings.reportLSN)) {
            perform(action, from: link)
        }
        boundLink = unit.continuesBatch ? link.backendIndex : nil
        lastLink = link.backendIndex
        pointCancelKey(at: link)
        publishRunning()
        if link.backendIndex != primaryIndex && link.backendIndex != currentPrimaryIndex() {
            adoptReplica(link.backendIndex)
            // Monotonic reads: later reads must see at least what this one sees, which is at
            // least the replay position the router relied on.
            let topology = worker.topology
            if let replay = topology.backend(at: link.backendIndex)?.replayLSN {
                routing.floor = max(routing.floor ?? replay, replay)
            }
            lastReplicaRead = (link.backendIndex, topology.generation)
        }
        let onPrimary = link.backendIndex == currentPrimaryIndex()
        worker.runtime.stats.countUnit(worker.settings.counters(link.backendIndex), isWrite: onPrimary && reason == .write, reason: reason)
        updateLinkReading()
    }

    /// Sends the LSN capture now (for a unit whose capture had to wait for its ReadyForQuery).
    func captureLSN(on link: ServerLink) {
        link.send(Self.lsnCaptureQuery)
        link.preparedStatements.remove("")
        link.expectInternal(.internalRequest(tag: Self.lsnCaptureTag))
        lsnCapturePending = true
    }

    /// Whether this unit may end a transaction that wrote, so its commit LSN must be captured.
    /// Only units that end outside a transaction qualify: inside one, the LSN would precede the
    /// commit.
    private func needsLSNCapture(_ unit: RequestUnit, on link: ServerLink, reason: RouteReason) -> Bool {
        guard unit.readies > 0, link.backendIndex == currentPrimaryIndex() || link.backendIndex == primaryIndex else {
            return false
        }
        let classification = unit.classification
        let facts = Router.PrimaryUnit(
            executes: unit.executes,
            writes: unit.forcePrimary || (classification?.isWrite(volatileFunctions: worker.topology.volatileFunctions) ?? false),
            transaction: classification?.transaction, leavesTransactionOpen: classification?.leavesTransactionOpen ?? false,
            reason: reason)
        let rule = Router.captureCommitLSN(after: facts, inTransaction: transactionStatus != .idle,
                                           transactionWrote: transactionWrote, consistency: routing.consistency,
                                           pinned: !pins.isEmpty)
        transactionWrote = rule.transactionWrote
        return rule.capture
    }

    /// The session reads from one replica at a time (sticky while eligible); moving to another
    /// closes the old link so a session never holds more than a primary and a replica.
    private func adoptReplica(_ index: Int) {
        guard routing.stickyReplica != index else { return }
        if let old = routing.stickyReplica {
            worker.releaseReplica(old)
            if let link = links[old], link.isIdle, old != primaryIndex {
                links.removeValue(forKey: old)
                link.close()
            }
        }
        routing.stickyReplica = index
        worker.adoptReplica(index)
    }

    /// While a unit is in flight only its server's responses may flow: another server's bytes
    /// could otherwise land in the middle of a message.
    func updateLinkReading() {
        let head = ledger.headLink
        let congested = client.isAboveHighWater
        for (index, link) in links where link.phase == .ready {
            if !congested && (head == nil || head == index) {
                link.stream.startReading()
            } else {
                link.stream.stopReading()
            }
        }
    }

    // MARK: - Intercepted causeway commands

    /// `SET causeway.*` / `SHOW causeway.*` sent with Parse/Bind/Execute (JDBC, asyncpg, psycopg
    /// once it prepares): answered here, message by message, as a server would; these statements
    /// never reach a server.
    private func answerCausewayBatch(_ unit: RequestUnit) {
        for (name, statement) in unit.parses { statements[name] = statement }
        var framer = MessageFramer(maximumLength: 1 << 30)
        framer.append(unit.bytes)
        var writer = ByteWriter()
        var portals: [String: String] = [:]
        var failed = false
        func command(of statement: String) -> CausewayCommand? {
            statements[statement]?.classification.causewayCommand
        }
        func describe(_ command: CausewayCommand?) {
            if case let .show(setting)? = command {
                ResultSet(columns: ["causeway.\(setting.rawValue)"], rows: []).encodeDescription(into: &writer)
            } else {
                BackendMessage.noData.encode(into: &writer)
            }
        }
        while let (type, body) = try? framer.nextTyped() {
            var reader = ByteReader(body, messageType: type)
            if failed && type != FrontendMessage.TypeByte.sync { continue }
            switch type {
            case FrontendMessage.TypeByte.parse:
                if let name = try? reader.readCString(), command(of: name) == nil {
                    encodeLocalError(ErrorFields(
                        severity: .error, sqlState: SQLState.featureNotSupported,
                        message: "causeway.* commands cannot share an extended-protocol batch with other statements",
                        hint: "Send SET/SHOW causeway.* in a batch of its own."), into: &writer)
                    failed = true
                } else {
                    BackendMessage.parseComplete.encode(into: &writer)
                }
            case FrontendMessage.TypeByte.bind:
                let portal = (try? reader.readCString()) ?? ""
                portals[portal] = (try? reader.readCString()) ?? ""
                BackendMessage.bindComplete.encode(into: &writer)
            case FrontendMessage.TypeByte.describe:
                let kind = try? reader.readUInt8()
                let name = (try? reader.readCString()) ?? ""
                if kind == FrontendMessage.ObjectKind.statement.rawValue {
                    BackendMessage.parameterDescription([]).encode(into: &writer)
                    describe(command(of: name))
                } else {
                    describe(command(of: portals[name] ?? ""))
                }
            case FrontendMessage.TypeByte.execute:
                let portal = (try? reader.readCString()) ?? ""
                guard let command = command(of: portals[portal] ?? "") else {
                    encodeLocalError(ErrorFields(severity: .error, sqlState: SQLState.invalidCursorName,
                                                             message: "portal \"\(portal)\" does not exist"), into: &writer)
                    failed = true
                    continue
                }
                var reply = ByteWriter()
                applyCausewayCommand(command, into: &reply, withDescription: false)
                writer.writeBytes(reply.bytes)
                if case .invalid = command { failed = true }
            case FrontendMessage.TypeByte.close:
                _ = try? reader.readUInt8()
                let name = (try? reader.readCString()) ?? ""
                statements.removeValue(forKey: name)
                BackendMessage.closeComplete.encode(into: &writer)
            case FrontendMessage.TypeByte.sync:
                BackendMessage.readyForQuery(transactionStatus).encode(into: &writer)
                failed = false
            default:
                break
            }
        }
        client.write(writer.bytes)
    }

    private func answerCausewayCommand(_ command: CausewayCommand) {
        var writer = ByteWriter()
        applyCausewayCommand(command, into: &writer, withDescription: true)
        BackendMessage.readyForQuery(transactionStatus).encode(into: &writer)
        client.write(writer.bytes)
    }

    /// Carries out one `causeway.*` command and encodes its result (for SHOW, the row; with its
    /// RowDescription in the simple protocol, where no Describe came first).
    private func applyCausewayCommand(_ command: CausewayCommand, into writer: inout ByteWriter, withDescription: Bool) {
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
            if let problem = acceptToken(token) {
                encodeLocalError(problem, into: &writer)
            } else {
                BackendMessage.commandComplete("SET").encode(into: &writer)
            }
        case let .reset(setting):
            switch setting {
            case .route: routing.hint = .auto
            case .consistency:
                routing.consistency = configuredConsistency()
            case .minLSN, .lsn: break
            }
            BackendMessage.commandComplete("RESET").encode(into: &writer)
        case let .show(setting):
            let value: String
            switch setting {
            case .route: value = routing.hint.rawValue
            case .consistency: value = routing.consistency.rawValue
            case .minLSN, .lsn: value = currentToken()
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
    func currentToken() -> String {
        let floor = routing.floor ?? LSN(0)
        let topology = worker.topology
        guard let timeline = topology.timeline, let identifier = topology.systemIdentifier else {
            return floor.description
        }
        return CausalToken(timeline: timeline, lsn: floor, systemIdentifier: identifier).description
    }

    /// Raises the floor to a token's position if it belongs to this cluster.
    func acceptToken(_ token: CausalToken) -> ErrorFields? {
        let topology = worker.topology
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
