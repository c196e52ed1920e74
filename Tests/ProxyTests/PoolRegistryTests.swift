@testable import Proxy
import Testing

@Suite("Pool registry: limits that hold for the whole proxy")
struct PoolRegistryTests {
    let registry = PoolRegistry()
    let app = PoolRegistry.Key(backend: 0, user: "app", database: "app")
    let limits = PoolLimits(poolSize: 2, reservePoolSize: 1, maxDBConnections: 0, maxUserConnections: 0)

    @Test func aPoolOpensUpToItsSizeThenItsReserveForClientsThatWaited() {
        #expect(registry.reserve(app, limits: limits, reserve: false))
        #expect(registry.reserve(app, limits: limits, reserve: false))
        #expect(!registry.reserve(app, limits: limits, reserve: false))
        #expect(registry.reserve(app, limits: limits, reserve: true))
        #expect(!registry.reserve(app, limits: limits, reserve: true))
        #expect(registry.snapshot().first?.counts.open == 3)
    }

    @Test func aClosedConnectionFreesItsSlot() {
        _ = registry.reserve(app, limits: limits, reserve: false)
        _ = registry.reserve(app, limits: limits, reserve: false)
        registry.adjust(app, open: -1, loggingIn: -1)
        #expect(registry.reserve(app, limits: limits, reserve: false))
    }

    @Test func maxDBConnectionsCountsEveryUsersPoolOnThatBackend() {
        let capped = PoolLimits(poolSize: 10, reservePoolSize: 0, maxDBConnections: 3, maxUserConnections: 0)
        let other = PoolRegistry.Key(backend: 0, user: "batch", database: "app")
        let otherBackend = PoolRegistry.Key(backend: 1, user: "batch", database: "app")
        #expect(registry.reserve(app, limits: capped, reserve: false))
        #expect(registry.reserve(app, limits: capped, reserve: false))
        #expect(registry.reserve(other, limits: capped, reserve: false))
        #expect(!registry.reserve(other, limits: capped, reserve: false))
        #expect(registry.reserve(otherBackend, limits: capped, reserve: false))
    }

    @Test func maxUserConnectionsCountsEveryDatabaseOfThatUser() {
        let capped = PoolLimits(poolSize: 10, reservePoolSize: 0, maxDBConnections: 0, maxUserConnections: 2)
        let reports = PoolRegistry.Key(backend: 0, user: "app", database: "reports")
        #expect(registry.reserve(app, limits: capped, reserve: false))
        #expect(registry.reserve(reports, limits: capped, reserve: false))
        #expect(!registry.reserve(reports, limits: capped, reserve: false))
    }

    @Test func countsFollowAConnectionThroughItsStates() {
        _ = registry.reserve(app, limits: limits, reserve: false)
        var counts = registry.snapshot()[0].counts
        #expect((counts.open, counts.loggingIn, counts.active) == (1, 1, 0))
        registry.adjust(app, loggingIn: -1)
        counts = registry.snapshot()[0].counts
        #expect(counts.active == 1)
        registry.adjust(app, resetting: 1)
        registry.adjust(app, resetting: -1, idle: 1)
        counts = registry.snapshot()[0].counts
        #expect((counts.active, counts.idle) == (0, 1))
    }

    @Test func waitsAreCountedUntilTheyEndAndThenLandInTheHistogram() {
        registry.waitStarted(app, at: 10)
        registry.waitStarted(app, at: 20)
        registry.waitEnded(app, startedAt: 10, now: 10 + 2_000_000)  // 2 ms
        var counts = registry.snapshot()[0].counts
        #expect(counts.waitingSince == [20])
        #expect(counts.waitBuckets[1] == 1)  // ≤ 5 ms
        registry.waitEnded(app, startedAt: 20, now: 20 + 200_000_000_000, timedOut: true)  // 200 s
        counts = registry.snapshot()[0].counts
        #expect(counts.waitBuckets.last == 1)
        #expect(counts.waitTimeouts == 1)
        #expect(abs(counts.waitSeconds - 200.002) < 0.001)
    }

    @Test func aWantedRoomIsClaimedOnce() {
        registry.wantRoom(app)
        #expect(registry.wantedRooms == [app])
        #expect(registry.claimRoom(app))
        #expect(!registry.claimRoom(app))
    }
}
