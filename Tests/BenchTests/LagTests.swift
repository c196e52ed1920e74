import BenchCore
import XCTest

final class LagTests: XCTestCase {
    func testLSN() {
        XCTAssertEqual(LSN.parse("0/3000060"), 0x300_0060)
        XCTAssertEqual(LSN.parse("16/B374D848"), 0x16_B374_D848)
        XCTAssertNil(LSN.parse("16B374D848"))
        XCTAssertNil(LSN.parse("x/1"))
    }

    func testEstimatorUsesOnlyItsOwnClock() {
        var e = LagEstimator()
        e.primary(at: 0, lsn: 100)
        e.primary(at: 100, lsn: 200)
        e.primary(at: 150, lsn: 200)   // idle primary: the position did not move
        e.primary(at: 300, lsn: 400)
        XCTAssertEqual(e.lagMs(at: 350, replay: 400), 0, "caught up")
        XCTAssertEqual(e.lagMs(at: 350, replay: 200), 50, "behind since the primary passed 200 at 300")
        XCTAssertEqual(e.lagMs(at: 350, replay: 150), 250)
        XCTAssertEqual(e.lagBytes(replay: 150), 250)
        XCTAssertEqual(e.lagBytes(replay: 500), 0)
    }

    func testAdminBackendsByColumnName() {
        let columns = ["name", "address", "zone", "role", "state", "lag_ms", "lag_bytes", "replay_lsn", "reads", "new_column"]
        let row: [String?] = ["replica1", "127.0.0.1:5433", "dc1", "replica", "up", "12", "4096", "0/1", "7", "x"]
        let b = AdminBackend(columns: columns, row: row)
        XCTAssertEqual(b?.name, "replica1")
        XCTAssertEqual(b?.host, "127.0.0.1")
        XCTAssertEqual(b?.port, 5433)
        XCTAssertEqual(b?.point, LagPoint(name: "replica1", role: "replica", state: "up", lagMs: 12, lagBytes: 4096, reads: 7))
        XCTAssertNil(AdminBackend(columns: ["name"], row: ["x"]), "no address: not a backend row")
        let primary = AdminBackend(columns: ["name", "address", "role", "lag_ms"], row: ["primary", "[::1]:5432", "primary", nil])
        XCTAssertEqual(primary?.host, "[::1]")
        XCTAssertEqual(primary?.point.lagMs, 0, "the primary has no lag")
    }
}
