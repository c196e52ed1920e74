import Wire

/// Logs the proxy in to a server as a pure state machine: it produces the StartupMessage, then
/// answers each authentication request and collects what the server announces until the first
/// ReadyForQuery.
struct ServerLogin {
    enum Secret {
        case none
        case password(String)
        case scramKeys(clientKey: [UInt8], keys: ScramKeys)
    }

    enum Action {
        case send([UInt8])
        case wait
        case ready(ServerGreeting)
        /// The server refused (its own ErrorResponse, to be relayed) or the exchange failed.
        case failed(ErrorFields)
    }

    private let user: String
    private let secret: Secret
    private let derive: (String, [UInt8], Int) -> (ScramKeys, [UInt8])
    private var scram: ScramClientExchange?
    private var greeting = ServerGreeting()

    init(user: String, secret: Secret, derive: @escaping (String, [UInt8], Int) -> (ScramKeys, [UInt8])) {
        self.user = user
        self.secret = secret
        self.derive = derive
    }

    static func startupPacket(parameters: [(String, String)]) -> [UInt8] {
        StartupPacket.startup(StartupMessage(majorVersion: 3, minorVersion: 0, parameters: parameters)).encoded()
    }

    mutating func receive(_ message: BackendMessage) -> Action {
        switch message {
        case let .authentication(request):
            return authenticate(request)
        case let .parameterStatus(name, value):
            greeting.parameters.append((name, value))
            return .wait
        case let .backendKeyData(pid, secret):
            greeting.processID = pid
            greeting.secret = secret
            return .wait
        case let .readyForQuery(status):
            greeting.status = status
            return .ready(greeting)
        case let .errorResponse(fields):
            return .failed(fields)
        case let .noticeResponse(fields):
            greeting.notices.append(fields)
            return .wait
        case .negotiateProtocolVersion:
            // We ask for 3.0 with no extensions; a server answering this anyway still speaks 3.0.
            return .wait
        default:
            return .failed(Self.failure("server sent an unexpected message during login"))
        }
    }

    private mutating func authenticate(_ request: AuthenticationRequest) -> Action {
        switch (request, secret) {
        case (.ok, _):
            return .wait
        case (.cleartextPassword, .password(let password)):
            return .send(FrontendMessage.passwordFamily(Array(password.utf8) + [0]).encoded())
        case (.md5Password(let salt), .password(let password)):
            let response = MD5Password.response(user: user, password: password, salt: salt)
            return .send(FrontendMessage.passwordFamily(Array(response.utf8) + [0]).encoded())
        case (.sasl(let mechanisms), _):
            guard mechanisms.contains("SCRAM-SHA-256") else {
                return .failed(Self.failure("server offers SASL mechanisms \(mechanisms) but causeway speaks SCRAM-SHA-256 only"))
            }
            let exchangeSecret: ScramClientExchange.Secret
            switch secret {
            case let .password(password): exchangeSecret = .password(password)
            case let .scramKeys(clientKey, keys): exchangeSecret = .keys(clientKey: clientKey, keys: keys)
            case .none:
                return .failed(Self.failure("server asks for a password for user \"\(user)\" but causeway has none (trust auth with no password configured)"))
            }
            let exchange = ScramClientExchange(secret: exchangeSecret, derive: derive)
            scram = exchange
            return .send(FrontendMessage.passwordFamily(exchange.initialResponse()).encoded())
        case (.saslContinue(let data), _):
            guard var exchange = scram else { return .failed(Self.failure("server sent SASLContinue out of order")) }
            switch exchange.receiveServerFirst(data) {
            case let .send(reply):
                scram = exchange
                return .send(FrontendMessage.passwordFamily(reply).encoded())
            case let .fail(reason):
                return .failed(Self.failure(reason))
            }
        case (.saslFinal(let data), _):
            guard let exchange = scram, exchange.verifyServerFinal(data) else {
                return .failed(Self.failure("server's SCRAM signature did not verify; refusing to trust this server"))
            }
            return .wait
        case (.cleartextPassword, _), (.md5Password, _):
            return .failed(Self.failure("server asks user \"\(user)\" for a plain or md5 password, but causeway only has a SCRAM verifier for this user; configure its password"))
        case (.unsupported(let code), _):
            return .failed(Self.failure("server requested authentication method \(code), which causeway does not support"))
        }
    }

    static func failure(_ message: String) -> ErrorFields {
        ErrorFields(severity: .fatal, sqlState: SQLState.connectionFailure, message: "could not log in to the server: \(message)")
    }
}

/// What a server announced between AuthenticationOk and its first ReadyForQuery.
struct ServerGreeting {
    var parameters: [(String, String)] = []
    var processID: Int32 = 0
    var secret: [UInt8] = []
    var status: BackendMessage.TransactionStatus = .idle
    var notices: [ErrorFields] = []

    func parameter(_ name: String) -> String? { parameters.last { $0.0 == name }?.1 }
}
