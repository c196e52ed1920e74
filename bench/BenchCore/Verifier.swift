// Read-your-writes and monotonic reads, checked per client from values alone. Each client owns
// its keys and writes strictly increasing values, so:
//   - a read of an own key returning less than the client's last committed write is stale (the
//     client's own write is not visible: read-your-writes broken);
//   - a read of any key returning less than a value this client already read there went back in
//     time (monotonic reads broken).
// A missing row reads as 0. Writes whose outcome is unknown (an error at COMMIT, a lost
// connection) are not counted as committed, so they can never make a read look stale.

public struct KeyRef: Hashable, Sendable, Codable {
    public var owner: Int
    public var key: Int
    public init(owner: Int, key: Int) {
        self.owner = owner
        self.key = key
    }
}

public struct ReadVerdict: Equatable, Sendable {
    /// The client's last committed value for this key when the read was sent, if it is stale.
    public var staleExpected: Int64?
    /// The highest value this client had read for this key, if the read went below it.
    public var regressionFrom: Int64?

    public static let ok = ReadVerdict()
    public var isStale: Bool { staleExpected != nil }
    public var isRegression: Bool { regressionFrom != nil }
    public var isOK: Bool { !isStale && !isRegression }

    public init(staleExpected: Int64? = nil, regressionFrom: Int64? = nil) {
        self.staleExpected = staleExpected
        self.regressionFrom = regressionFrom
    }
}

public struct ClientVerifier: Sendable {
    public let client: Int
    private var committed: [Int: Int64] = [:]
    private var highestRead: [KeyRef: Int64] = [:]
    public private(set) var reads = 0
    public private(set) var writes = 0
    public private(set) var stale = 0
    public private(set) var regressions = 0

    public init(client: Int) { self.client = client }

    /// Keys this client has a committed write for (reads of own keys pick from these).
    public var writtenKeys: Dictionary<Int, Int64>.Keys { committed.keys }

    public func lastCommitted(_ key: Int) -> Int64? { committed[key] }

    /// A write of `value` to own key `key` committed.
    public mutating func committed(key: Int, value: Int64) {
        writes += 1
        committed[key] = max(committed[key] ?? 0, value)
    }

    /// What the client must see for an own key, captured when the read is SENT: a write that
    /// commits while a read is in flight is not one the read had to see.
    public func expectation(for ref: KeyRef) -> Int64 {
        ref.owner == client ? (committed[ref.key] ?? 0) : 0
    }

    /// Checks a read of `ref` that returned `value` (nil: no row), sent when `expected` held.
    public mutating func read(_ ref: KeyRef, value: Int64?, expected: Int64) -> ReadVerdict {
        reads += 1
        let got = value ?? 0
        var verdict = ReadVerdict()
        if ref.owner == client && got < expected {
            verdict.staleExpected = expected
            stale += 1
        }
        let previous = highestRead[ref] ?? 0
        if got < previous {
            verdict.regressionFrom = previous
            regressions += 1
        } else {
            highestRead[ref] = got
        }
        return verdict
    }
}
