import Router
import Testing
import Wire
@testable import Proxy

/// Waiting for the cluster without a clock inside: a replica behind the session's floor, and
/// PAUSE holding new write transactions until RESUME or its deadline.
struct UnitWaitTests {
    static let second: UInt64 = 1_000_000_000
    static let write = QueryClassifier.classify("INSERT INTO t VALUES (1)", volatileFunctions: [])
    static let read = QueryClassifier.classify("SELECT 1", volatileFunctions: [])
    static let toPrimary = RouteDecision(target: 0, isPrimary: true, reason: .write)
    static let behindFloor = RouteDecision(target: 0, isPrimary: true, reason: .floor, shouldWait: true)

    static func clock(_ now: UInt64, generation: UInt64 = 1, paused: Bool = false, causalWait: UInt64 = 0) -> UnitWait.Clock {
        UnitWait.Clock(now: now, generation: generation, paused: paused, causalWaitNanos: causalWait,
                       pauseTimeoutNanos: 30 * second)
    }

    @Test func aReplicaBehindTheFloorIsWaitedForUntilCausalWaitRunsOut() {
        var wait = UnitWait.none
        #expect(wait.admit(Self.behindFloor, classification: Self.read, inTransaction: false,
                           clock: Self.clock(10 * Self.second, causalWait: Self.second)) == .wait)
        #expect(wait == .forFloor(deadline: 11 * Self.second, generation: 1))
        // Nothing new yet: stay asleep; a new topology or the deadline wakes it.
        #expect(!wait.shouldRetry(now: 10 * Self.second + 5, generation: 1, paused: false))
        #expect(wait.shouldRetry(now: 10 * Self.second + 5, generation: 2, paused: false))
        #expect(wait.shouldRetry(now: 11 * Self.second, generation: 1, paused: false))
        // Routed again before the deadline, still behind: the first deadline stands.
        #expect(wait.admit(Self.behindFloor, classification: Self.read, inTransaction: false,
                           clock: Self.clock(10 * Self.second + 500, generation: 2, causalWait: Self.second)) == .wait)
        #expect(wait == .forFloor(deadline: 11 * Self.second, generation: 2))
        // Past it: the fallback (the primary) is used.
        #expect(wait.admit(Self.behindFloor, classification: Self.read, inTransaction: false,
                           clock: Self.clock(11 * Self.second, causalWait: Self.second)) == .proceed)
        #expect(wait == .none)
    }

    @Test func withoutCausalWaitAReadGoesToTheFallbackAtOnce() {
        var wait = UnitWait.none
        #expect(wait.admit(Self.behindFloor, classification: Self.read, inTransaction: false, clock: Self.clock(5)) == .proceed)
    }

    @Test func pauseHoldsANewWriteUntilResume() {
        var wait = UnitWait.none
        #expect(wait.admit(Self.toPrimary, classification: Self.write, inTransaction: false,
                           clock: Self.clock(Self.second, paused: true)) == .wait)
        #expect(wait == .forResume(deadline: 31 * Self.second))
        #expect(!wait.shouldRetry(now: 2 * Self.second, generation: 9, paused: true))
        #expect(wait.shouldRetry(now: 2 * Self.second, generation: 9, paused: false))
        #expect(wait.admit(Self.toPrimary, classification: Self.write, inTransaction: false,
                           clock: Self.clock(2 * Self.second)) == .proceed)
        #expect(wait == .none)
    }

    @Test func aWriteStillPausedAtTheDeadlineIsRefusedWith57P03() {
        var wait = UnitWait.forResume(deadline: 31 * Self.second)
        #expect(wait.shouldRetry(now: 31 * Self.second, generation: 1, paused: true))
        guard case let .refuse(error) = wait.admit(Self.toPrimary, classification: Self.write, inTransaction: false,
                                                   clock: Self.clock(31 * Self.second, paused: true)) else {
            Issue.record("not refused")
            return
        }
        #expect(error.sqlState == "57P03")
        #expect(error.message?.contains("PAUSE") == true)
        #expect(wait == .none)
    }

    @Test func pauseLetsReadsAndOpenTransactionsThrough() {
        var wait = UnitWait.none
        #expect(wait.admit(RouteDecision(target: 1, isPrimary: false, reason: .read), classification: Self.read,
                           inTransaction: false, clock: Self.clock(1, paused: true)) == .proceed)
        #expect(wait.admit(Self.toPrimary, classification: Self.write, inTransaction: true,
                           clock: Self.clock(1, paused: true)) == .proceed)
    }

    @Test func heldWritesAreReleasedInArrivalOrder() {
        let early = UnitWait.forResume(deadline: 31 * Self.second)
        let late = UnitWait.forResume(deadline: 32 * Self.second)
        #expect(early.releaseOrder < late.releaseOrder)
        #expect(UnitWait.forFloor(deadline: 99, generation: 1).releaseOrder < early.releaseOrder)
    }
}
