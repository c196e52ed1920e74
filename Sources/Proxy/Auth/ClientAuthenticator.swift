import Wire

/// Authenticates a client against the configured users, as a pure state machine: feed it the
/// client's 'p' message bodies, perform the actions it returns.
struct ClientAuthenticator {
    enum Action: Equatable {
        case send(AuthenticationRequest)
        /// After SCRAM, `saslFinal` must be sent before AuthenticationOk, and `clientKey` lets the
        /// proxy log in to servers for users that are configured with a verifier only.
        case authenticated(clientKey: [UInt8]?, saslFinal: [UInt8]?)
        case reject(ErrorFields)
    }

    private enum State {
        case idle
        case awaitingCleartextOrMD5(salt: [UInt8])
        case awaitingSASLInitial(ScramServerExchange)
        case awaitingSASLFinal(ScramServerExchange)
        case finished
    }

    private let userName: String
    private let user: UserConfig?
    private let method: AuthType
    private let scramKeys: ScramKeys?
    private let mockKeys: ScramKeys?
    private var state: State = .idle

    /// `scramKeys` are the user's verifier keys (nil for unknown users: a mock is used).
    init(userName: String, user: UserConfig?, method: AuthType, scramKeys: ScramKeys?, mockKeys: ScramKeys? = nil) {
        self.userName = userName
        self.user = user
        self.method = method
        self.scramKeys = scramKeys
        self.mockKeys = mockKeys
    }

    mutating func begin() -> Action {
        switch method {
        case .trust:
            state = .finished
            return .authenticated(clientKey: nil, saslFinal: nil)
        case .md5:
            let salt = Crypto.randomBytes(4)
            state = .awaitingCleartextOrMD5(salt: salt)
            return .send(.md5Password(salt: salt))
        case .scramSHA256:
            state = .awaitingSASLInitial(ScramServerExchange(keys: scramKeys ?? mockKeys ?? .mock()))
            return .send(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        }
    }

    mutating func receive(_ body: [UInt8]) -> Action {
        switch state {
        case let .awaitingCleartextOrMD5(salt):
            state = .finished
            guard let end = body.firstIndex(of: 0), end == body.count - 1 else {
                return .reject(Self.protocolViolation("malformed password message"))
            }
            let received = String(decoding: body[..<end], as: UTF8.self)
            guard let password = user?.password else { return .reject(failed()) }
            let expected = MD5Password.response(user: userName, password: password, salt: salt)
            return Crypto.constantTimeEqual(Array(received.utf8), Array(expected.utf8))
                ? .authenticated(clientKey: nil, saslFinal: nil) : .reject(failed())
        case var .awaitingSASLInitial(exchange):
            var reader = ByteReader(body, messageType: FrontendMessage.TypeByte.password)
            guard let mechanism = try? reader.readCString(), let length = try? reader.readInt32() else {
                state = .finished
                return .reject(Self.protocolViolation("malformed SASLInitialResponse"))
            }
            guard mechanism == "SCRAM-SHA-256" else {
                state = .finished
                return .reject(Self.protocolViolation("client selected an invalid SASL authentication mechanism \"\(mechanism)\"; causeway offers SCRAM-SHA-256 only"))
            }
            guard length >= 0, let data = try? reader.readBytes(Int(length)), reader.isAtEnd else {
                state = .finished
                return .reject(Self.protocolViolation("malformed SASLInitialResponse"))
            }
            switch exchange.receiveClientFirst(data) {
            case let .sendContinue(reply):
                state = .awaitingSASLFinal(exchange)
                return .send(.saslContinue(reply))
            case let .fail(reason, violation):
                state = .finished
                return .reject(violation ? Self.protocolViolation(reason) : failed())
            case .sendFinal:
                state = .finished
                return .reject(Self.protocolViolation("unexpected SCRAM state"))
            }
        case var .awaitingSASLFinal(exchange):
            state = .finished
            switch exchange.receiveClientFinal(body) {
            case let .sendFinal(reply, clientKey):
                guard scramKeys != nil else { return .reject(failed()) }
                return .authenticated(clientKey: clientKey, saslFinal: reply)
            case let .fail(reason, violation):
                return .reject(violation ? Self.protocolViolation(reason) : failed())
            case .sendContinue:
                return .reject(Self.protocolViolation("unexpected SCRAM state"))
            }
        case .idle, .finished:
            state = .finished
            return .reject(Self.protocolViolation("unexpected password message"))
        }
    }

    private func failed() -> ErrorFields {
        ErrorFields(severity: .fatal, sqlState: SQLState.invalidPassword,
                    message: "password authentication failed for user \"\(userName)\"")
    }

    static func protocolViolation(_ message: String) -> ErrorFields {
        ErrorFields(severity: .fatal, sqlState: SQLState.protocolViolation, message: message)
    }
}
