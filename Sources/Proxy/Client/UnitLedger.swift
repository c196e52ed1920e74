import Router
import Wire

/// The units a session has sent whose ReadyForQuery has not come back, in order, and what the
/// client's response stream does meanwhile: pass responses through, or hold them — to re-run a
/// replica read elsewhere if the replica refuses it or dies, or to put a commit's causal token in
/// front of its ReadyForQuery. Pure: events in, actions out; the held bytes themselves stay with
/// the connection, which performs the actions.
struct UnitLedger {
    /// What the session remembers about a unit until its ReadyForQuery.
    struct Record {
        var link: Int
        var endsWithRollback: Bool
        var settingsInUnit: [SessionCommand]
        /// Its batch has not reached Sync yet: later parts join this record.
        var open: Bool
        var sawError = false
    }

    /// Whether, and why, the responses of the unit at the head are held back from the client.
    enum Holding {
        case passing
        /// An autocommit read on a replica: a copy of it is kept (bounded) and nothing reaches
        /// the client until it succeeded; `elsewhere` once the replica refused it retryably.
        case forRetry(link: Int, copy: RequestUnit, elsewhere: Bool)
        /// report_lsn: a committing write's responses, its ReadyForQuery included, wait for its LSN.
        /// (The token goes just before the held ReadyForQuery.)
        case forToken(link: Int)

        var link: Int? {
            switch self {
            case .passing: nil
            case let .forRetry(link, _, _), let .forToken(link): link
            }
        }

        var isPassing: Bool { link == nil }
    }

    enum Action {
        /// Send the held bytes to the client and pass responses through from now on.
        case releaseHeld
        /// Drop the held bytes and run this unit again (on the primary when `onPrimary`, else
        /// wherever routing now says); the client saw nothing of the first attempt.
        case retry(RequestUnit, onPrimary: Bool)
        /// Keep holding: the token has to be inserted before the held ReadyForQuery.
        case awaitToken
    }

    /// A copy kept for a retry, and the responses held with it, stay below this.
    static let holdLimit = 256 * 1024

    private(set) var records: [Record] = []
    private(set) var holding = Holding.passing

    var isEmpty: Bool { records.isEmpty }
    /// The link whose responses may reach the client now (responses arrive in request order).
    var headLink: Int? { records.first?.link }
    func hasWork(on link: Int) -> Bool { records.contains { $0.link == link } }

    /// What the session knows about a unit it is sending.
    struct Sending {
        var unit: RequestUnit
        var link: Int
        /// The unit runs on a replica, in autocommit, unbound, and leaves no transaction open:
        /// a refusal can be hidden by running it elsewhere.
        var retryable: Bool
        /// report_lsn is on and the unit's commit LSN will be captured right behind it.
        var reportsToken: Bool
    }

    /// A unit (or a part of a batch) goes to a server.
    mutating func sent(_ sending: Sending) -> Action? {
        let unit = sending.unit
        if let open = records.lastIndex(where: { $0.link == sending.link && $0.open }) {
            return continueBatch(at: open, with: unit)
        }
        guard unit.readies > 0 || (unit.end == .partial && sending.retryable) else { return nil }
        var action: Action?
        if sending.reportsToken && records.isEmpty && holding.isPassing {
            holding = .forToken(link: sending.link)
        } else if sending.retryable && records.isEmpty {
            holding = .forRetry(link: sending.link, copy: unit, elsewhere: false)
        } else if !holding.isPassing {
            // Something else follows the held unit on the wire: its responses can no longer be
            // told apart by position, so the held bytes go and holding stops.
            holding = .passing
            action = .releaseHeld
        }
        records.append(Record(link: sending.link, endsWithRollback: unit.classification?.transaction == .rollback,
                              settingsInUnit: unit.executes ? unit.classification?.sessionCommands ?? [] : [],
                              open: unit.continuesBatch))
        return action
    }

    /// A later part of a batch joins the record of its first part. The retry copy grows with it
    /// (bounded); a Flush gives it up, since the client then waits for the held responses.
    private mutating func continueBatch(at position: Int, with unit: RequestUnit) -> Action? {
        records[position].open = unit.continuesBatch
        if unit.readies > 0 {
            records[position].endsWithRollback = unit.classification?.transaction == .rollback
            if unit.executes { records[position].settingsInUnit += unit.classification?.sessionCommands ?? [] }
        }
        guard case .forRetry(let link, var copy, let elsewhere) = holding, link == records[position].link else { return nil }
        // Let go of the enum's reference first, so the copy grows in place instead of being copied.
        holding = .passing
        if unit.end == .flush || copy.bytes.count + unit.bytes.count > Self.holdLimit { return .releaseHeld }
        copy.absorb(unit)
        holding = .forRetry(link: link, copy: copy, elsewhere: elsewhere)
        return nil
    }

    /// The proxy ended a batch that ran nothing with a Sync of its own: the batch's record (or a
    /// new one) ends at that Sync's ReadyForQuery.
    mutating func batchEnded(on link: Int) {
        if let open = records.lastIndex(where: { $0.link == link && $0.open }) {
            records[open].open = false
        } else {
            records.append(Record(link: link, endsWithRollback: false, settingsInUnit: [], open: false))
        }
    }

    /// A server sent an ErrorResponse for the client.
    mutating func serverError(on link: Int, retryableElsewhere: Bool) -> Action? {
        if let position = records.firstIndex(where: { $0.link == link }) { records[position].sawError = true }
        guard case .forRetry(link, let copy, let elsewhere) = holding else { return nil }
        if retryableElsewhere {
            holding = .forRetry(link: link, copy: copy, elsewhere: true)
            return nil
        }
        if elsewhere { return nil }
        // No retry will hide this error: the client gets it now, as PostgreSQL sends it, not
        // when the batch's Sync comes (which may wait for it).
        holding = .passing
        return .releaseHeld
    }

    /// A ReadyForQuery for the client arrived from `link`: its unit is done.
    mutating func ready(on link: Int, tokenPending: Bool) -> (record: Record?, action: Action?) {
        guard let position = records.firstIndex(where: { $0.link == link }) else { return (nil, nil) }
        let record = records.remove(at: position)
        switch holding {
        case .forToken(link) where tokenPending:
            return (record, .awaitToken)
        case let .forRetry(link, copy, elsewhere) where link == record.link:
            holding = .passing
            return (record, elsewhere ? .retry(copy, onPrimary: true) : .releaseHeld)
        case .forToken(link):
            holding = .passing
            return (record, .releaseHeld)
        default:
            return (record, nil)
        }
    }

    /// The commit's LSN is known (or will not come): a held ReadyForQuery can go.
    mutating func tokenResolved() -> Action? {
        guard case .forToken = holding else { return nil }
        holding = .passing
        return .releaseHeld
    }

    /// `link` is gone. If it held only an autocommit read whose responses nobody saw yet, that
    /// read runs elsewhere; otherwise the session has to deal with lost work.
    mutating func linkLost(_ link: Int) -> Action? {
        guard records.count == 1, records[0].link == link, case .forRetry(link, let copy, _) = holding else { return nil }
        records.removeAll()
        holding = .passing
        return .retry(copy, onPrimary: false)
    }

    /// The held bytes outgrew the bound: they go, and so does the chance of a retry.
    mutating func heldOverflowed() -> Action? {
        guard !holding.isPassing else { return nil }
        holding = .passing
        return .releaseHeld
    }
}
