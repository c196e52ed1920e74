import CLibUV
import CShims
import Foundation
import LagMonitor
import Router
import Synchronization
import Wire

/// A backend address resolved once at start-up, so connecting never blocks a loop on DNS.
public struct ResolvedBackend: Sendable {
    public let config: BackendConfig
    let address: [UInt8] // a sockaddr_in or sockaddr_in6

    var label: String { "\(config.name) (\(config.host):\(config.port))" }

    static func resolve(_ backend: BackendConfig) throws -> ResolvedBackend {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(backend.host, String(backend.port), &hints, &result)
        guard status == 0, let first = result else {
            throw ProxyStartError("cannot resolve backend \(backend.name) host \"\(backend.host)\": \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(result) }
        let bytes = Array(UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
        return ResolvedBackend(config: backend, address: bytes)
    }
}

public struct ProxyStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Process-wide counters; relaxed atomics because they are statistics, not synchronisation.
public final class ProxyCounters: Sendable {
    let clientConnections = Atomic<Int>(0)
}

/// Everything the workers share: the settings snapshot a reload replaces, the monitor, and the
/// locked registries inside.
public final class ProxyRuntime: Sendable {
    public let logLevel: LogLevel
    /// Secret for deriving stable fake SCRAM salts: an unknown user must look exactly like a
    /// known one, including getting the same salt on every attempt.
    private let mockSaltKey = Crypto.randomBytes(32)
    let cancels = CancelRegistry()
    let greetings = GreetingCache()
    /// Every pool's connection counts, shared by the workers (limits hold proxy-wide).
    let pools = PoolRegistry()
    let counters = ProxyCounters()
    public let stats: ProxyStats
    /// When the process started, for uptime figures.
    let startedAt = Date().timeIntervalSince1970
    let shuttingDown = Atomic<Bool>(false)
    private let topologySource: @Sendable () -> Topology
    /// The monitor's snapshots (nil without a monitor: the declared topology never changes).
    private let topologyBox: TopologyBox?
    private let fastPoll: @Sendable () -> Void

    /// Measures the cluster; nil when the runtime was built without one (unit tests).
    public let monitor: LagMonitor?

    private let current: Mutex<RuntimeSettings>
    /// `current`'s generation, so a worker can tell with one atomic load that it holds the latest.
    let settingsGeneration = Atomic<Int>(0)
    /// One reload at a time (SIGHUP and RELOAD may race).
    let reloading = Mutex<Void>(())
    /// Where RELOAD and SIGHUP read the configuration from; nil when it was not loaded from a file.
    public let configPath: String?

    /// The settings in force. Workers cache it per request (`Worker.settings`).
    public var settings: RuntimeSettings { current.withLock { $0 } }
    public var config: CausewayConfig { settings.config }

    public init(config: CausewayConfig, configPath: String? = nil, monitored: Bool = true) throws {
        self.configPath = configPath
        logLevel = config.proxy.logLevel
        stats = ProxyStats()
        let slots = try config.backends.map {
            BackendSlot(backend: try ResolvedBackend.resolve($0), counters: BackendCounters(), removed: false)
        }
        current = Mutex(RuntimeSettings(generation: 0, config: config, slots: slots,
                                        scramKeys: Self.scramKeys(for: config.users, reusing: [:], previous: [])))
        if monitored {
            let log = Log(component: "monitor", minimumLevel: config.proxy.logLevel)
            let monitor = LagMonitor(
                backends: Self.monitored(slots, indexes: Array(slots.indices)),
                settings: MonitorSettings(intervalMs: config.monitor.intervalMs, user: config.monitor.user,
                                          password: config.monitor.password),
                log: { line in log.raw(line) })
            self.monitor = monitor
            let box = monitor.topology
            topologyBox = box
            topologySource = { box.current() }
            fastPoll = { monitor.pollSoon() }
        } else {
            monitor = nil
            let fixed = Self.declaredTopology(config)
            topologyBox = nil
            topologySource = { fixed }
            fastPoll = {}
        }
    }

    static func monitored(_ slots: [BackendSlot], indexes: [Int]) -> [MonitoredBackend] {
        indexes.map { index in
            let backend = slots[index].backend.config
            return MonitoredBackend(index: index, name: backend.name, host: backend.host, port: backend.port,
                                    zone: backend.zone, weight: backend.weight,
                                    declaredRole: backend.role)
        }
    }

    /// Keys for `users`; a user whose entry is unchanged keeps its keys (and so its salt).
    static func scramKeys(for users: [UserConfig], reusing old: [String: ScramKeys], previous: [UserConfig]) -> [String: ScramKeys] {
        var keys: [String: ScramKeys] = [:]
        for user in users {
            if let kept = old[user.name], previous.contains(user) {
                keys[user.name] = kept
            } else if let verifier = user.scram {
                keys[user.name] = ScramKeys(verifier: verifier)
            } else if let password = user.password {
                keys[user.name] = ScramKeys.derive(password: password, salt: Crypto.randomBytes(16), iterations: 4096).keys
            }
        }
        return keys
    }

    /// Installs the next settings snapshot (under `reloading`).
    func install(_ next: (Int) -> RuntimeSettings) {
        current.withLock { settings in
            settings = next(settings.generation + 1)
            settingsGeneration.store(settings.generation, ordering: .releasing)
        }
    }

    /// The latest view of the cluster the routing decisions use.
    func topology() -> Topology { topologySource() }

    /// The generation of the latest snapshot, without a lock (0 without a monitor).
    var topologyGeneration: UInt64 { topologyBox?.latestGeneration ?? 0 }

    /// PAUSE: new write transactions wait until RESUME (or their wait times out); reads go on.
    let paused = Atomic<Bool>(false)
    /// How long a write waits under PAUSE before it is refused, in nanoseconds.
    let pauseTimeoutNanos = Atomic<UInt64>(30_000_000_000)

    func pause(seconds: Double) {
        pauseTimeoutNanos.store(UInt64(seconds * 1e9), ordering: .relaxed)
        paused.store(true, ordering: .relaxed)
        Log(component: "admin", minimumLevel: logLevel).info("pause", ["timeout_s": seconds])
    }

    func resume() {
        paused.store(false, ordering: .relaxed)
        Log(component: "admin", minimumLevel: logLevel).info("resume")
    }

    /// Sessions an operator asked to end (KILL), picked up by their worker's next tick.
    private let killRequests = Mutex<Set<Int32>>([])
    let killPending = Atomic<Bool>(false)

    /// Returns false when no such client is connected.
    func kill(client id: Int32) -> Bool {
        guard stats.clientList().contains(where: { $0.id == id }) else { return false }
        killRequests.withLock { _ = $0.insert(id) }
        killPending.store(true, ordering: .relaxed)
        return true
    }

    /// Takes the kill request for `id`, if there is one.
    func takeKillRequest(_ id: Int32) -> Bool {
        killRequests.withLock { requests in
            let found = requests.remove(id) != nil
            if requests.isEmpty { killPending.store(false, ordering: .relaxed) }
            return found
        }
    }

    /// DRAIN deadlines by backend index (monotonic nanoseconds).
    private let drainDeadlines = Mutex<[Int: UInt64]>([:])

    func drain(backend index: Int, seconds: Double) {
        let deadline = cw_monotonic_nanos() + UInt64(seconds * 1e9)
        drainDeadlines.withLock { $0[index] = deadline }
        let name = settings.slots[index].name
        monitor?.setDraining(name, true)
        Log(component: "admin", minimumLevel: logLevel).info("drain", ["backend": name, "timeout_s": seconds])
    }

    func undrain(backend index: Int) {
        _ = drainDeadlines.withLock { $0.removeValue(forKey: index) }
        let name = settings.slots[index].name
        monitor?.setDraining(name, false)
        Log(component: "admin", minimumLevel: logLevel).info("undrain", ["backend": name])
    }

    /// A reload removed backend `index`: its connections go at their next transaction boundary,
    /// and those still busy after the grace period are cut, as after a DRAIN's timeout.
    func retire(backend index: Int) {
        let deadline = cw_monotonic_nanos() + UInt64(Self.removalGraceSeconds * 1e9)
        drainDeadlines.withLock { $0[index] = min($0[index] ?? .max, deadline) }
        // A drain is by name: it must not carry over to a backend added later under that name.
        if let name = settings.slots.indices.contains(index) ? settings.slots[index].name : nil,
           settings.liveIndex(named: name) == nil {
            monitor?.setDraining(name, false)
        }
    }

    /// Whether a drain of `index` has run out of time (remaining connections are then cut).
    func drainExpired(_ index: Int) -> Bool {
        guard let deadline = drainDeadlines.withLock({ $0[index] }) else { return false }
        return cw_monotonic_nanos() >= deadline
    }

    /// Someone waits for a replica to catch up: poll the cluster faster for a while.
    func requestFastPoll() { fastPoll() }

    /// Roles as declared in the configuration (`auto` counts as primary for the first such
    /// backend when none is declared): used until a monitor has measured the cluster.
    static func declaredTopology(_ config: CausewayConfig) -> Topology {
        let declaresPrimary = config.backends.contains { $0.role == .primary }
        var primaryTaken = declaresPrimary
        let statuses = config.backends.enumerated().map { index, backend -> BackendStatus in
            var role: BackendRoleObserved
            switch backend.role {
            case .primary: role = .primary
            case .replica: role = .replica
            case .auto:
                role = primaryTaken ? .replica : .primary
                primaryTaken = true
            }
            return BackendStatus(index: index, name: backend.name, zone: backend.zone, weight: backend.weight, role: role)
        }
        return Topology(generation: 0, backends: statuses)
    }

    func mockScramKeys(for user: String) -> ScramKeys {
        let salt = Array(Crypto.hmacSHA256(key: mockSaltKey, Array(user.utf8)).prefix(16))
        return ScramKeys(salt: salt, iterations: 4096, storedKey: Crypto.randomBytes(32), serverKey: Crypto.randomBytes(32))
    }

    func log(_ component: String) -> Log { Log(component: component, minimumLevel: logLevel) }
}
