import Router
import Testing

@Suite struct ClassificationCacheTests {
    @Test func aTextIsStoredOnItsSecondMissAndHitAfterwards() {
        let cache = ClassificationCache(capacity: 4)
        _ = cache.classify("SELECT 1", volatileFunctions: [])
        #expect(cache.count == 0, "a text seen once is not stored")
        _ = cache.classify("SELECT 1", volatileFunctions: [])
        _ = cache.classify("SELECT 1", volatileFunctions: [])
        _ = cache.classify("SELECT 2", volatileFunctions: [])
        #expect(cache.hits == 1)
        #expect(cache.misses == 3)
        #expect(cache.count == 1)
    }

    @Test func uniqueTextsNeverChurnTheCache() {
        let cache = ClassificationCache(capacity: 8)
        for number in 0..<1000 { _ = cache.classify("SELECT * FROM t WHERE id = \(number)", volatileFunctions: []) }
        #expect(cache.count == 0)
        #expect(cache.misses == 1000)
    }

    @Test func theVolatileListIsAppliedOnEveryLookup() {
        let cache = ClassificationCache(capacity: 4)
        _ = cache.classify("SELECT audit()", volatileFunctions: [])
        #expect(!cache.classify("SELECT audit()", volatileFunctions: []).isWrite)
        #expect(cache.classify("SELECT audit()", volatileFunctions: ["audit"]).isWrite)
        #expect(!cache.classify("SELECT audit()", volatileFunctions: ["other"]).isWrite)
        #expect(cache.hits == 2, "a new list needs no new entry")
    }

    @Test func theCacheNeverGrowsPastItsCapacity() {
        let cache = ClassificationCache(capacity: 16)
        for number in 0..<100 {
            _ = cache.classify("SELECT \(number)", volatileFunctions: [])
            _ = cache.classify("SELECT \(number)", volatileFunctions: [])
        }
        #expect(cache.count == 16)
        #expect(cache.misses == 200)
    }

    @Test func recentlyUsedEntriesSurviveEviction() {
        let cache = ClassificationCache(capacity: 2)
        for text in ["SELECT 'a'", "SELECT 'b'"] {
            _ = cache.classify(text, volatileFunctions: [])
            _ = cache.classify(text, volatileFunctions: [])  // admitted on the second miss
        }
        _ = cache.classify("SELECT 'a'", volatileFunctions: [])  // a is referenced again
        _ = cache.classify("SELECT 'c'", volatileFunctions: [])
        _ = cache.classify("SELECT 'c'", volatileFunctions: [])  // admitted: evicts b, not a
        let hitsBefore = cache.hits
        _ = cache.classify("SELECT 'a'", volatileFunctions: [])
        #expect(cache.hits == hitsBefore + 1)
        _ = cache.classify("SELECT 'b'", volatileFunctions: [])
        #expect(cache.hits == hitsBefore + 1, "b was evicted")
    }

    @Test func longTextsAreClassifiedButNotStored() {
        let cache = ClassificationCache(capacity: 4, maxQueryLength: 32)
        let long = "SELECT " + String(repeating: "1 + ", count: 20) + "1; DELETE FROM t"
        #expect(cache.classify(long, volatileFunctions: []).isWrite)
        #expect(cache.count == 0)
    }

    @Test func aZeroCapacityCacheStillClassifies() {
        let cache = ClassificationCache(capacity: 0)
        #expect(cache.classify("INSERT INTO t VALUES (1)", volatileFunctions: []).isWrite)
        #expect(cache.count == 0)
    }

    @Test func removeAllEmptiesTheCache() {
        let cache = ClassificationCache(capacity: 4)
        _ = cache.classify("SELECT 1", volatileFunctions: [])
        cache.removeAll()
        #expect(cache.count == 0)
        _ = cache.classify("SELECT 1", volatileFunctions: [])
        #expect(cache.misses == 2)
    }
}

@Suite struct LSNTests {
    @Test(arguments: [
        ("0/0", UInt64(0)), ("16/B374D848", 0x16_B374_D848), ("16/b374d848", 0x16_B374_D848),
        ("FFFFFFFF/FFFFFFFF", UInt64.max), ("0/1", 1), ("1/0", 1 << 32),
    ])
    func parsesPostgresText(_ text: String, _ value: UInt64) {
        #expect(LSN(parsing: text) == LSN(value))
    }

    @Test(arguments: ["", "1", "/1", "1/", "G/1", "123456789/1", "1/123456789", " 1/1", "1/1 ", "1//1", "1/2/3", "-1/1"])
    func rejectsAnythingElse(_ text: String) {
        #expect(LSN(parsing: text) == nil)
    }

    @Test func printsLikePostgres() {
        #expect(LSN(0x16_B374_D848).description == "16/B374D848")
        #expect(LSN(0).description == "0/0")
        #expect(LSN(parsing: LSN(0xABC_0000_0001).description) == LSN(0xABC_0000_0001))
    }

    @Test func ordersByPosition() {
        #expect(LSN(parsing: "0/FFFFFFFF")! < LSN(parsing: "1/0")!)
    }
}

@Suite struct TopologyTests {
    private func node(_ index: Int, _ role: BackendRoleObserved, _ health: BackendHealth = .up) -> BackendStatus {
        BackendStatus(index: index, name: "pg\(index)", role: role, health: health)
    }

    @Test func theSingleLivePrimaryIsThePrimary() {
        let topology = Topology(backends: [node(0, .replica), node(1, .primary), node(2, .replica)])
        #expect(topology.primary?.index == 1)
        #expect(!topology.hasMultiplePrimaries)
    }

    @Test func aDownFormerPrimaryGivesWayToTheLiveOne() {
        let topology = Topology(backends: [node(0, .primary, .down), node(1, .primary)])
        #expect(topology.primary?.index == 1)
        #expect(!topology.hasMultiplePrimaries)
    }

    @Test func aDownPrimaryIsStillReportedWhenItIsTheOnlyOne() {
        #expect(Topology(backends: [node(0, .primary, .down), node(1, .replica)]).primary?.index == 0)
    }

    @Test func twoLivePrimariesAreAmbiguous() {
        let topology = Topology(backends: [node(0, .primary), node(1, .primary)])
        #expect(topology.primary == nil)
        #expect(topology.hasMultiplePrimaries)
        #expect(Topology(backends: [node(0, .primary)], multiplePrimaries: true).hasMultiplePrimaries)
    }

    @Test func backendsAreFoundByTheirIndex() {
        let topology = Topology(backends: [node(3, .primary), node(7, .replica)])
        #expect(topology.backend(at: 7)?.name == "pg7")
        #expect(topology.backend(at: 0) == nil)
    }
}
