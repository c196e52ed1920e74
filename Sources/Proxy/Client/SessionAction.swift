import Router
import Wire

/// What a session's state machine asks its connection to do, in order. The connection performs
/// each one with sockets and the worker; the machine never does I/O itself.
enum SessionAction {
    /// Bytes the proxy made itself (local replies, errors, ParameterStatus).
    case writeClient([UInt8])
    /// Connect and log in to this backend for the session; `linkReady` or `linkFailed` follows.
    case openLink(Int)
    /// The session is done with its connection to this backend: it goes back to its pool (or
    /// closes, if it cannot serve another client).
    /// `state`: what it holds, for the pool's reset to start from.
    indirect case closeLink(Int, ServerSessionState?)
    /// Transaction pooling: the connection goes back to its pool as it is, holding `state`
    /// (statements, settings) for the next client; no reset.
    /// (Indirect: the state is large, and every action is copied on its way.)
    indirect case lendLink(Int, ServerSessionState)
    case sendToLink(Int, [UInt8])
    /// The link's response stream must treat the responses to a proxy-made request this way.
    case expect(Int, ResponseStream.Expectation)
    /// Client messages went to the link: `completions` Parse/Close among them, ending with
    /// `readies` ReadyForQuery messages.
    case noteClientRequest(Int, readies: Int, completions: Int)
    /// The proxy ended a client's batch on this link with a Sync of its own.
    case noteBatchEnd(Int)

    /// Send the held responses to the client; responses pass through from now on.
    case releaseHeld
    /// Forget the held responses (the read runs again elsewhere; the client saw none of them).
    case dropHeld
    /// The held responses now end with the ReadyForQuery the token must precede.
    case markHeldReady
    /// The commit's token: just before the held ReadyForQuery, or now when none is held.
    case insertToken([UInt8])

    /// Wake the session (`topologyChanged`) at each new topology and every few milliseconds.
    case waitForTopology
    /// Ask the monitor to poll soon: a replica is only behind this session's floor.
    case requestFastPoll
    /// The session reads from this replica now / no longer (the worker's load count).
    case adoptReplica(Int)
    case releaseReplica(Int)
    /// Cancel requests from the client go to this link's server process from now on.
    case pointCancelKey(Int)
    /// Whether the client's work is on a server (cancels are forwarded only then).
    case setRunning(Bool)
    /// A link to the primary logged in: count the session there, and let later logins be
    /// greeted with these parameters.
    case primaryLinkReady(Int, [(String, String)]?)

    case countUnit(backend: Int, isWrite: Bool, reason: RouteReason)
    case countProxyError(String?)
    case countServerError
    case countRetry
    case log(LogLevel, String, KeyValuePairs<String, CustomStringConvertible>)

    /// Tell the client why (placed at a message boundary) and end the session.
    case fatal(ErrorFields)
    /// End the session without a word: the client left, or the server already said why. Its
    /// server links get a Terminate, so an open transaction rolls back at once.
    case end
}
