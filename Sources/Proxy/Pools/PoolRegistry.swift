import Synchronization

/// The proxy-wide view of every pool, shared by the workers: how many server connections each
/// (backend, user, database) has open and in which state, and who waits. Limits are checked here,
/// under one lock, so they hold whatever the number of workers. Touched when a connection opens,
/// logs in, is parked, reset or closed, and when a client starts or stops waiting — never per
/// message.
final class PoolRegistry: Sendable {
    /// Hashed once when made: pools are looked up on every borrow and return of a connection.
    struct Key: Hashable, Sendable {
        let backend: Int
        let user: String
        let database: String
        private let hashCode: Int

        init(backend: Int, user: String, database: String) {
            self.backend = backend
            self.user = user
            self.database = database
            var hasher = Hasher()
            hasher.combine(backend)
            hasher.combine(user)
            hasher.combine(database)
            hashCode = hasher.finalize()
        }

        static func == (a: Key, b: Key) -> Bool {
            a.hashCode == b.hashCode && a.backend == b.backend && a.user == b.user && a.database == b.database
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hashCode) }
    }

    struct Counts: Sendable {
        /// Connections that exist: logging in, in use, being reset, or idle.
        var open = 0
        var loggingIn = 0
        var resetting = 0
        var idle = 0
        /// When each waiting client started waiting (monotonic nanoseconds).
        var waitingSince: [UInt64] = []
        /// Finished waits: how many ended in each of `waitBounds` (the last: beyond them), their
        /// total in seconds, and how many ended in query_wait_timeout.
        var waitBuckets = [Int](repeating: 0, count: PoolRegistry.waitBounds.count + 1)
        var waitSeconds = 0.0
        var waitTimeouts = 0

        var active: Int { open - loggingIn - resetting - idle }
    }

    /// Upper bounds (seconds) of the wait-time histogram's buckets.
    static let waitBounds: [Double] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120]

    private let pools = Mutex<[Key: Counts]>([:])
    /// Pools a client waits for while some worker may hold idle connections of them (opened
    /// for other startup parameters): the worker that has one closes it to make room.
    private let roomWanted = Mutex<Set<Key>>([])

    /// Takes a slot for a new connection if the pool, its database and its user are all below
    /// their limits (`reserve`: the pool may use its reserve too).
    func reserve(_ key: Key, limits: PoolLimits, reserve: Bool) -> Bool {
        pools.withLock { pools in
            let counts = pools[key] ?? Counts()
            let allowed = limits.poolSize + (reserve ? limits.reservePoolSize : 0)
            guard counts.open < allowed else { return false }
            if limits.maxDBConnections > 0 {
                let total = pools.reduce(0) { $0 + ($1.key.backend == key.backend && $1.key.database == key.database ? $1.value.open : 0) }
                guard total < limits.maxDBConnections else { return false }
            }
            if limits.maxUserConnections > 0 {
                let total = pools.reduce(0) { $0 + ($1.key.backend == key.backend && $1.key.user == key.user ? $1.value.open : 0) }
                guard total < limits.maxUserConnections else { return false }
            }
            pools[key, default: Counts()].open += 1
            pools[key, default: Counts()].loggingIn += 1
            return true
        }
    }

    /// A connection changes state, or goes: adjusts the counts by these amounts.
    func adjust(_ key: Key, open: Int = 0, loggingIn: Int = 0, resetting: Int = 0, idle: Int = 0) {
        pools.withLock { pools in
            var counts = pools[key] ?? Counts()
            counts.open += open
            counts.loggingIn += loggingIn
            counts.resetting += resetting
            counts.idle += idle
            pools[key] = counts
        }
    }

    func waitStarted(_ key: Key, at now: UInt64) {
        pools.withLock { $0[key, default: Counts()].waitingSince.append(now) }
    }

    /// A wait is over (`now`: when, for the histogram; `timedOut`: it ended in an error).
    func waitEnded(_ key: Key, startedAt: UInt64, now: UInt64, timedOut: Bool = false) {
        pools.withLock { pools in
            guard let position = pools[key]?.waitingSince.firstIndex(of: startedAt) else { return }
            pools[key]!.waitingSince.remove(at: position)
            let seconds = Double(now &- startedAt) / 1e9
            let bucket = Self.waitBounds.firstIndex { seconds <= $0 } ?? Self.waitBounds.count
            pools[key]!.waitBuckets[bucket] += 1
            pools[key]!.waitSeconds += seconds
            if timedOut { pools[key]!.waitTimeouts += 1 }
        }
    }

    /// A client of another worker waits for `key`: an idle connection of that pool should close.
    func wantRoom(_ key: Key) {
        roomWanted.withLock { _ = $0.insert(key) }
    }

    /// The pools whose room is wanted (empty almost always: one lock, no allocation).
    var wantedRooms: Set<Key> {
        roomWanted.withLock { $0 }
    }

    /// Takes the request for room in `key` (true: this caller closes a connection for it).
    func claimRoom(_ key: Key) -> Bool {
        roomWanted.withLock { $0.remove(key) != nil }
    }

    /// Every pool that exists or existed, for SHOW POOLS and /metrics.
    /// Connections of `key` open or logging in, proxy-wide.
    func openCount(_ key: Key) -> (open: Int, loggingIn: Int) {
        pools.withLock { pools in
            let counts = pools[key]
            return (counts?.open ?? 0, counts?.loggingIn ?? 0)
        }
    }

    func snapshot() -> [(key: Key, counts: Counts)] {
        pools.withLock { pools in
            pools.map { ($0.key, $0.value) }.sorted {
                ($0.key.backend, $0.key.database, $0.key.user) < ($1.key.backend, $1.key.database, $1.key.user)
            }
        }
    }
}
