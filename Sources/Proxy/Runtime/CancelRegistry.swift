import Synchronization

/// The backend keys the proxy hands to clients, and where a CancelRequest carrying one goes.
/// Shared by all workers: a CancelRequest arrives on a fresh connection that may land on any
/// worker.
///
/// The process id a client sees is the proxy's own, never a server's. It is above the largest
/// pid Linux can give a process (PID_MAX_LIMIT, 2^22, whatever `kernel.pid_max` says), so
/// `pg_terminate_backend(<the pid the driver reports>)` cannot end an unrelated server process;
/// and it is distinct among live sessions.
public final class CancelRegistry: Sendable {
    static let firstProcessID: Int32 = 4_194_305

    struct Target: Sendable {
        var backend: ResolvedBackend
        var processID: Int32
        var secret: [UInt8]
    }

    /// One session's key. The session points it at the server link that runs its work and says
    /// whether work is running: a cancel that arrives while none is would hit whatever the
    /// client runs next, so it is dropped (PostgreSQL ignores a cancel for an idle backend too).
    /// A cancel on its way to a server holds that server connection for the session: lent to
    /// another client (transaction pooling), it would cancel that client's query.
    final class Key: Sendable {
        let processID: Int32
        let secret: [UInt8]
        private struct State {
            var target: Target?
            var running = false
            var inFlight = 0
        }

        private let state = Mutex(State())

        fileprivate init(processID: Int32, secret: [UInt8]) {
            self.processID = processID
            self.secret = secret
        }

        func point(at target: Target) { state.withLock { $0.target = target } }
        func setRunning(_ value: Bool) { state.withLock { $0.running = value } }

        /// Stops forwarding cancels; false (and nothing changes) while one is on its way.
        func stopRunningUnlessCancelling() -> Bool {
            state.withLock { state in
                guard state.inFlight == 0 else { return false }
                state.running = false
                return true
            }
        }

        /// The server has the cancel (or could not be reached).
        func cancelDelivered() { state.withLock { $0.inFlight -= 1 } }

        /// Where a cancel goes now, counted as on its way until `cancelDelivered`.
        fileprivate func claimCancel() -> Target? {
            state.withLock { state in
                guard state.running, let target = state.target else { return nil }
                state.inFlight += 1
                return target
            }
        }
    }

    private struct State {
        var next = CancelRegistry.firstProcessID
        var live: [Int32: Key] = [:]
    }

    private let state = Mutex(State())
    /// Server backends the sessions use, by (backend index, server pid): a NotificationResponse
    /// from one of them carries its session's pid instead of the server's.
    private let serverProcesses = Mutex<[Int64: Int32]>([:])

    public init() {}

    /// A new key, with a process id no live session has.
    func issue() -> Key {
        let secret = Crypto.randomBytes(4)
        return state.withLock { state in
            var processID = state.next
            while state.live[processID] != nil { processID = Self.after(processID) }
            state.next = Self.after(processID)
            let key = Key(processID: processID, secret: secret)
            state.live[processID] = key
            return key
        }
    }

    func retire(_ key: Key) {
        state.withLock { state in
            if state.live[key.processID] === key { state.live.removeValue(forKey: key.processID) }
        }
    }

    /// Where a CancelRequest with this key goes now: nil for an unknown key, a wrong secret, or
    /// a session with nothing running. The caller tells the key `cancelDelivered` once the
    /// server has it.
    func cancelTarget(processID: Int32, secret: [UInt8]) -> (Target, Key)? {
        guard let key = state.withLock({ $0.live[processID] }), Crypto.constantTimeEqual(key.secret, secret),
              let target = key.claimCancel() else {
            return nil
        }
        return (target, key)
    }

    func noteServerProcess(backend: Int, serverPID: Int32, clientProcessID: Int32) {
        serverProcesses.withLock { $0[Self.serverKey(backend, serverPID)] = clientProcessID }
    }

    func forgetServerProcess(backend: Int, serverPID: Int32) {
        _ = serverProcesses.withLock { $0.removeValue(forKey: Self.serverKey(backend, serverPID)) }
    }

    /// The pid the client of the session using this server backend knows, if one does.
    func clientProcessID(backend: Int, serverPID: Int32) -> Int32? {
        serverProcesses.withLock { $0[Self.serverKey(backend, serverPID)] }
    }

    private static func serverKey(_ backend: Int, _ serverPID: Int32) -> Int64 {
        Int64(backend) << 32 | Int64(UInt32(bitPattern: serverPID))
    }

    private static func after(_ processID: Int32) -> Int32 {
        processID == Int32.max ? firstProcessID : processID + 1
    }
}
