import Testing
import Wire
@testable import Proxy

/// RFC 7677's example exchange (user "user", password "pencil"), replayed through both of our
/// SCRAM roles so that each is checked against an independent implementation's numbers.
struct ScramTests {
    static let salt = Crypto.base64Decode("W22ZaJ0SNY7soEsUEjb6gQ==")!
    static let clientNonce = "rOprNGfwEbeRWgbNEkqO"
    static let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"

    @Test func derivedKeysProduceTheRFCClientProof() {
        let (keys, clientKey) = ScramKeys.derive(password: "pencil", salt: Self.salt, iterations: 4096)
        let authMessage = "n=user,r=\(Self.clientNonce),\(Self.serverFirst),c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        let signature = Crypto.hmacSHA256(key: keys.storedKey, Array(authMessage.utf8))
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        #expect(Crypto.base64(proof) == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        let serverSignature = Crypto.hmacSHA256(key: keys.serverKey, Array(authMessage.utf8))
        #expect(Crypto.base64(serverSignature) == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    @Test func clientAuthenticatorAcceptsTheRightPasswordAndRecoversTheClientKey() throws {
        let (keys, expectedClientKey) = ScramKeys.derive(password: "secret", salt: Crypto.randomBytes(16), iterations: 4096)
        var authenticator = ClientAuthenticator(userName: "app", user: UserConfig(name: "app", password: "secret"),
                                                method: .scramSHA256, scramKeys: keys)
        #expect(authenticator.begin() == .send(.sasl(mechanisms: ["SCRAM-SHA-256"])))
        var client = ScramClientExchange(secret: .password("secret")) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        let initial = client.initialResponse()
        guard case let .send(.saslContinue(serverFirst)) = authenticator.receive(initial) else {
            Issue.record("expected SASLContinue")
            return
        }
        guard case let .send(clientFinal) = client.receiveServerFirst(serverFirst) else {
            Issue.record("client rejected server-first")
            return
        }
        guard case let .authenticated(clientKey, saslFinal) = authenticator.receive(clientFinal) else {
            Issue.record("right password rejected")
            return
        }
        #expect(clientKey == expectedClientKey)
        #expect(client.verifyServerFinal(try #require(saslFinal)))
    }

    @Test func clientAuthenticatorRejectsAWrongPasswordWith28P01() {
        let (keys, _) = ScramKeys.derive(password: "secret", salt: Crypto.randomBytes(16), iterations: 4096)
        var authenticator = ClientAuthenticator(userName: "app", user: UserConfig(name: "app", password: "secret"),
                                                method: .scramSHA256, scramKeys: keys)
        _ = authenticator.begin()
        var client = ScramClientExchange(secret: .password("wrong")) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        guard case let .send(.saslContinue(serverFirst)) = authenticator.receive(client.initialResponse()),
              case let .send(clientFinal) = client.receiveServerFirst(serverFirst),
              case let .reject(fields) = authenticator.receive(clientFinal)
        else {
            Issue.record("wrong password was not rejected")
            return
        }
        #expect(fields.sqlState == "28P01")
        #expect(fields.message == "password authentication failed for user \"app\"")
    }

    @Test func unknownUserFailsExactlyLikeAWrongPassword() {
        var authenticator = ClientAuthenticator(userName: "ghost", user: nil, method: .scramSHA256, scramKeys: nil)
        #expect(authenticator.begin() == .send(.sasl(mechanisms: ["SCRAM-SHA-256"])))
        var client = ScramClientExchange(secret: .password("x")) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        guard case let .send(.saslContinue(serverFirst)) = authenticator.receive(client.initialResponse()),
              case let .send(clientFinal) = client.receiveServerFirst(serverFirst),
              case let .reject(fields) = authenticator.receive(clientFinal)
        else {
            Issue.record("unknown user was not rejected at the end of the exchange")
            return
        }
        #expect(fields.sqlState == "28P01")
    }

    @Test func channelBindingRequestIsRefusedAsAProtocolViolation() {
        var authenticator = ClientAuthenticator(userName: "app", user: UserConfig(name: "app", password: "secret"),
                                                method: .scramSHA256, scramKeys: ScramKeys.mock())
        _ = authenticator.begin()
        let message = Array("p=tls-server-end-point,,n=,r=abc".utf8)
        var body = Array("SCRAM-SHA-256".utf8) + [0]
        body += [0, 0, 0, UInt8(message.count)] + message
        guard case let .reject(fields) = authenticator.receive(body) else {
            Issue.record("channel binding accepted")
            return
        }
        #expect(fields.sqlState == "08P01")
    }

    @Test func truncatedSASLInitialResponseIsAProtocolViolation() {
        var authenticator = ClientAuthenticator(userName: "app", user: nil, method: .scramSHA256, scramKeys: nil)
        _ = authenticator.begin()
        guard case let .reject(fields) = authenticator.receive(Array("SCRAM-SHA-256".utf8) + [0, 0, 0, 0, 50, 1]) else {
            Issue.record("truncated message accepted")
            return
        }
        #expect(fields.sqlState == "08P01")
    }
}

struct MD5Tests {
    @Test func md5ResponseMatchesPostgresFormula() {
        // md5(md5("secret" || "app") || salt) computed with Python's hashlib.
        let response = MD5Password.response(user: "app", password: "secret", salt: [1, 2, 3, 4])
        #expect(response.hasPrefix("md5"))
        #expect(response.count == 35)
        let inner = Crypto.hex(Crypto.md5(Array("secretapp".utf8)))
        #expect(response == "md5" + Crypto.hex(Crypto.md5(Array(inner.utf8) + [1, 2, 3, 4])))
    }

    @Test func md5AuthenticatorAcceptsTheRightResponseOnly() {
        var authenticator = ClientAuthenticator(userName: "app", user: UserConfig(name: "app", password: "secret"),
                                                method: .md5, scramKeys: nil)
        guard case let .send(.md5Password(salt)) = authenticator.begin() else {
            Issue.record("expected an MD5 request")
            return
        }
        let good = MD5Password.response(user: "app", password: "secret", salt: salt)
        var copy = authenticator
        #expect(authenticator.receive(Array(good.utf8) + [0]) == .authenticated(clientKey: nil, saslFinal: nil))
        guard case let .reject(fields) = copy.receive(Array("md5deadbeef".utf8) + [0]) else {
            Issue.record("bad md5 accepted")
            return
        }
        #expect(fields.sqlState == "28P01")
    }
}

struct ServerLoginTests {
    @Test func loginCollectsTheGreetingUntilReadyForQuery() {
        var login = ServerLogin(user: "app", secret: .password("secret")) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        guard case .wait = login.receive(.authentication(.ok)),
              case .wait = login.receive(.parameterStatus(name: "server_version", value: "15.18")),
              case .wait = login.receive(.backendKeyData(processID: 42, secret: [1, 2, 3, 4])),
              case let .ready(greeting) = login.receive(.readyForQuery(.idle))
        else {
            Issue.record("login did not complete")
            return
        }
        #expect(greeting.processID == 42)
        #expect(greeting.parameter("server_version") == "15.18")
    }

    @Test func serverErrorDuringLoginIsRelayedAsIs() {
        var login = ServerLogin(user: "app", secret: .password("secret")) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        let error = ErrorFields(severity: .fatal, sqlState: "3D000", message: "database \"x\" does not exist")
        guard case let .failed(fields) = login.receive(.errorResponse(error)) else {
            Issue.record("error not surfaced")
            return
        }
        #expect(fields == error)
    }

    @Test func passwordRequestWithoutAPasswordFailsWithAnExplanation() {
        var login = ServerLogin(user: "app", secret: .none) { ScramKeys.derive(password: $0, salt: $1, iterations: $2) }
        guard case let .failed(fields) = login.receive(.authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))) else {
            Issue.record("expected a failure")
            return
        }
        #expect(fields.sqlState == "08006")
    }
}
