import Router
import Synchronization

/// Counters for one backend, shared by all workers (relaxed atomics: statistics, not locks).
public final class BackendCounters: Sendable {
    /// Server connections open to this backend.
    let serverConnections = Atomic<Int>(0)
    /// Sessions currently reading from it (their sticky replica) — or, for the primary, logged in.
    let sessions = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let writes = Atomic<Int>(0)
}

/// Process-wide statistics the admin console and the metrics endpoint report.
public final class ProxyStats: Sendable {
    /// Indexed like `RouteReason.allCases`.
    private let reasons: [ReasonCounter]
    let retries = Atomic<Int>(0)
    /// ErrorResponses servers sent to clients (relayed as they were).
    let serverErrors = Atomic<Int>(0)
    /// ErrorResponses the proxy itself sent, by SQLSTATE (a refusal path, never the hot one).
    private let proxyErrors = Mutex<[String: Int]>([:])
    let totalClients = Atomic<Int>(0)
    let authFailures = Atomic<Int>(0)
    private let clients = Mutex<[Int32: ClientInfo]>([:])
    private let servers = Mutex<[ObjectIdentifier: ServerInfo]>([:])

    final class ReasonCounter: Sendable {
        let count = Atomic<Int>(0)
    }

    /// What SHOW CLIENTS lists; written at login and logout only, except the status, which the
    /// session stores (one relaxed atomic) when its state or pins change.
    struct ClientInfo: Sendable {
        var id: Int32
        var user: String
        var database: String
        var address: String
        var worker: Int
        var connectedAt: Double
        var status: ClientStatus
    }

    /// A session's packed `SessionMachine.statusCode`.
    final class ClientStatus: Sendable {
        let code = Atomic<UInt32>(UInt32(ClientState.loggingIn.rawValue))
    }

    init() {
        reasons = RouteReason.allCases.map { _ in ReasonCounter() }
    }

    func countUnit(_ backend: BackendCounters?, isWrite: Bool, reason: RouteReason) {
        if let backend {
            if isWrite {
                backend.writes.add(1, ordering: .relaxed)
            } else {
                backend.reads.add(1, ordering: .relaxed)
            }
        }
        if let position = RouteReason.allCases.firstIndex(of: reason) {
            reasons[position].count.add(1, ordering: .relaxed)
        }
    }

    func countProxyError(_ sqlState: String?) {
        proxyErrors.withLock { $0[sqlState ?? "XX000", default: 0] += 1 }
    }

    func proxyErrorCounts() -> [(String, Int)] {
        proxyErrors.withLock { $0.sorted { $0.key < $1.key } }
    }

    func routeCounts() -> [(RouteReason, Int)] {
        RouteReason.allCases.enumerated().map { ($1, reasons[$0].count.load(ordering: .relaxed)) }
    }

    func clientOpened(_ info: ClientInfo) {
        clients.withLock { $0[info.id] = info }
        totalClients.add(1, ordering: .relaxed)
    }

    func clientClosed(_ id: Int32) {
        _ = clients.withLock { $0.removeValue(forKey: id) }
    }

    /// What SHOW SERVERS lists of one pooled server connection; written when it opens and
    /// closes, except the status, which changes as clients borrow it (one relaxed atomic).
    struct ServerInfo: Sendable {
        var backend: String
        var user: String
        var database: String
        var worker: Int
        var connectedAt: Double
        var status: ServerStatus
    }

    /// A server connection's state, the client using it and the server process.
    final class ServerStatus: Sendable {
        enum State: UInt8 {
            case loggingIn, active, idle, resetting

            var label: String {
                switch self {
                case .loggingIn: "login"
                case .active: "active"
                case .idle: "idle"
                case .resetting: "resetting"
                }
            }
        }

        /// The state in the low byte, the client's process id above it.
        private let code = Atomic<UInt64>(UInt64(State.loggingIn.rawValue))
        let serverPID = Atomic<Int32>(0)

        func set(_ state: State, client: Int32 = 0) {
            code.store(UInt64(UInt32(bitPattern: client)) << 8 | UInt64(state.rawValue), ordering: .relaxed)
        }

        var current: (state: State, client: Int32?) {
            let value = code.load(ordering: .relaxed)
            let client = Int32(bitPattern: UInt32(truncatingIfNeeded: value >> 8))
            return (State(rawValue: UInt8(value & 0xff)) ?? .idle, client == 0 ? nil : client)
        }
    }

    func serverOpened(_ id: ObjectIdentifier, _ info: ServerInfo) {
        servers.withLock { $0[id] = info }
    }

    func serverClosed(_ id: ObjectIdentifier) {
        _ = servers.withLock { $0.removeValue(forKey: id) }
    }

    func serverList() -> [ServerInfo] {
        servers.withLock { Array($0.values) }.sorted { ($0.backend, $0.connectedAt) < ($1.backend, $1.connectedAt) }
    }

    func clientList() -> [ClientInfo] {
        clients.withLock { Array($0.values) }.sorted { $0.id < $1.id }
    }
}
