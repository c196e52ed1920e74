import CLibUV
import Router
import Wire

/// Server links' news, fed to the machine; responses relayed (or held) on their way to the client.
extension ClientSession: ServerLinkDelegate {
    func linkReady(_ link: ServerLink, greeting: ServerGreeting) {
        feed(.linkReady(link.backendIndex, greeting))
    }

    func link(_ link: ServerLink, failed error: ErrorFields, duringLogin: Bool) {
        guard phase == .relaying else { return }
        serverLinks.removeValue(forKey: link.backendIndex)
        feed(.linkFailed(link.backendIndex, error, duringLogin: duringLogin, serverSaidWhy: link.sentFatal,
                         endedWhileIdle: link.endedWhileIdle))
    }

    func link(_ link: ServerLink, forward bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer, ranges: [Range<Int>]?,
              withheld: [UInt8]?) -> Bool {
        guard phase == .relaying else { return false }
        let holding = machine.view.holdingLink == link.backendIndex
        if let withheld {
            if holding { held += withheld } else { client.write(withheld) }
        }
        if holding {
            if let ranges {
                for range in ranges { held.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[range])) }
            } else {
                held.append(contentsOf: bytes)
            }
            if held.count > UnitLedger.holdLimit { feed(.heldOverflowed) }
            return false
        }
        defer {
            if client.isAboveHighWater { updateReading() }
        }
        guard let ranges else {
            client.write(chunk: chunk, length: bytes.count)
            return true
        }
        for range in ranges where !range.isEmpty {
            var offset = range.lowerBound
            while offset < range.upperBound {
                let count = min(ChunkPool.capacity, range.upperBound - offset)
                let out = worker.chunks.take()
                ChunkPool.data(out).copyMemory(from: bytes.baseAddress! + offset, byteCount: count)
                client.write(chunk: out, length: count)
                offset += count
            }
        }
        return false
    }

    func link(_ link: ServerLink, event: ResponseStream.Event) {
        guard phase == .relaying else { return }
        feedLinkResponse(link.backendIndex, event)
    }

    func linkDrained(_ link: ServerLink) {
        updateReading()
    }

    // MARK: - Connections from the pool

    /// The pool of `backend` this session's connections come from: its user, database and the
    /// startup parameters a pooled connection must have been opened with to serve it (the same
    /// set that keys the greeting cache). Made once per backend.
    func poolKey(for backend: Int) -> ServerPool.Key {
        if backend < poolKeys.count, let key = poolKeys[backend] { return key }
        let parameters = poolKeys.lazy.compactMap { $0 }.first?.parameters ?? GreetingCache.key(sharedStartupParameters())
        let key = ServerPool.Key(registry: .init(backend: backend, user: userName, database: database), parameters: parameters)
        if backend >= poolKeys.count { poolKeys += repeatElement(nil, count: backend + 1 - poolKeys.count) }
        poolKeys[backend] = key
        return key
    }

    /// An idle pooled connection, logged in and reset, for `backend`.
    func poolGranted(_ link: ServerLink, backend: Int) {
        guard phase == .relaying || phase == .connecting else {
            worker.pools.release(link, reusable: true)
            return
        }
        serverLinks[backend] = link
        link.stream.startReading()
        if phase == .connecting {
            link.delegate = firstLoginObserver
            firstLoginLinkReady(link, greeting: link.greeting)
        } else {
            link.delegate = self
            feed(.linkReady(backend, link.greeting, link.sessionState))
        }
    }

    /// A slot in the pool: open a new connection to `backend`.
    func poolMayOpen(backend: Int, key: ServerPool.Key) {
        guard phase == .relaying || phase == .connecting else {
            // Nobody needs it any more.
            worker.pools.returnSlot(key)
            return
        }
        let link = makeLink(backend)
        link.poolKey = key
        link.delegate = phase == .connecting ? firstLoginObserver : self
        serverLinks[backend] = link
        worker.pools.noteLoggingIn(link)
        link.connect()
    }

    /// The pool stayed full for query_wait_timeout.
    func poolTimedOut(backend: Int, error: ErrorFields) {
        if phase == .connecting {
            firstLoginFailed(backend, error)
        } else if phase == .relaying {
            feed(.linkFailed(backend, error, duringLogin: true, serverSaidWhy: false, endedWhileIdle: false))
        }
    }

    // MARK: - Performing the machine's actions

    func perform(_ action: SessionAction) {
        switch action {
        case let .writeClient(bytes):
            client.write(bytes)
        case let .openLink(index):
            worker.pools.acquire(for: self, backend: index)
        case let .closeLink(index, state):
            if let link = serverLinks.removeValue(forKey: index) {
                if let state { link.sessionState = state }
                worker.pools.release(link, reusable: true)
            }
        case let .lendLink(index, state):
            if let link = serverLinks.removeValue(forKey: index) {
                if cancelKeyTarget == ObjectIdentifier(link) { cancelKeyTarget = nil }
                link.sessionState = state
                worker.pools.release(link, reusable: true, lending: true)
            }
        case let .sendToLink(index, bytes):
            serverLinks[index]?.send(bytes)
        case let .expect(index, expectation):
            serverLinks[index]?.expectInternal(expectation)
        case let .noteClientRequest(index, readies, completions):
            serverLinks[index]?.noteClientRequest(readies: readies, completions: completions)
        case let .noteBatchEnd(index):
            serverLinks[index]?.noteBatchEnd(tag: SessionMachine.batchEndTag)
        case .releaseHeld:
            heldReadyEnd = 0
            if !held.isEmpty {
                client.write(held)
                held.removeAll(keepingCapacity: true)
            }
        case .dropHeld:
            heldReadyEnd = 0
            held.removeAll(keepingCapacity: true)
        case .markHeldReady:
            heldReadyEnd = held.count
        case let .insertToken(status):
            // A ReadyForQuery is 6 bytes: the token goes just before it.
            if heldReadyEnd >= 6 && heldReadyEnd <= held.count {
                held.insert(contentsOf: status, at: heldReadyEnd - 6)
            } else {
                client.write(status)
            }
        case .waitForTopology:
            worker.waitForTopology(self)
        case .requestFastPoll:
            worker.requestFastPoll()
        case let .adoptReplica(index):
            worker.adoptReplica(index)
        case let .releaseReplica(index):
            worker.releaseReplica(index)
        case let .pointCancelKey(index):
            if let link = serverLinks[index] { pointCancelKey(at: link) }
        case let .setRunning(running):
            cancelKey.setRunning(running)
        case let .primaryLinkReady(index, parameters):
            countOnPrimary(index)
            if let parameters { worker.runtime.greetings.store(parameters, for: poolKey(for: index).parameters) }
        case let .countUnit(backend, isWrite, reason):
            worker.runtime.stats.countUnit(worker.settings.counters(backend), isWrite: isWrite, reason: reason)
        case let .countProxyError(sqlState):
            worker.runtime.stats.countProxyError(sqlState)
        case .countServerError:
            worker.runtime.stats.serverErrors.add(1, ordering: .relaxed)
        case .countRetry:
            worker.runtime.stats.retries.add(1, ordering: .relaxed)
        case let .log(level, event, fields):
            log.write(level, event, fields)
        case let .fatal(error):
            writeFatal(error)
        case .end:
            finish()
        }
    }
}
