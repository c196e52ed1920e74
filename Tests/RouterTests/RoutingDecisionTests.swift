import Router
import Testing

// Hand-built topologies: index 0 is the primary, replicas follow.

private func primary(_ index: Int = 0, zone: String = "dc1", health: BackendHealth = .up, error: String? = nil) -> BackendStatus {
    BackendStatus(index: index, name: "pg\(index)", zone: zone, role: .primary, health: health,
                  currentLSN: LSN(5000), lastError: error)
}

private func replica(
    _ index: Int, zone: String = "dc1", weight: Int = 1, health: BackendHealth = .up, draining: Bool = false,
    lagMs: Double = 0, lagBytes: UInt64 = 0, replay: LSN? = LSN(5000), paused: Bool = false, error: String? = nil
) -> BackendStatus {
    BackendStatus(index: index, name: "pg\(index)", zone: zone, weight: weight, role: .replica, health: health,
                  draining: draining, replayLSN: replay, lagBytes: lagBytes, lagMs: lagMs, replayPaused: paused,
                  lastError: error)
}

private let read = QueryClassifier.classify("SELECT * FROM t", volatileFunctions: [])
private let write = QueryClassifier.classify("UPDATE t SET a = 1", volatileFunctions: [])

private func route(
    _ classification: Classification = read,
    _ backends: [BackendStatus],
    session: SessionRouting = SessionRouting(),
    policy: RoutingPolicy = RoutingPolicy(),
    load: [Int] = [],
    volatile: Set<String> = [],
    multiplePrimaries: Bool = false
) -> RouteDecision {
    Router.route(classification, session: session,
                 topology: Topology(generation: 1, backends: backends, volatileFunctions: volatile,
                                    multiplePrimaries: multiplePrimaries),
                 policy: policy, load: load)
}

private func sql(_ text: String) -> Classification { QueryClassifier.classify(text, volatileFunctions: []) }

@Suite struct BasicRoutingTests {
    @Test func writesGoToThePrimary() {
        #expect(route(write, [primary(), replica(1)]) == RouteDecision(target: 0, isPrimary: true, reason: .write))
    }

    @Test func readsGoToAReplica() {
        #expect(route(read, [primary(), replica(1)]) == RouteDecision(target: 1, isPrimary: false, reason: .read))
    }

    @Test func readsUseThePrimaryWhenNoReplicaIsConfigured() {
        #expect(route(read, [primary()]) == RouteDecision(target: 0, isPrimary: true, reason: .noReplica))
    }

    @Test func strongConsistencySendsEverythingToThePrimary() {
        let decision = route(read, [primary(), replica(1)], session: SessionRouting(consistency: .strong))
        #expect(decision == RouteDecision(target: 0, isPrimary: true, reason: .strong))
    }

    @Test func volatileFunctionsFromTheTopologyMakeAReadAWrite() {
        let classification = sql("SELECT audit('x')")
        #expect(!classification.isWrite)
        #expect(route(classification, [primary(), replica(1)], volatile: ["audit"]).reason == .write)
        #expect(route(classification, [primary(), replica(1)]).reason == .read)
    }

    @Test func metricsLabelsAreSnakeCase() {
        #expect(RouteReason.noReplica.rawValue == "no_replica")
        #expect(RouteReason.floor.rawValue == "floor")
    }
}

@Suite struct ReplicaEligibilityTests {
    @Test func aReplicaOverTheTimeBoundIsSkipped() {
        let decision = route(read, [primary(), replica(1, lagMs: 1500), replica(2, lagMs: 10)])
        #expect(decision.target == 2)
    }

    @Test func aReplicaOverTheByteBoundIsSkipped() {
        let decision = route(read, [primary(), replica(1, lagBytes: 20_000_000), replica(2)])
        #expect(decision.target == 2)
    }

    @Test func lagExactlyAtTheBoundIsAllowed() {
        let policy = RoutingPolicy(maxLagMs: 1000, maxLagBytes: 100)
        #expect(route(read, [primary(), replica(1, lagMs: 1000, lagBytes: 100)], policy: policy).target == 1)
    }

    @Test func whenEveryReplicaLagsReadsUseThePrimaryForThatReason() {
        let decision = route(read, [primary(), replica(1, lagMs: 5000), replica(2, lagBytes: .max)])
        #expect(decision == RouteDecision(target: 0, isPrimary: true, reason: .lag))
    }

    @Test func pausedReplayCountsAsLagOnlyWhenBehind() {
        #expect(route(read, [primary(), replica(1, paused: true)]).target == 1, "paused but caught up")
        #expect(route(read, [primary(), replica(1, lagBytes: 64, paused: true)]).reason == .lag, "paused and behind")
    }

    @Test func sessionModeRequiresTheFloor() {
        let session = SessionRouting(floor: LSN(6000), consistency: .session)
        let behind = route(read, [primary(), replica(1, replay: LSN(5999))], session: session)
        #expect(behind == RouteDecision(target: 0, isPrimary: true, reason: .floor))
        #expect(route(read, [primary(), replica(1, replay: LSN(6000))], session: session).target == 1)
        #expect(route(read, [primary(), replica(1, replay: nil)], session: session).reason == .floor, "unknown replay position")
        #expect(route(read, [primary(), replica(1, replay: LSN(10)), replica(2, replay: LSN(7000))], session: session).target == 2)
    }

    @Test func eventualModeIgnoresTheFloor() {
        let session = SessionRouting(floor: LSN(6000), consistency: .eventual)
        #expect(route(read, [primary(), replica(1, replay: LSN(1))], session: session).target == 1)
    }

    @Test func drainingReplicasGetNoNewReads() {
        #expect(route(read, [primary(), replica(1, draining: true), replica(2)]).target == 2)
        #expect(route(read, [primary(), replica(1, draining: true)]) == RouteDecision(target: 0, isPrimary: true, reason: .drain))
    }

    @Test func downOrUncheckedReplicasGetNoReads() {
        #expect(route(read, [primary(), replica(1, health: .down), replica(2)]).target == 2)
        #expect(route(read, [primary(), replica(1, health: .unknown), replica(2)]).target == 2)
        #expect(route(read, [primary(), replica(1, health: .down)]) == RouteDecision(target: 0, isPrimary: true, reason: .fallback))
    }

    @Test func theFallbackReasonIsTheNearestMiss() {
        let backends = [primary(), replica(1, health: .down), replica(2, draining: true), replica(3, lagMs: 9999)]
        #expect(route(read, backends).reason == .lag)
        let floored = backends + [replica(4, replay: LSN(1))]
        #expect(route(read, floored, session: SessionRouting(floor: LSN(2))).reason == .floor)
    }

    @Test func ineligibilityIsExplainedPerReplica() {
        let policy = RoutingPolicy(maxLagMs: 1000, maxLagBytes: 1000)
        let session = SessionRouting(floor: LSN(0x1_0000_0010))
        func why(_ backend: BackendStatus) -> String? {
            Router.ineligibility(of: backend, session: session, policy: policy)?.description
        }
        #expect(why(replica(1, health: .down, error: "connection refused")) == "down (connection refused)")
        #expect(why(replica(1, draining: true)) == "draining")
        #expect(why(replica(1, lagMs: 1520.4)) == "lagging 1520 ms (max 1000 ms)")
        #expect(why(replica(1, lagBytes: 5000)) == "lagging 5000 bytes (max 1000 bytes)")
        #expect(why(replica(1, lagBytes: 10, paused: true)) == "replay paused 10 bytes behind")
        #expect(why(replica(1, replay: LSN(0x1_0000_0000))) == "behind the session's floor (replayed 1/0 < 1/10)")
        #expect(why(replica(1, replay: LSN(0x1_0000_0010))) == nil)
    }
}

@Suite struct ReplicaChoiceTests {
    @Test func aSessionKeepsItsReplicaWhileItIsEligible() {
        let backends = [primary(), replica(1), replica(2, zone: "dc2")]
        let session = SessionRouting(stickyReplica: 2)
        #expect(route(read, backends, session: session, policy: RoutingPolicy(zone: "dc1"), load: [0, 0, 50]).target == 2)
    }

    @Test func aSessionMovesOnlyWhenItsReplicaStopsBeingEligible() {
        let session = SessionRouting(stickyReplica: 2)
        #expect(route(read, [primary(), replica(1), replica(2, lagMs: 5000)], session: session).target == 1)
        #expect(route(read, [primary(), replica(1), replica(2, draining: true)], session: session).target == 1)
        #expect(route(read, [primary(), replica(1)], session: session).target == 1, "sticky replica removed")
        #expect(route(read, [primary(), replica(1)], session: SessionRouting(stickyReplica: 0)).target == 1, "the primary is not sticky")
    }

    @Test func replicasInTheProxysZoneArePreferred() {
        let backends = [primary(), replica(1, zone: "dc2"), replica(2, zone: "dc1")]
        #expect(route(read, backends, policy: RoutingPolicy(zone: "dc1"), load: [0, 0, 10]).target == 2)
        #expect(route(read, backends, policy: RoutingPolicy(zone: "dc2")).target == 1)
    }

    @Test func otherZonesAreUsedWhenTheLocalOnesAreIneligible() {
        let backends = [primary(), replica(1, zone: "dc2"), replica(2, zone: "dc1", lagMs: 5000)]
        #expect(route(read, backends, policy: RoutingPolicy(zone: "dc1")).target == 1)
    }

    @Test func theLeastLoadedReplicaWins() {
        let backends = [primary(), replica(1), replica(2), replica(3)]
        #expect(route(read, backends, load: [0, 5, 1, 3]).target == 2)
    }

    @Test func loadIsWeighted() {
        let backends = [primary(), replica(1, weight: 1), replica(2, weight: 3)]
        #expect(route(read, backends).target == 2, "idle: the heavier weight")
        #expect(route(read, backends, load: [0, 0, 2]).target == 1, "(2+1)/3 = (0+1)/1: the tie goes to the lower index")
        #expect(route(read, backends, load: [0, 0, 3]).target == 1, "(3+1)/3 > (0+1)/1")
        #expect(route(read, backends, load: [0, 1, 4]).target == 2, "(4+1)/3 < (1+1)/1")
    }

    @Test func tiesGoToTheLowestIndex() {
        let backends = [primary(), replica(2), replica(1)]
        #expect(route(read, backends, load: [0, 1, 1]).target == 1)
    }

    @Test func zeroWeightReplicasAreALastResort() {
        let backends = [primary(), replica(1, weight: 0), replica(2, weight: 1)]
        #expect(route(read, backends, load: [0, 0, 100]).target == 2)
        #expect(route(read, [primary(), replica(1, weight: 0)]).target == 1)
    }

    @Test func aShortLoadArrayCountsMissingBackendsAsIdle() {
        #expect(route(read, [primary(), replica(1), replica(2)], load: [3, 2]).target == 2)
    }
}

@Suite struct FallbackModeTests {
    private let lagging = [primary(), replica(1, lagMs: 5000)]

    @Test func fallbackPrimaryUsesThePrimary() {
        let decision = route(read, lagging, policy: RoutingPolicy(fallback: .primary))
        #expect(decision == RouteDecision(target: 0, isPrimary: true, reason: .lag))
    }

    @Test func fallbackWaitAsksTheCallerToWaitWhenAReplicaCanCatchUp() {
        let decision = route(read, lagging, policy: RoutingPolicy(fallback: .wait))
        #expect(decision == RouteDecision(target: 0, isPrimary: true, reason: .lag, shouldWait: true))
    }

    @Test func fallbackWaitDoesNotWaitForReplicasThatCannotCatchUp() {
        let down = [primary(), replica(1, health: .down), replica(2, draining: true)]
        let decision = route(read, down, policy: RoutingPolicy(fallback: .wait))
        #expect(decision.shouldWait == false)
        #expect(decision.target == 0)
    }

    @Test func causalWaitAppliesToTheFloorEvenWithFallbackPrimary() {
        let backends = [primary(), replica(1, replay: LSN(10))]
        let session = SessionRouting(floor: LSN(20))
        let waiting = route(read, backends, session: session, policy: RoutingPolicy(fallback: .primary, causalWaitMs: 50))
        #expect(waiting == RouteDecision(target: 0, isPrimary: true, reason: .floor, shouldWait: true))
        let noWait = route(read, backends, session: session, policy: RoutingPolicy(fallback: .primary, causalWaitMs: 0))
        #expect(!noWait.shouldWait)
        #expect(!route(read, lagging, policy: RoutingPolicy(fallback: .primary, causalWaitMs: 50)).shouldWait, "lag is not the floor")
    }

    @Test func fallbackErrorNamesWhyEachReplicaWasRefused() throws {
        let backends = [
            primary(), replica(1, health: .down, error: "connection refused"), replica(2, draining: true),
            replica(3, lagMs: 1500), replica(4, replay: LSN(1)),
        ]
        let decision = route(read, backends, session: SessionRouting(floor: LSN(2)), policy: RoutingPolicy(fallback: .error))
        let error = try #require(decision.error)
        #expect(decision.target == nil)
        #expect(error.kind == .noReplica)
        #expect(error.sqlState == "08006")
        #expect(error.message == "no replica can serve this read (fallback = error): pg1 down (connection refused), "
            + "pg2 draining, pg3 lagging 1500 ms (max 1000 ms), pg4 behind the session's floor (replayed 0/1 < 0/2)")
    }

    @Test func fallbackErrorWithoutReplicasSaysSo() {
        #expect(route(read, [primary()], policy: RoutingPolicy(fallback: .error)).error?.message
            == "no replica can serve this read (fallback = error): no replicas are configured")
    }

    @Test func refusalsCarryTheReasonForMetrics() {
        #expect(route(read, lagging, policy: RoutingPolicy(fallback: .error)).reason == .lag)
        #expect(route(write, [primary(0), primary(1)]).reason == .write)
        #expect(route(read, [primary()], session: SessionRouting(inTransaction: true, transactionBackend: 5)).reason == .transaction)
        #expect(route(write, [primary()], session: SessionRouting(hint: .replica)).reason == .hint)
    }

    @Test func writesIgnoreTheFallbackMode() {
        #expect(route(write, lagging, policy: RoutingPolicy(fallback: .error)).target == 0)
    }
}

@Suite struct PrimaryAvailabilityTests {
    @Test func twoPrimariesRefuseWrites() throws {
        let decision = route(write, [primary(0), primary(1), replica(2)])
        let error = try #require(decision.error)
        #expect(decision.target == nil)
        #expect(error.kind == .multiplePrimaries)
        #expect(error.message == "two backends report being primary (pg0, pg1); refusing writes until one is demoted")
    }

    @Test func twoPrimariesStillServeReadsFromReplicas() {
        #expect(route(read, [primary(0), primary(1), replica(2)]).target == 2)
        #expect(route(read, [primary(0), replica(2)], multiplePrimaries: true).target == 2)
    }

    @Test func theMonitorsTwoPrimariesFlagIsHonoured() {
        #expect(route(write, [primary(0), replica(1)], multiplePrimaries: true).error?.kind == .multiplePrimaries)
    }

    @Test func noPrimaryMeansWritesFailWith08006NamingTheBackends() throws {
        let decision = route(write, [replica(1), replica(2, health: .down, error: "timeout"),
                                     BackendStatus(index: 3, name: "pg3", role: .unknown)])
        let error = try #require(decision.error)
        #expect(error.sqlState == "08006")
        #expect(error.kind == .noPrimary)
        #expect(error.message == "no primary available: pg1 is a replica, pg2 is down (timeout), pg3 has not reported its role")
    }

    @Test func aDownPrimaryIsNamed() {
        let decision = route(write, [primary(health: .down, error: "connection refused"), replica(1)])
        #expect(decision.error?.message == "no primary available: primary pg0 is down (connection refused)")
    }

    @Test func aReadFallingBackToAMissingPrimaryExplainsBoth() throws {
        let decision = route(read, [primary(health: .down), replica(1, lagMs: 5000)])
        let error = try #require(decision.error)
        #expect(error.message == "no primary available: primary pg0 is down; and no replica can serve this read: "
            + "pg1 lagging 5000 ms (max 1000 ms)")
        #expect(decision.reason == .lag)
    }
}

@Suite struct HintRoutingTests {
    private let backends = [primary(), replica(1)]

    @Test func aPrimaryHintSendsAReadToThePrimary() {
        #expect(route(sql("/* causeway: primary */ SELECT 1"), backends) == RouteDecision(target: 0, isPrimary: true, reason: .hint))
        #expect(route(read, backends, session: SessionRouting(hint: .primary)).reason == .hint)
    }

    @Test func aReplicaHintOnAWriteIsRefusedWith25006() throws {
        let decision = route(sql("/* causeway: replica */ DELETE FROM t"), backends)
        let error = try #require(decision.error)
        #expect(error.sqlState == "25006")
        #expect(error.kind == .writeOnReplica)
        #expect(error.message.contains("/* causeway: replica */ hint"))
        let sessionForced = route(write, backends, session: SessionRouting(hint: .replica))
        #expect(sessionForced.error?.message.contains("SET causeway.route = replica") == true)
    }

    @Test func aQueryHintBeatsTheSessionHint() {
        let session = SessionRouting(hint: .replica)
        #expect(route(sql("/* causeway: primary */ DELETE FROM t"), backends, session: session).target == 0)
        #expect(route(sql("/* causeway: auto */ SELECT 1"), backends, session: SessionRouting(hint: .primary)).target == 1)
    }

    @Test func aReplicaHintBeatsStrongConsistencyAndTheLagBounds() {
        #expect(route(read, backends, session: SessionRouting(hint: .replica, consistency: .strong)).target == 1)
        let lagging = [primary(), replica(1, lagMs: 99_999)]
        #expect(route(read, lagging, session: SessionRouting(hint: .replica)) == RouteDecision(target: 1, isPrimary: false, reason: .hint))
    }

    @Test func aReplicaHintWithNoLiveReplicaIsAnError() {
        let decision = route(read, [primary(), replica(1, health: .down)], session: SessionRouting(hint: .replica))
        #expect(decision.error?.kind == .noReplica)
        #expect(decision.error?.message == "no replica is available for a query routed to replicas by SET causeway.route = replica: pg1 down")
    }

    @Test func aPinBeatsAReplicaHint() {
        let decision = route(read, backends, session: SessionRouting(pin: .temporaryTable, hint: .replica))
        #expect(decision == RouteDecision(target: 0, isPrimary: true, reason: .pinned))
    }
}

@Suite struct PinAndTransactionRoutingTests {
    private let backends = [primary(), replica(1), replica(2)]

    @Test func aPinnedSessionReadsFromThePrimary() {
        #expect(route(read, backends, session: SessionRouting(pin: .listen)) == RouteDecision(target: 0, isPrimary: true, reason: .pinned))
    }

    @Test func aQueryThatPinsRunsOnThePrimary() {
        #expect(route(sql("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), backends).reason == .pinned)
        #expect(route(sql("PREPARE q AS SELECT 1"), backends).reason == .pinned)
    }

    @Test func anOpenTransactionStaysOnItsBackend() {
        let onReplica = SessionRouting(inTransaction: true, transactionBackend: 2)
        #expect(route(read, backends, session: onReplica) == RouteDecision(target: 2, isPrimary: false, reason: .transaction))
        #expect(route(write, backends, session: onReplica).target == 2, "the server reports the read-only transaction itself")
        let onPrimary = SessionRouting(inTransaction: true, transactionBackend: 0)
        #expect(route(read, backends, session: onPrimary) == RouteDecision(target: 0, isPrimary: true, reason: .transaction))
    }

    @Test func anOpenTransactionStaysEvenOnADrainingBackend() {
        let draining = [primary(), replica(1, draining: true)]
        #expect(route(read, draining, session: SessionRouting(inTransaction: true, transactionBackend: 1)).target == 1)
    }

    @Test func aTransactionWhoseBackendVanishedFails() {
        let decision = route(read, backends, session: SessionRouting(inTransaction: true, transactionBackend: 9))
        #expect(decision.error?.kind == .transactionBackendGone)
        #expect(decision.error?.sqlState == "08006")
    }

    @Test func beginGoesToThePrimaryUnlessReadOnly() {
        #expect(route(sql("BEGIN"), backends) == RouteDecision(target: 0, isPrimary: true, reason: .transaction))
        #expect(route(sql("BEGIN; SELECT 1"), backends).reason == .transaction)
        #expect(route(sql("BEGIN READ ONLY"), backends).isPrimary == false)
        #expect(route(sql("BEGIN; SET TRANSACTION READ ONLY"), backends).isPrimary == false)
        #expect(route(sql("START TRANSACTION READ WRITE"), backends).reason == .write)
    }

    @Test func defaultTransactionReadOnlyMakesBeginReadOnly() {
        let session = SessionRouting(defaultTransactionReadOnly: true)
        #expect(route(sql("BEGIN"), backends, session: session).isPrimary == false)
        #expect(route(sql("BEGIN READ WRITE"), backends, session: session).isPrimary)
    }

    @Test func aWholeReadOnlyTransactionInOneQueryCanUseAReplica() {
        #expect(route(sql("BEGIN; SELECT 1; SELECT 2; COMMIT"), backends).reason == .read)
        #expect(route(sql("BEGIN; SELECT 1; UPDATE t SET a = 1; COMMIT"), backends).reason == .write)
    }

    @Test func aTransactionWithoutAKnownBackendStartsOnThePrimary() {
        #expect(route(read, backends, session: SessionRouting(inTransaction: true)).target == 0)
    }
}
