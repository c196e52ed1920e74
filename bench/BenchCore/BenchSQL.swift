// The statements a client sends, per protocol and transaction mode. Kept apart from the I/O so a
// test can read exactly what goes on the wire.

public enum SQLStep: Equatable, Sendable {
    case simple(String)
    case params(String, [String])
    case prepared(name: String, sql: String, [String])
}

public struct BenchSQL: Sendable {
    public let table: String

    public init(table: String) { self.table = table }

    public var setup: String {
        "DROP TABLE IF EXISTS \(table); CREATE TABLE \(table) (client int NOT NULL, k int NOT NULL, v bigint NOT NULL, PRIMARY KEY (client, k))"
    }

    var writeSQL: String {
        "INSERT INTO \(table) (client, k, v) VALUES ($1, $2, $3) ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v"
    }

    /// Always one row, even when the key has no row yet, so every read says who answered:
    /// (v or NULL, inet_server_port(), pg_is_in_recovery()).
    var readSQL: String {
        "SELECT (SELECT v FROM \(table) WHERE client = $1 AND k = $2), inet_server_port(), pg_is_in_recovery()"
    }

    public func write(client: Int, key: Int, value: Int64, protocol p: QueryProtocol, transactions: TransactionMode, pipeline: Bool) -> [SQLStep] {
        statement(writeSQL, name: "cwb_write", [String(client), String(key), String(value)], p, transactions, begin: "BEGIN", pipeline: pipeline)
    }

    public func read(owner: Int, key: Int, protocol p: QueryProtocol, transactions: TransactionMode, pipeline: Bool) -> [SQLStep] {
        statement(readSQL, name: "cwb_read", [String(owner), String(key)], p, transactions, begin: "BEGIN READ ONLY", pipeline: pipeline)
    }

    private func statement(_ sql: String, name: String, _ values: [String], _ p: QueryProtocol,
                           _ transactions: TransactionMode, begin: String, pipeline: Bool) -> [SQLStep] {
        let main: SQLStep
        switch p {
        case .simple, .mixed: main = .simple(Self.inline(sql, values))
        case .extended: main = .params(sql, values)
        case .prepared: main = .prepared(name: name, sql: sql, values)
        }
        guard transactions == .explicit else { return [main] }
        if case .simple(let text) = main {
            // The simple protocol cannot use libpq's pipeline; one multi-statement query is its batch.
            return pipeline ? [.simple("\(begin); \(text); COMMIT")] : [.simple(begin), main, .simple("COMMIT")]
        }
        return [.params(begin, []), main, .params("COMMIT", [])]
    }

    /// Replaces $n by the values; only ever used with the integers this file generates.
    static func inline(_ sql: String, _ values: [String]) -> String {
        var out = sql
        for (i, value) in values.enumerated().reversed() { out = out.replacing("$\(i + 1)", with: value) }
        return out
    }
}
