import Router
import Wire

/// The first server login of a session whose startup parameters the proxy has not seen yet: the
/// client is greeted with the primary's parameters, so the login goes to the primary first. Until
/// the monitor has seen the cluster, candidates are tried in configuration order and a standby
/// (`in_hot_standby = on`) is skipped. When no primary can be reached, an up replica lets the
/// client in for reads (its `in_hot_standby` is never reported). Pure: events in, actions out.
struct FirstLogin {
    enum Action {
        case connect(Int)
        /// A standby answered where a primary was sought: close it and go on.
        case close(Int)
        /// Greet the client with this link's parameters; `isPrimary` is false for a replica the
        /// login settled for.
        case greet(link: Int, isPrimary: Bool)
        /// The login fails with this error.
        case refuse(ErrorFields)
        case log(LogLevel, String, KeyValuePairs<String, CustomStringConvertible>)
    }

    let session: Int32
    private var remaining: [Int] = []
    /// Replicas are acceptable now: no primary could be reached.
    private var standbysToo = false
    /// Why each candidate was passed over, for the final error.
    private(set) var failures: [String] = []
    private(set) var current: Int?

    init(session: Int32) {
        self.session = session
    }

    /// The candidates: the monitor's live primary, else the backends configured as primary or
    /// auto (`configured`, in order).
    mutating func start(topology: Topology, configured: [Int]) -> [Action] {
        if let primary = topology.primary, primary.health != .down, !topology.hasMultiplePrimaries {
            remaining = [primary.index]
        } else if topology.hasMultiplePrimaries {
            return [.refuse(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                        message: "two backends report being primary; causeway refuses to guess which one to write to",
                                        hint: "Demote or stop one of them."))]
        } else {
            remaining = configured
        }
        return next(topology)
    }

    /// The link to `index` logged in; `standby` when it reported `in_hot_standby = on`.
    mutating func linkReady(_ index: Int, standby: Bool, label: String, topology: Topology) -> [Action] {
        guard index == current else { return [] }
        current = nil
        if standby && !standbysToo {
            failures.append("\(label) is a standby")
            return [.close(index)] + next(topology)
        }
        return [.greet(link: index, isPrimary: !standby)]
    }

    /// The link to `index` could not log in.
    mutating func linkFailed(_ index: Int, _ error: ErrorFields, label: String, name: String, topology: Topology) -> [Action] {
        guard index == current else { return [] }
        current = nil
        if error.sqlState == SQLState.connectionFailure {
            // Unreachable: the next candidate, or (none left) the replicas.
            failures.append(error.message ?? label)
            return next(topology)
        }
        // The server refused the login itself (wrong password, no such database, too many
        // connections): that is the client's answer.
        return [.log(.warn, "server_login_failed", ["session": session, "backend": name, "sqlstate": error.sqlState ?? "",
                                                    "message": error.message ?? ""]),
                .refuse(error)]
    }

    private mutating func next(_ topology: Topology) -> [Action] {
        var actions: [Action] = []
        if remaining.isEmpty && !standbysToo {
            let replicas = topology.backends.filter { $0.role == .replica && $0.health == .up && !$0.draining }.map(\.index)
            if !replicas.isEmpty {
                actions.append(.log(.info, "login_without_primary", ["session": session, "reasons": failures.joined(separator: "; ")]))
                standbysToo = true
                remaining = replicas
            }
        }
        guard !remaining.isEmpty else {
            let reasons = failures.isEmpty ? "no backend is configured as primary or auto" : failures.joined(separator: "; ")
            return actions + [.log(.warn, "no_primary_available", ["session": session, "reasons": reasons]),
                              .refuse(ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure,
                                                  message: "no primary backend available: \(reasons)",
                                                  hint: "Check that the primary is running and reachable from causeway."))]
        }
        let index = remaining.removeFirst()
        current = index
        return actions + [.connect(index)]
    }
}
