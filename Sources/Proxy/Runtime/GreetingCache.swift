import Synchronization

/// The ParameterStatus set PostgreSQL's primary sent at login, by the exact startup parameters
/// that produced it (user, database, application_name, client_encoding … as the client sent
/// them). A later login with the same parameters is greeted from here, without a server
/// connection: links open only when a unit needs one, so idle clients hold no server
/// connection and read-only clients can log in while the primary is down.
///
/// Values a role or database setting changes later (ALTER ROLE … SET) are refreshed by every
/// primary login with those parameters; a session also sends ParameterStatus when a server it
/// starts using reports a different value.
final class GreetingCache: Sendable {
    /// Distinct parameter sets kept; beyond it the cache starts over (each set costs one login).
    static let capacity = 1024

    private let entries = Mutex<[[String]: [(String, String)]]>([:])

    static func key(_ parameters: [(String, String)]) -> [String] {
        parameters.flatMap { [$0.0, $0.1] }
    }

    func parameters(for key: [String]) -> [(String, String)]? {
        entries.withLock { $0[key] }
    }

    func store(_ parameters: [(String, String)], for key: [String]) {
        entries.withLock { entries in
            if entries.count >= Self.capacity && entries[key] == nil { entries.removeAll() }
            entries[key] = parameters
        }
    }
}
