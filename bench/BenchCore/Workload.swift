// What a run does, independent of where it connects. Flags and the workload file both go
// through `set(_:_:)`, so they accept the same spellings and fail with the same messages.

public enum QueryProtocol: String, Codable, CaseIterable, Sendable {
    /// PQsendQuery with literals in the text.
    case simple
    /// PQsendQueryParams: unnamed statement, parameters bound.
    case extended
    /// PQsendPrepare once per connection, then PQsendQueryPrepared.
    case prepared
    /// Clients take simple, extended and prepared in turn (client 1 simple, 2 extended, …).
    case mixed

    /// The protocol client number `client` (1-based) uses.
    public func resolved(forClient client: Int) -> QueryProtocol {
        guard self == .mixed else { return self }
        return [.simple, .extended, .prepared][(client - 1) % 3]
    }
}

public enum TransactionMode: String, Codable, CaseIterable, Sendable {
    /// Each statement commits by itself.
    case autocommit
    /// Writes run as BEGIN; upsert; COMMIT and reads as BEGIN READ ONLY; select; COMMIT.
    case explicit
}

public struct WorkloadError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public struct Workload: Codable, Sendable, Equatable {
    public var clients = 8
    public var threads = 1
    /// The run ends after this long, or when every client has done `count` operations,
    /// whichever comes first. Without a count the duration always applies.
    public var durationMs = 10_000
    public var count: Int?
    /// Operations per second over all clients; nil: as fast as the clients go.
    public var rate: Double?
    /// Share of the operations a client chooses (not counting follow-up reads) that are reads.
    public var readPercent = 80
    /// Reads of the key just written that follow each successful write (write-then-read).
    public var readsAfterWrite = 1
    /// Pause between a write and each of its follow-up reads.
    public var readDelay = ThinkTime.none
    /// Pause between one operation and the next chosen one.
    public var think = ThinkTime.none
    /// Keys each client owns and writes.
    public var keys = 16
    /// Share of chosen reads that read another client's key (only monotonic reads apply there).
    public var crossReadPercent = 0
    public var queryProtocol = QueryProtocol.extended
    public var transactions = TransactionMode.autocommit
    /// Send a transaction's statements in one batch (libpq pipeline mode; one multi-statement
    /// query with the simple protocol).
    public var pipeline = false
    public var table = "causeway_bench"
    public var sampleIntervalMs = 200
    public var bucketMs = 250
    public var seed: UInt64 = 1

    public init() {}

    /// The names accepted by `set`, in the order the help and the report list them.
    public static let keys: [String] = [
        "clients", "threads", "duration", "count", "rate", "read_percent", "reads_after_write",
        "read_delay", "think", "keys", "cross_read_percent", "protocol", "transactions", "pipeline",
        "table", "sample_interval", "bucket", "seed",
    ]

    /// Sets one setting from its text form. Keys may use `-` or `_`.
    public mutating func set(_ rawKey: String, _ rawValue: String) throws {
        let key = rawKey.replacingDashes()
        let value = rawValue.trimmingWhitespace()
        func integer(_ range: ClosedRange<Int>) throws -> Int {
            guard let n = Int(value), range.contains(n) else {
                throw WorkloadError("\(key) must be a whole number in \(range.lowerBound)...\(range.upperBound) (got \"\(value)\")")
            }
            return n
        }
        func duration(minimumMs: Int) throws -> Int {
            guard let ms = Durations.milliseconds(value), ms >= minimumMs else {
                throw WorkloadError("\(key) must be a duration of at least \(Durations.describe(milliseconds: minimumMs)) such as 500ms, 2s or 1m (got \"\(value)\")")
            }
            return ms
        }
        func thinkTime() throws -> ThinkTime {
            guard let think = ThinkTime(parsing: value) else {
                throw WorkloadError("\(key) must be a time such as 20ms or a range such as 10-50ms (got \"\(value)\")")
            }
            return think
        }
        switch key {
        case "clients": clients = try integer(1...10_000)
        case "threads": threads = try integer(1...64)
        case "duration": durationMs = try duration(minimumMs: 100)
        case "count": count = try integer(1...1_000_000_000)
        case "rate":
            guard let r = Double(value), r > 0, r.isFinite else { throw WorkloadError("rate must be a positive number of operations per second (got \"\(value)\")") }
            rate = r
        case "read_percent": readPercent = try integer(0...100)
        case "reads_after_write": readsAfterWrite = try integer(0...1000)
        case "read_delay": readDelay = try thinkTime()
        case "think": think = try thinkTime()
        case "keys": keys = try integer(1...1_000_000)
        case "cross_read_percent": crossReadPercent = try integer(0...100)
        case "protocol":
            guard let p = QueryProtocol(rawValue: value) else {
                throw WorkloadError("protocol must be one of \(QueryProtocol.allCases.map(\.rawValue).joined(separator: ", ")) (got \"\(value)\")")
            }
            queryProtocol = p
        case "transactions":
            guard let t = TransactionMode(rawValue: value) else {
                throw WorkloadError("transactions must be autocommit or explicit (got \"\(value)\")")
            }
            transactions = t
        case "pipeline":
            switch value {
            case "true", "on", "yes", "1": pipeline = true
            case "false", "off", "no", "0": pipeline = false
            default: throw WorkloadError("pipeline must be true or false (got \"\(value)\")")
            }
        case "table":
            guard Self.isPlainIdentifier(value) else {
                throw WorkloadError("table must be a plain SQL identifier (letters, digits, _; got \"\(value)\")")
            }
            table = value
        case "sample_interval": sampleIntervalMs = try duration(minimumMs: 20)
        case "bucket": bucketMs = try duration(minimumMs: 50)
        case "seed":
            guard let s = UInt64(value) else { throw WorkloadError("seed must be a whole number (got \"\(value)\")") }
            seed = s
        default:
            throw WorkloadError("unknown workload setting \"\(rawKey)\"; known: \(Self.keys.joined(separator: ", "))")
        }
    }

    /// Checks what no single setting can: combinations.
    public func validate() throws {
        if clients < threads {
            throw WorkloadError("threads (\(threads)) must not exceed clients (\(clients))")
        }
        if crossReadPercent > 0 && clients == 1 {
            throw WorkloadError("cross_read_percent needs at least 2 clients (it reads other clients' keys)")
        }
    }

    static func isPlainIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || ("a"..."z").contains(first) else { return false }
        return text.count <= 63 && text.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }
}

extension String {
    func replacingDashes() -> String {
        String(map { $0 == "-" ? "_" : $0 })
    }
}
