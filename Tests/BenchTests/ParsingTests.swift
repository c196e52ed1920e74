import BenchCore
import XCTest

final class DurationAndThinkTimeTests: XCTestCase {
    func testDurations() {
        XCTAssertEqual(Durations.milliseconds("500ms"), 500)
        XCTAssertEqual(Durations.milliseconds("2s"), 2000)
        XCTAssertEqual(Durations.milliseconds("1.5s"), 1500)
        XCTAssertEqual(Durations.milliseconds("1m"), 60_000)
        XCTAssertEqual(Durations.milliseconds(" 3 "), 3000, "a bare number is seconds")
        XCTAssertNil(Durations.milliseconds("-1s"))
        XCTAssertNil(Durations.milliseconds("soon"))
        XCTAssertNil(Durations.milliseconds(""))
    }

    func testThinkTimes() {
        XCTAssertEqual(ThinkTime(parsing: "20"), ThinkTime(minMs: 20, maxMs: 20), "a bare think time is milliseconds")
        XCTAssertEqual(ThinkTime(parsing: "10-50ms"), ThinkTime(minMs: 10, maxMs: 50))
        XCTAssertEqual(ThinkTime(parsing: "1-2s"), ThinkTime(minMs: 1000, maxMs: 2000))
        XCTAssertEqual(ThinkTime(parsing: "0.5s"), ThinkTime(minMs: 500, maxMs: 500))
        XCTAssertNil(ThinkTime(parsing: "50-10ms"))
        var random = SplitMix64(seed: 7)
        let range = ThinkTime(minMs: 10, maxMs: 12)
        let draws = (0..<200).map { _ in range.draw(&random) }
        XCTAssertEqual(Set(draws), [10, 11, 12])
    }
}

final class WorkloadTests: XCTestCase {
    func testSettingsAcceptDashesAndValidate() throws {
        var w = Workload()
        try w.set("read-percent", "95")
        try w.set("reads_after_write", "2")
        try w.set("protocol", "prepared")
        try w.set("transactions", "explicit")
        try w.set("duration", "2s")
        try w.set("pipeline", "true")
        XCTAssertEqual(w.readPercent, 95)
        XCTAssertEqual(w.readsAfterWrite, 2)
        XCTAssertEqual(w.queryProtocol, .prepared)
        XCTAssertEqual(w.transactions, .explicit)
        XCTAssertEqual(w.durationMs, 2000)
        XCTAssertTrue(w.pipeline)
    }

    func testBadValuesSayWhatIsExpected() {
        var w = Workload()
        XCTAssertThrowsError(try w.set("read_percent", "120")) { XCTAssertTrue("\($0)".contains("0...100"), "\($0)") }
        XCTAssertThrowsError(try w.set("protocol", "binary")) { XCTAssertTrue("\($0)".contains("simple, extended, prepared, mixed"), "\($0)") }
        XCTAssertThrowsError(try w.set("table", "x; drop table y")) { XCTAssertTrue("\($0)".contains("identifier"), "\($0)") }
        XCTAssertThrowsError(try w.set("colour", "red")) { XCTAssertTrue("\($0)".contains("unknown"), "\($0)") }
        w.clients = 2
        w.threads = 4
        XCTAssertThrowsError(try w.validate())
    }

    func testMixedProtocolRotatesOverClients() {
        XCTAssertEqual((1...4).map { QueryProtocol.mixed.resolved(forClient: $0) }, [.simple, .extended, .prepared, .simple])
        XCTAssertEqual(QueryProtocol.extended.resolved(forClient: 3), .extended)
    }
}

final class WorkloadFileTests: XCTestCase {
    func testReadsTheSubset() throws {
        let file = try WorkloadFile(parsing: """
            # a write-heavy session workload
            [workload]
            clients = 32          # sessions
            duration = "30s"
            read_percent = 50
            read-delay = "5-20ms"
            protocol = "mixed"
            pipeline = true
            rate = 1_000
            lag_schedule = "replica1@2s-5s"   # pause one replica
            """)
        XCTAssertEqual(file.lagSchedule, "replica1@2s-5s")
        var w = Workload()
        try file.apply(to: &w)
        XCTAssertEqual(w.clients, 32)
        XCTAssertEqual(w.durationMs, 30_000)
        XCTAssertEqual(w.readPercent, 50)
        XCTAssertEqual(w.readDelay, ThinkTime(minMs: 5, maxMs: 20))
        XCTAssertEqual(w.queryProtocol, .mixed)
        XCTAssertTrue(w.pipeline)
        XCTAssertEqual(w.rate, 1000)
    }

    func testRejectsWhatItDoesNotKnow() {
        XCTAssertThrowsError(try WorkloadFile(parsing: "clients = 1\nclients = 2")) { XCTAssertTrue("\($0)".contains("twice"), "\($0)") }
        XCTAssertThrowsError(try WorkloadFile(parsing: "[server]\nport = 1")) { XCTAssertTrue("\($0)".contains("line 1"), "\($0)") }
        XCTAssertThrowsError(try WorkloadFile(parsing: "speed = 3")) { XCTAssertTrue("\($0)".contains("unknown setting"), "\($0)") }
        XCTAssertThrowsError(try WorkloadFile(parsing: "table = \"open")) { XCTAssertTrue("\($0)".contains("unterminated"), "\($0)") }
        XCTAssertThrowsError(try WorkloadFile(parsing: "clients = many")) { XCTAssertTrue("\($0)".contains("line 1"), "\($0)") }
    }

    func testHashInsideAStringIsNotAComment() throws {
        let file = try WorkloadFile(parsing: "lag_schedule = \"a#b@1s-2s\" # comment")
        XCTAssertEqual(file.lagSchedule, "a#b@1s-2s")
    }
}

final class LagScheduleTests: XCTestCase {
    func testBothForms() throws {
        let schedule = try LagSchedule(parsing: "replica1@2s-5s, replica2@6s+2s,replica1@500ms+1.5s")
        XCTAssertEqual(schedule.windows, [
            LagWindow(replica: "replica1", startMs: 2000, endMs: 5000),
            LagWindow(replica: "replica2", startMs: 6000, endMs: 8000),
            LagWindow(replica: "replica1", startMs: 500, endMs: 2000),
        ])
        XCTAssertEqual(schedule.replicas, ["replica1", "replica2"])
        XCTAssertEqual(schedule.endMs, 8000)
        let actions = schedule.actions.map { "\($0.atMs) \($0.replica) \($0.kind.rawValue)" }
        // At 2 s replica1 resumes from its first window before it is paused for the second.
        XCTAssertEqual(actions, ["500 replica1 pause", "2000 replica1 resume", "2000 replica1 pause",
                                 "5000 replica1 resume", "6000 replica2 pause", "8000 replica2 resume"])
    }

    func testErrors() {
        XCTAssertThrowsError(try LagSchedule(parsing: "replica1"))
        XCTAssertThrowsError(try LagSchedule(parsing: "@1s-2s"))
        XCTAssertThrowsError(try LagSchedule(parsing: "r1@5s-2s")) { XCTAssertTrue("\($0)".contains("after the start"), "\($0)") }
        XCTAssertThrowsError(try LagSchedule(parsing: "r1@1s-4s,r1@3s+2s")) { XCTAssertTrue("\($0)".contains("overlap"), "\($0)") }
        XCTAssertThrowsError(try LagSchedule(parsing: "r1@1s+0s"))
        XCTAssertThrowsError(try LagSchedule(parsing: ""))
    }
}
