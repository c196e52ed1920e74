import BenchCore
import XCTest

final class VerifierTests: XCTestCase {
    func testReadYourWrites() {
        var v = ClientVerifier(client: 1)
        let own = KeyRef(owner: 1, key: 3)
        XCTAssertEqual(v.read(own, value: nil, expected: v.expectation(for: own)), .ok, "nothing written yet: no row is fine")
        v.committed(key: 3, value: 5)
        XCTAssertEqual(v.expectation(for: own), 5)
        XCTAssertEqual(v.read(own, value: 5, expected: 5), .ok)
        XCTAssertEqual(v.read(own, value: 7, expected: 5), .ok, "a newer value (an unknown-outcome write) is not stale")
        let stale = v.read(own, value: 4, expected: 5)
        XCTAssertTrue(stale.isStale)
        XCTAssertEqual(stale.staleExpected, 5)
        XCTAssertTrue(stale.isRegression, "7 was read before")
        XCTAssertEqual(v.stale, 1)
        XCTAssertEqual(v.regressions, 1)
        XCTAssertEqual(v.reads, 4)
    }

    func testMissingRowAfterAWriteIsStale() {
        var v = ClientVerifier(client: 2)
        v.committed(key: 0, value: 1)
        let ref = KeyRef(owner: 2, key: 0)
        XCTAssertTrue(v.read(ref, value: nil, expected: v.expectation(for: ref)).isStale)
    }

    func testExpectationIsTakenWhenTheReadIsSent() {
        var v = ClientVerifier(client: 1)
        let ref = KeyRef(owner: 1, key: 0)
        v.committed(key: 0, value: 1)
        let expected = v.expectation(for: ref)
        v.committed(key: 0, value: 2)   // commits while the read is in flight
        XCTAssertEqual(v.read(ref, value: 1, expected: expected), .ok)
    }

    func testOtherClientsKeysOnlyCheckMonotonicReads() {
        var v = ClientVerifier(client: 1)
        let theirs = KeyRef(owner: 9, key: 1)
        XCTAssertEqual(v.expectation(for: theirs), 0)
        XCTAssertEqual(v.read(theirs, value: 10, expected: 0), .ok)
        XCTAssertEqual(v.read(theirs, value: 12, expected: 0), .ok)
        let back = v.read(theirs, value: 11, expected: 0)
        XCTAssertFalse(back.isStale)
        XCTAssertEqual(back.regressionFrom, 12)
        XCTAssertEqual(v.read(theirs, value: 12, expected: 0), .ok, "the high-water mark stays 12")
        XCTAssertEqual(v.stale, 0)
        XCTAssertEqual(v.regressions, 1)
    }
}

final class BenchSQLTests: XCTestCase {
    let sql = BenchSQL(table: "t")

    func testProtocols() {
        XCTAssertEqual(sql.read(owner: 3, key: 4, protocol: .simple, transactions: .autocommit, pipeline: false),
                       [.simple("SELECT (SELECT v FROM t WHERE client = 3 AND k = 4), inet_server_port(), pg_is_in_recovery()")])
        XCTAssertEqual(sql.write(client: 1, key: 2, value: 12, protocol: .extended, transactions: .autocommit, pipeline: false),
                       [.params("INSERT INTO t (client, k, v) VALUES ($1, $2, $3) ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v", ["1", "2", "12"])])
        guard case .prepared(let name, _, let values) = sql.read(owner: 1, key: 2, protocol: .prepared, transactions: .autocommit, pipeline: false)[0] else {
            return XCTFail("prepared")
        }
        XCTAssertEqual(name, "cwb_read")
        XCTAssertEqual(values, ["1", "2"])
    }

    func testExplicitTransactions() {
        let read = sql.read(owner: 1, key: 1, protocol: .extended, transactions: .explicit, pipeline: true)
        XCTAssertEqual(read.first, .params("BEGIN READ ONLY", []), "read-only transactions may go to a replica")
        XCTAssertEqual(read.last, .params("COMMIT", []))
        XCTAssertEqual(read.count, 3)
        let batched = sql.write(client: 1, key: 1, value: 1, protocol: .simple, transactions: .explicit, pipeline: true)
        XCTAssertEqual(batched.count, 1, "the simple protocol batches as one multi-statement query")
        guard case .simple(let text) = batched[0] else { return XCTFail() }
        XCTAssertTrue(text.hasPrefix("BEGIN; INSERT INTO t") && text.hasSuffix("; COMMIT"), text)
        XCTAssertEqual(sql.write(client: 1, key: 1, value: 1, protocol: .simple, transactions: .explicit, pipeline: false).count, 3)
    }
}
