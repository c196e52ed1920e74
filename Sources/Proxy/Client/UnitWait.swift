import Router
import Wire

/// Why the unit at the head of a session's queue waits for the cluster, with its deadline. Pure:
/// the clock and the topology generation come in as arguments.
enum UnitWait: Equatable {
    case none
    /// A replica is only behind the session's floor: it gets `causal_wait_ms` to catch up (the
    /// unit is routed again at every new topology), then the fallback is used.
    case forFloor(deadline: UInt64, generation: UInt64)
    /// PAUSE (switchovers) holds a new write transaction until RESUME; past the pause timeout
    /// it is refused.
    case forResume(deadline: UInt64)

    enum Verdict: Equatable {
        case proceed
        case wait
        case refuse(ErrorFields)
    }

    /// What the timing knows when a unit is routed.
    struct Clock {
        var now: UInt64
        var generation: UInt64
        var paused: Bool
        var causalWaitNanos: UInt64
        var pauseTimeoutNanos: UInt64
    }

    /// The Router's decision for the head unit: send it, let it wait, or refuse it.
    mutating func admit(_ decision: RouteDecision, classification: Classification?, inTransaction: Bool,
                        clock: Clock) -> Verdict {
        if decision.shouldWait && decision.error == nil {
            let deadline = if case let .forFloor(existing, _) = self { existing } else { clock.now + clock.causalWaitNanos }
            if clock.now < deadline {
                self = .forFloor(deadline: deadline, generation: clock.generation)
                return .wait
            }
        }
        if clock.paused && Router.pauseHolds(decision, classification: classification, inTransaction: inTransaction) {
            let deadline = if case let .forResume(existing) = self { existing } else { clock.now + clock.pauseTimeoutNanos }
            if clock.now < deadline {
                self = .forResume(deadline: deadline)
                return .wait
            }
            self = .none
            return .refuse(ErrorFields(severity: .error, sqlState: SQLState.cannotConnectNow,
                                       message: "writes are paused (PAUSE) and did not resume in time",
                                       hint: "An operator paused writes for a switchover; retry after RESUME."))
        }
        self = .none
        return .proceed
    }

    /// Whether the waiting unit should be routed again now: a new topology or the deadline for a
    /// floor wait; RESUME or the deadline for a pause.
    func shouldRetry(now: UInt64, generation: UInt64, paused: Bool) -> Bool {
        switch self {
        case .none: true
        case let .forFloor(deadline, seen): generation != seen || now >= deadline
        case let .forResume(deadline): !paused || now >= deadline
        }
    }

    /// Waits are served in this order, so writes held by PAUSE go in the order they arrived.
    var releaseOrder: (UInt64, UInt64) {
        switch self {
        case .none: (0, 0)
        case let .forFloor(deadline, _): (0, deadline)
        case let .forResume(deadline): (deadline, 0)
        }
    }
}
