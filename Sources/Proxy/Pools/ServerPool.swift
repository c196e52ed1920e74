import Foundation
import CLibUV
import Router
import Wire

/// A worker's pooled server connections: the ones no session holds (reset, then idle), the ones
/// logging in (for `server_connect_timeout`), and the sessions waiting for a full pool. A session
/// asks for a connection to a backend (`acquire`) and gets an idle one, leave to open one, or a
/// place in the queue; it gives its connections back when it ends (`release`). Counts and limits
/// are the proxy-wide `PoolRegistry`'s.
///
/// Idle connections are kept by the session's exact startup parameters (user, database,
/// application_name, client_encoding …): a connection is only handed to a client that would
/// have logged in to the same session defaults. Within the limits, a pool that is full of
/// connections idle under other parameters closes one to make room.
final class ServerPool: ServerLinkDelegate {
    /// Which idle connections a session may take.
    /// Made once per session and backend, hashed once.
    struct Key: Hashable {
        let registry: PoolRegistry.Key
        let parameters: [String]
        private let hashCode: Int

        init(registry: PoolRegistry.Key, parameters: [String]) {
            self.registry = registry
            self.parameters = parameters
            var hasher = Hasher()
            hasher.combine(registry)
            hasher.combine(parameters)
            hashCode = hasher.finalize()
        }

        static func == (a: Key, b: Key) -> Bool {
            a.hashCode == b.hashCode && a.registry == b.registry && a.parameters == b.parameters
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hashCode) }
    }

    static let resetTag = 5

    private struct Waiter {
        let session: ClientSession
        let backend: Int
        let key: Key
        let since: UInt64
    }

    unowned let worker: Worker
    private let registry: PoolRegistry
    private var idle: [Key: [ServerLink]] = [:]
    private var resetting: [ObjectIdentifier: (link: ServerLink, failed: Bool)] = [:]
    private var loggingIn: [ObjectIdentifier: ServerLink] = [:]
    private var waiters: [Waiter] = []
    /// Pools this worker's clients used: min_pool_size keeps them warm.
    private var used: Set<Key> = []
    /// Connections opened by min_pool_size, not for a client, while they log in.
    private var warming: [ObjectIdentifier: ServerLink] = [:]
    /// A pool whose warm-up login failed is not warmed again before this time (monotonic ns).
    private var warmUpRetry: [Key: UInt64] = [:]
    /// Runs the waiters' turn on the next loop iteration (never inside another session's event).
    private var kick: UnsafeMutablePointer<uv_timer_t>?
    private var closed = false

    init(worker: Worker, registry: PoolRegistry) {
        self.worker = worker
        self.registry = registry
    }

    private var settings: PoolSettings { worker.settings.pools }

    private func limits(_ key: Key) -> PoolLimits {
        worker.settings.config.poolLimits(user: key.registry.user, database: key.registry.database)
    }

    private static func nanos(_ seconds: Double) -> UInt64 { UInt64(seconds * 1_000_000_000) }

    // MARK: - Sessions

    /// `session` needs a connection to `backend`. Answers through the session: `poolGranted`
    /// (an idle connection, already logged in), `poolMayOpen` (a slot: open a new one), or later,
    /// after waiting, either of those or `poolTimedOut`.
    func acquire(for session: ClientSession, backend: Int) {
        let key = session.poolKey(for: backend)
        if settings.minPoolSize > 0 && !used.contains(key) { used.insert(key) }
        if let link = takeIdle(key) {
            hand(link, to: session, backend: backend)
        } else if registry.reserve(key.registry, limits: limits(key), reserve: false) || makeRoom(for: key) {
            session.poolMayOpen(backend: backend, key: key)
        } else {
            let now = worker.now
            waiters.append(Waiter(session: session, backend: backend, key: key, since: now))
            registry.waitStarted(key.registry, at: now)
            // Another worker may hold idle connections of this pool (connections are not moved
            // between workers' loops): one of them closes to make room — unless one of this
            // worker's own is being reset and will be here in a moment.
            if !isResetting(key) { registry.wantRoom(key.registry) }
            worker.log.debug("pool_wait", ["session": session.id, "backend": backend, "user": key.registry.user,
                                           "database": key.registry.database])
        }
    }

    /// A session opened a connection in a slot it was given: it counts as logging in until ready.
    func noteLoggingIn(_ link: ServerLink) {
        loggingIn[ObjectIdentifier(link)] = link
        if let key = link.poolKey {
            worker.runtime.stats.serverOpened(ObjectIdentifier(link), .init(
                backend: link.backend.config.name, user: key.registry.user, database: key.registry.database,
                worker: worker.index, connectedAt: Date().timeIntervalSince1970, status: link.status))
        }
    }

    /// The connection logged in.
    func linkLoggedIn(_ link: ServerLink) {
        guard let key = link.poolKey, loggingIn.removeValue(forKey: ObjectIdentifier(link)) != nil else { return }
        registry.adjust(key.registry, loggingIn: -1)
        link.status.serverPID.store(link.greeting.processID, ordering: .relaxed)
        link.status.set(.active, client: link.clientProcessID)
    }

    /// A session is done with `link`. A connection that is idle, in no transaction, not too old
    /// and to a backend still in service is reset and kept; any other is closed.
    /// `lending`: transaction pooling lends the connection between transactions as it is (the
    /// next client's session brings it to its own settings); no reset query.
    func release(_ link: ServerLink, reusable: Bool, lending: Bool = false) {
        guard let key = link.poolKey, link.phase == .ready, !closed else {
            link.close()
            return
        }
        let backend = key.registry.backend
        let lifetime = settings.serverLifetime
        guard reusable, link.isReusable, !worker.settings.isRemoved(backend),
              worker.topology.backend(at: backend)?.draining != true,
              lifetime == 0 || worker.now &- link.openedAt < Self.nanos(lifetime) else {
            link.close()
            return
        }
        link.delegate = self
        link.detachClient()
        link.stream.startReading()
        let reset = settings.serverResetQuery
        if lending {
            park(link, key)
            return
        }
        // What the connection holds after the reset (nothing after DISCARD ALL).
        link.sessionState.reset(by: worker.classifications.classify(reset, volatileFunctions: []))
        if reset.isEmpty {
            park(link, key)
            return
        }
        resetting[ObjectIdentifier(link)] = (link, false)
        registry.adjust(key.registry, resetting: 1)
        link.status.set(.resetting)
        link.expectInternal(.internalRequest(tag: Self.resetTag))
        link.send(FrontendMessage.query(reset).encoded())
    }

    /// A slot given by `poolMayOpen` that the session no longer needs (it ended meanwhile).
    func returnSlot(_ key: Key) {
        registry.adjust(key.registry, open: -1, loggingIn: -1)
        scheduleWaiters()
    }

    /// A session ended while it waited.
    func cancelWaits(for session: ClientSession) {
        let now = worker.now
        waiters.removeAll { waiter in
            guard waiter.session === session else { return false }
            registry.waitEnded(waiter.key.registry, startedAt: waiter.since, now: now)
            return true
        }
    }

    // MARK: - Connections

    /// Called by every pooled connection as it closes, whatever its state.
    func linkClosed(_ link: ServerLink) {
        guard let key = link.poolKey else { return }
        let id = ObjectIdentifier(link)
        worker.runtime.stats.serverClosed(id)
        var loggingInChange = 0, resettingChange = 0, idleChange = 0
        if loggingIn.removeValue(forKey: id) != nil { loggingInChange = -1 }
        if resetting.removeValue(forKey: id) != nil { resettingChange = -1 }
        if let position = idle[key]?.firstIndex(where: { $0 === link }) {
            idle[key]!.remove(at: position)
            idleChange = -1
        }
        registry.adjust(key.registry, open: -1, loggingIn: loggingInChange, resetting: resettingChange, idle: idleChange)
        // A slot is free: a waiter may open a connection now.
        scheduleWaiters()
    }

    private func isResetting(_ key: Key) -> Bool {
        resetting.values.contains { $0.link.poolKey == key }
    }

    private func takeIdle(_ key: Key) -> ServerLink? {
        guard let link = idle[key]?.popLast() else { return nil }
        registry.adjust(key.registry, idle: -1)
        return link
    }

    private func hand(_ link: ServerLink, to session: ClientSession, backend: Int) {
        link.attach(clientProcessID: session.id)
        session.poolGranted(link, backend: backend)
    }

    private func park(_ link: ServerLink, _ key: Key) {
        if let position = waiters.firstIndex(where: { $0.key == key }) {
            // Straight to the client that waited longest for this kind of connection.
            let waiter = waiters.remove(at: position)
            registry.waitEnded(key.registry, startedAt: waiter.since, now: worker.now)
            hand(link, to: waiter.session, backend: waiter.backend)
            return
        }
        link.parkedAt = worker.now
        idle[key, default: []].append(link)
        registry.adjust(key.registry, idle: 1)
        scheduleWaiters()
    }

    /// A full pool whose connections sit idle under other startup parameters closes one of them
    /// and takes its slot.
    private func makeRoom(for key: Key) -> Bool {
        guard let other = idle.first(where: { $0.key.registry == key.registry && $0.key != key && !$0.value.isEmpty })?.key,
              let link = takeIdle(other) else { return false }
        link.close()
        return registry.reserve(key.registry, limits: limits(key), reserve: false)
    }

    // MARK: - Waiters

    private func scheduleWaiters() {
        guard !waiters.isEmpty, !closed else { return }
        if kick == nil {
            let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
            uv_timer_init(worker.loop, handle)
            handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            kick = handle
        }
        uv_timer_start(kick, serverPoolKickCallback, 0, 0)
    }

    /// Each waiter in arrival order: an idle connection, a slot (the reserve once it waited
    /// reserve_pool_timeout), or, past query_wait_timeout, an error.
    fileprivate func serveWaiters() {
        guard !waiters.isEmpty else { return }
        let now = worker.now
        let settings = self.settings
        var position = 0
        while position < waiters.count {
            let waiter = waiters[position]
            let waited = now &- waiter.since
            if let link = takeIdle(waiter.key) {
                waiters.remove(at: position)
                registry.waitEnded(waiter.key.registry, startedAt: waiter.since, now: now)
                hand(link, to: waiter.session, backend: waiter.backend)
            } else if registry.reserve(waiter.key.registry, limits: limits(waiter.key),
                                       reserve: waited >= Self.nanos(settings.reservePoolTimeout)) || makeRoom(for: waiter.key) {
                waiters.remove(at: position)
                registry.waitEnded(waiter.key.registry, startedAt: waiter.since, now: now)
                waiter.session.poolMayOpen(backend: waiter.backend, key: waiter.key)
            } else if settings.queryWaitTimeout > 0 && waited >= Self.nanos(settings.queryWaitTimeout) {
                waiters.remove(at: position)
                registry.waitEnded(waiter.key.registry, startedAt: waiter.since, now: now, timedOut: true)
                let limits = self.limits(waiter.key)
                let name = worker.settings.slots[waiter.backend].name
                worker.log.warn("pool_wait_timeout", ["session": waiter.session.id, "backend": name,
                                                      "user": waiter.key.registry.user, "database": waiter.key.registry.database])
                waiter.session.poolTimedOut(backend: waiter.backend, error: ErrorFields(
                    severity: .error, sqlState: SQLState.tooManyConnections,
                    message: "no server connection to \(name) for user \"\(waiter.key.registry.user)\" on database \"\(waiter.key.registry.database)\" became free within query_wait_timeout (\(Int(settings.queryWaitTimeout)) s); the pool holds \(limits.poolSize) connections",
                    hint: "Raise default_pool_size (or the user's or database's pool_size), or keep transactions shorter."))
            } else {
                if !isResetting(waiter.key) { registry.wantRoom(waiter.key.registry) }
                position += 1
            }
        }
    }

    /// Closes an idle connection of each pool a client of another worker waits for.
    private func giveRoom() {
        let wanted = registry.wantedRooms
        guard !wanted.isEmpty else { return }
        for registryKey in wanted {
            guard let key = idle.first(where: { $0.key.registry == registryKey && !$0.value.isEmpty })?.key,
                  !waiters.contains(where: { $0.key == key }), registry.claimRoom(registryKey),
                  let link = takeIdle(key) else { continue }
            worker.log.debug("pool_room_given", ["backend": registryKey.backend, "user": registryKey.user,
                                                 "database": registryKey.database])
            link.close()
        }
    }

    // MARK: - Upkeep

    /// Every 100 ms: idle connections past server_idle_timeout or server_lifetime, or to a
    /// backend being drained or removed, close; logins past server_connect_timeout fail; waiters
    /// get another turn (a connection may have closed on another worker).
    func maintain() {
        let now = worker.now
        let settings = self.settings
        let runtimeSettings = worker.settings
        let topology = worker.topology
        for (key, links) in idle {
            let backend = key.registry.backend
            let retired = runtimeSettings.isRemoved(backend) || topology.backend(at: backend)?.draining == true
            // Idle past server_idle_timeout, but not below min_pool_size.
            var spare = links.isEmpty ? 0 : max(0, registry.openCount(key.registry).open - limits(key).minPoolSize)
            for link in links {
                let stale = settings.serverIdleTimeout > 0 && now &- link.parkedAt >= Self.nanos(settings.serverIdleTimeout)
                let old = settings.serverLifetime > 0 && now &- link.openedAt >= Self.nanos(settings.serverLifetime)
                if retired || old || (stale && spare > 0) {
                    if stale && !retired && !old { spare -= 1 }
                    link.close()
                }
            }
        }
        giveRoom()
        warmUp()
        if settings.serverConnectTimeout > 0 {
            for link in loggingIn.values where now &- link.openedAt >= Self.nanos(settings.serverConnectTimeout) {
                link.abandon(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                         message: "could not log in to \(link.backend.label) within server_connect_timeout (\(Int(settings.serverConnectTimeout)) s)"))
            }
        }
        serveWaiters()
    }

    /// min_pool_size: a used pool with fewer connections (over all workers) opens one more, one
    /// at a time, while its backend is up and in service. The connection logs in as the pool's
    /// user with the configured password (a user known only by a SCRAM verifier needs a client's
    /// proof, so its pools are not warmed) and the pool's startup parameters, then waits idle.
    private func warmUp() {
        guard !used.isEmpty, !closed else { return }
        let runtimeSettings = worker.settings
        let topology = worker.topology
        for key in used {
            let limits = self.limits(key)
            let backend = key.registry.backend
            guard limits.minPoolSize > 0, !runtimeSettings.isRemoved(backend),
                  let status = topology.backend(at: backend), status.health == .up, !status.draining else { continue }
            let user = runtimeSettings.config.user(named: key.registry.user)
            if user?.password == nil && user?.scram != nil { continue }
            if let retry = warmUpRetry[key], worker.now < retry { continue }
            let counts = registry.openCount(key.registry)
            guard counts.loggingIn == 0, counts.open < limits.minPoolSize,
                  registry.reserve(key.registry, limits: limits, reserve: false) else { continue }
            let secret: ServerLogin.Secret = user?.password.map { .password($0) } ?? .none
            let worker = self.worker
            let login = ServerLogin(user: key.registry.user, secret: secret) { password, salt, iterations in
                worker.deriveScram(password: password, salt: salt, iterations: iterations)
            }
            var parameters: [(String, String)] = []
            var position = 0
            while position + 1 < key.parameters.count {
                parameters.append((key.parameters[position], key.parameters[position + 1]))
                position += 2
            }
            let link = ServerLink(worker: worker, backend: runtimeSettings.slots[backend].backend, index: backend, login: login,
                                  startupParameters: parameters, clientProcessID: 0)
            link.poolKey = key
            link.delegate = self
            warming[ObjectIdentifier(link)] = link
            noteLoggingIn(link)
            link.connect()
        }
    }

    /// The worker stops: every pooled connection closes, and nothing is pooled from now on.
    func closeAll() {
        closed = true
        for links in idle.values { for link in links { link.close() } }
        for entry in resetting.values { entry.link.close() }
        for link in warming.values { link.close() }
        if let kick {
            self.kick = nil
            kick.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
    }

    // MARK: - ServerLinkDelegate (connections being reset or idle)

    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        guard warming.removeValue(forKey: ObjectIdentifier(link)) != nil, let key = link.poolKey else { return }
        guard !closed else {
            link.close()
            return
        }
        warmUpRetry.removeValue(forKey: key)
        worker.log.debug("pool_warmed", ["backend": link.backend.config.name, "user": key.registry.user,
                                         "database": key.registry.database])
        link.detachClient()
        park(link, key)
    }

    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool) {
        if warming.removeValue(forKey: ObjectIdentifier(link)) != nil, let key = link.poolKey {
            // Not again for a while: a wrong password or a refused login would otherwise be
            // retried at every upkeep.
            warmUpRetry[key] = worker.now &+ Self.nanos(5)
            worker.log.warn("pool_warm_up_failed", ["backend": link.backend.config.name, "reason": error.message ?? ""])
        }
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool { false }

    func link(_ link: ServerLink, event: ResponseStream.Event) {
        let id = ObjectIdentifier(link)
        guard let entry = resetting[id], let key = link.poolKey else { return }
        switch event {
        case .internalMessage(Self.resetTag, BackendMessage.TypeByte.errorResponse, _):
            resetting[id]?.failed = true
        case let .internalDone(Self.resetTag, status):
            resetting.removeValue(forKey: id)
            registry.adjust(key.registry, resetting: -1)
            if entry.failed || status != .idle {
                worker.log.warn("server_reset_failed", ["backend": link.backend.config.name])
                link.close()
            } else {
                park(link, key)
            }
        default:
            break
        }
    }

    func linkDrained(_ link: ServerLink) {}
}

private func serverPoolKickCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<ServerPool>.fromOpaque(data).takeUnretainedValue().serveWaiters()
}
