import Router

/// What one server connection holds of its clients' state: the prepared statements the proxy
/// created on it (under proxy-chosen names, so clients that share the connection never clash),
/// which statement its unnamed slot holds, and the settings applied on top of its startup
/// parameters. It travels with the connection: a pooled connection lent to another client brings
/// what it holds, and that client's session prepares only what is missing and SETs or RESETs only
/// what differs.
struct ServerSessionState {
    /// The proxy's statement ids prepared here, with the tick of their last use: beyond the cap,
    /// the least recently used are closed.
    var statements: [UInt64: UInt64] = [:]
    private(set) var tick: UInt64 = 0
    /// The statement id whose text the server's unnamed statement holds, if known.
    var unnamed: UInt64?
    /// Statements that may or may not exist here (a DISCARD ALL or DEALLOCATE ALL was sent and
    /// may have failed): prepared again with a Close first, which succeeds either way.
    private(set) var uncertain: Set<UInt64> = []
    /// Settings applied on top of the startup parameters, as `TrackedSettings` keeps them.
    var settings: [TrackedSettings.Command] = []
    /// The session and settings version that last brought `settings` up to date: while they
    /// match, nothing needs comparing.
    var settingsStamp: TrackedSettings.Stamp?
    /// The connection served another client before (transaction pooling): its greeting tells
    /// its login-time parameters, not what later clients set.
    var lent = false

    init() {}

    func has(_ id: UInt64) -> Bool { statements[id] != nil }

    func isUncertain(_ id: UInt64) -> Bool { !uncertain.isEmpty && uncertain.contains(id) }

    /// A statement was prepared here, or used again.
    mutating func touch(_ id: UInt64) {
        tick &+= 1
        statements[id] = tick
        if !uncertain.isEmpty { uncertain.remove(id) }
    }



    /// The ids to close so that at most `cap` remain, least recently used first; those touched
    /// at or after `keepFrom` (the unit being sent uses them) stay even beyond the cap.
    mutating func evict(toFit cap: Int, keepFrom: UInt64) -> [UInt64] {
        guard statements.count > cap else { return [] }
        let victims = statements.filter { $0.value < keepFrom }.sorted { $0.value < $1.value }
            .prefix(statements.count - cap).map(\.key)
        for id in victims { statements.removeValue(forKey: id) }
        return victims
    }

    /// The tick the next touch gets.
    var nextTick: UInt64 { tick &+ 1 }

    /// DISCARD ALL ran here (the client's, or the pool's reset): nothing of any client remains.
    /// (Sent, not yet known to have succeeded: the statements become uncertain.)
    mutating func discardAll() {
        deallocateAll()
        unnamed = nil
        settings.removeAll()
        settingsStamp = nil
    }

    /// DEALLOCATE ALL ran here (or was sent: it may yet fail).
    mutating func deallocateAll() {
        uncertain.formUnion(statements.keys)
        statements.removeAll()
    }

    /// What is left after `server_reset_query` ran, as the Router reads that query: DISCARD ALL
    /// leaves nothing, DEALLOCATE ALL no statements, RESET ALL or a RESET no such setting.
    /// Anything else is assumed to leave the connection as it was.
    mutating func reset(by query: Classification) {
        if query.pinChanges.contains(.unpin(.discardAll)) {
            discardAll()
            return
        }
        if query.pinChanges.contains(.unpin(.deallocateAll)) { deallocateAll() }
        var tracked = TrackedSettings(settings)
        for command in query.sessionCommands { tracked.apply(command) }
        settings = tracked.commands
        settingsStamp = nil
        // What it reports may differ from its greeting now.
        lent = true
    }

    /// The proxy's name for a statement id on servers.
    static func statementName(_ id: UInt64) -> String { "causeway_\(id)" }
}
