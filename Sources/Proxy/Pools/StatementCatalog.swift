/// The ids behind the names the proxy gives prepared statements on servers
/// (`ServerSessionState.statementName`). One per worker, as its pooled connections are: a
/// statement text with its parameter types has one id, so every client that prepares the same
/// statement shares one server-side statement per connection instead of preparing its own.
///
/// Ids are never reused. When the table grows past `limit` (clients making up statement texts),
/// it starts over: statements already prepared keep their ids, which stay valid names on the
/// servers that have them; a later prepare of the same text simply gets a new id.
final class StatementCatalog {
    private struct Key: Hashable {
        var query: String
        var parameterTypes: [UInt32]
    }

    static let limit = 20_000
    private var ids: [Key: UInt64] = [:]
    private var next: UInt64 = 1

    /// The id of a named statement's text and parameter types.
    func id(query: String, parameterTypes: [UInt32]) -> UInt64 {
        let key = Key(query: query, parameterTypes: parameterTypes)
        if let known = ids[key] { return known }
        if ids.count >= Self.limit { ids.removeAll(keepingCapacity: true) }
        let id = fresh()
        ids[key] = id
        return id
    }

    /// An id of its own (an unnamed statement: never shared, only told apart).
    func fresh() -> UInt64 {
        defer { next += 1 }
        return next
    }
}
