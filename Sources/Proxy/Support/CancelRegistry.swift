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
    final class Key: Sendable {
        let processID: Int32
        let secret: [UInt8]
        private let target = Mutex<Target?>(nil)
        private let running = Atomic<Bool>(false)

        fileprivate init(processID: Int32, secret: [UInt8]) {
            self.processID = processID
            self.secret = secret
        }

        func point(at target: Target) { self.target.withLock { $0 = target } }
        func setRunning(_ value: Bool) { running.store(value, ordering: .relaxed) }
        fileprivate var runningTarget: Target? { running.load(ordering: .relaxed) ? target.withLock { $0 } : nil }
    }

    private struct State {
        var next = CancelRegistry.firstProcessID
        var live: [Int32: Key] = [:]
    }

    private let state = Mutex(State())

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
    /// a session with nothing running.
    func cancelTarget(processID: Int32, secret: [UInt8]) -> Target? {
        guard let key = state.withLock({ $0.live[processID] }), Crypto.constantTimeEqual(key.secret, secret) else {
            return nil
        }
        return key.runningTarget
    }

    private static func after(_ processID: Int32) -> Int32 {
        processID == Int32.max ? firstProcessID : processID + 1
    }
}
