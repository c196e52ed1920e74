import Foundation

/// SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, in both roles: the proxy verifies
/// clients against a verifier, and logs in to servers as a client. Channel binding is not offered
/// (the proxy does not terminate TLS yet), so only the `n,,` and `y,,` GS2 headers are accepted.
public struct ScramKeys: Sendable, Equatable {
    public var salt: [UInt8]
    public var iterations: Int
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    public init(salt: [UInt8], iterations: Int, storedKey: [UInt8], serverKey: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    public init(verifier: ScramVerifier) {
        self.init(salt: verifier.salt, iterations: verifier.iterations, storedKey: verifier.storedKey,
                  serverKey: verifier.serverKey)
    }

    /// Derives the verifier PostgreSQL would store for `password` with this salt.
    public static func derive(password: String, salt: [UInt8], iterations: Int) -> (keys: ScramKeys, clientKey: [UInt8]) {
        let salted = Crypto.pbkdf2SHA256(password: Array(password.utf8), salt: salt, iterations: iterations)
        let clientKey = Crypto.hmacSHA256(key: salted, Array("Client Key".utf8))
        let serverKey = Crypto.hmacSHA256(key: salted, Array("Server Key".utf8))
        return (ScramKeys(salt: salt, iterations: iterations, storedKey: Crypto.sha256(clientKey), serverKey: serverKey),
                clientKey)
    }

    /// Keys for a user that does not exist: the exchange runs to the end and fails exactly like a
    /// wrong password, so a client cannot probe which user names exist.
    static func mock() -> ScramKeys {
        ScramKeys(salt: Crypto.randomBytes(16), iterations: 4096, storedKey: Crypto.randomBytes(32),
                  serverKey: Crypto.randomBytes(32))
    }
}

enum ScramAttributes {
    /// Parses `a=1,b=2` into ordered pairs; values may themselves contain '='.
    static func parse(_ text: Substring) -> [(Character, Substring)]? {
        var result: [(Character, Substring)] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard part.count >= 2, let name = part.first, part[part.index(after: part.startIndex)] == "=" else {
                return nil
            }
            result.append((name, part.dropFirst(2)))
        }
        return result
    }

    static func value(_ name: Character, in attributes: [(Character, Substring)]) -> Substring? {
        attributes.first { $0.0 == name }?.1
    }
}

/// The proxy verifying a client.
struct ScramServerExchange {
    enum Step {
        case sendContinue([UInt8])
        case sendFinal([UInt8], clientKey: [UInt8])
        case fail(reason: String, protocolViolation: Bool)
    }

    private let keys: ScramKeys
    private var clientFirstBare = ""
    private var serverFirst = ""
    private var gs2Header = ""
    private var combinedNonce = ""

    init(keys: ScramKeys) {
        self.keys = keys
    }

    mutating func receiveClientFirst(_ data: [UInt8]) -> Step {
        let text = String(decoding: data, as: UTF8.self)
        // gs2-header = flag "," [authzid] ","
        let pieces = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard pieces.count == 3 else { return .fail(reason: "malformed SCRAM client-first message", protocolViolation: true) }
        switch pieces[0] {
        case "n", "y": break
        default:
            if pieces[0].hasPrefix("p=") {
                return .fail(reason: "SCRAM channel binding is not supported by causeway; connect with channel_binding=disable or prefer",
                             protocolViolation: true)
            }
            return .fail(reason: "malformed SCRAM GS2 header", protocolViolation: true)
        }
        guard pieces[1].isEmpty else { return .fail(reason: "SCRAM authorization identity is not supported", protocolViolation: true) }
        gs2Header = "\(pieces[0]),,"
        clientFirstBare = String(pieces[2])
        guard let attributes = ScramAttributes.parse(pieces[2]),
              let clientNonce = ScramAttributes.value("r", in: attributes), !clientNonce.isEmpty,
              attributes.first?.0 == "n"
        else { return .fail(reason: "malformed SCRAM client-first message", protocolViolation: true) }
        if attributes.contains(where: { $0.0 == "m" }) {
            return .fail(reason: "SCRAM mandatory extensions are not supported", protocolViolation: true)
        }
        combinedNonce = String(clientNonce) + Crypto.base64(Crypto.randomBytes(18))
        serverFirst = "r=\(combinedNonce),s=\(Crypto.base64(keys.salt)),i=\(keys.iterations)"
        return .sendContinue(Array(serverFirst.utf8))
    }

    mutating func receiveClientFinal(_ data: [UInt8]) -> Step {
        let text = String(decoding: data, as: UTF8.self)
        guard let proofRange = text.range(of: ",p=", options: .backwards) else {
            return .fail(reason: "malformed SCRAM client-final message", protocolViolation: true)
        }
        let withoutProof = text[..<proofRange.lowerBound]
        guard let attributes = ScramAttributes.parse(withoutProof),
              let binding = ScramAttributes.value("c", in: attributes),
              let nonce = ScramAttributes.value("r", in: attributes),
              let proof = Crypto.base64Decode(text[proofRange.upperBound...]), proof.count == 32
        else { return .fail(reason: "malformed SCRAM client-final message", protocolViolation: true) }
        guard Crypto.base64Decode(binding) == Array(gs2Header.utf8) else {
            return .fail(reason: "SCRAM channel binding check failed", protocolViolation: true)
        }
        guard nonce == combinedNonce else { return .fail(reason: "SCRAM nonce mismatch", protocolViolation: true) }
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = Crypto.hmacSHA256(key: keys.storedKey, authMessage)
        let clientKey = zip(proof, clientSignature).map { $0 ^ $1 }
        guard Crypto.constantTimeEqual(Crypto.sha256(clientKey), keys.storedKey) else {
            return .fail(reason: "wrong password", protocolViolation: false)
        }
        let serverSignature = Crypto.hmacSHA256(key: keys.serverKey, authMessage)
        return .sendFinal(Array("v=\(Crypto.base64(serverSignature))".utf8), clientKey: clientKey)
    }
}

/// The proxy logging in to a server. With a plain password it derives the keys from the
/// server's salt; with only a verifier it reuses the ClientKey recovered from the client's own
/// SCRAM proof, which works when the server stores the same verifier (same salt and iterations).
struct ScramClientExchange {
    enum Secret {
        case password(String)
        case keys(clientKey: [UInt8], keys: ScramKeys)
    }

    enum Step {
        case send([UInt8])
        case fail(String)
    }

    private let secret: Secret
    private let clientNonce: String
    private var clientFirstBare: String
    private var expectedServerSignature: [UInt8] = []
    private let derive: (String, [UInt8], Int) -> (ScramKeys, [UInt8])

    init(secret: Secret, derive: @escaping (String, [UInt8], Int) -> (ScramKeys, [UInt8])) {
        self.secret = secret
        self.derive = derive
        clientNonce = Crypto.base64(Crypto.randomBytes(18))
        clientFirstBare = "n=,r=\(clientNonce)"
    }

    /// SASLInitialResponse body: mechanism, length, client-first message.
    func initialResponse() -> [UInt8] {
        let message = Array("n,,\(clientFirstBare)".utf8)
        var body = Array("SCRAM-SHA-256".utf8)
        body.append(0)
        let length = UInt32(message.count)
        body += [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
        return body + message
    }

    mutating func receiveServerFirst(_ data: [UInt8]) -> Step {
        let serverFirst = String(decoding: data, as: UTF8.self)
        guard let attributes = ScramAttributes.parse(serverFirst[...]),
              let nonce = ScramAttributes.value("r", in: attributes), nonce.hasPrefix(clientNonce),
              let saltText = ScramAttributes.value("s", in: attributes), let salt = Crypto.base64Decode(saltText),
              let iterationText = ScramAttributes.value("i", in: attributes), let iterations = Int(iterationText),
              iterations > 0
        else { return .fail("server sent a malformed SCRAM server-first message") }
        let keys: ScramKeys
        let clientKey: [UInt8]
        switch secret {
        case let .password(password):
            (keys, clientKey) = derive(password, salt, iterations)
        case let .keys(knownClientKey, knownKeys):
            guard knownKeys.salt == salt, knownKeys.iterations == iterations else {
                return .fail("the server's SCRAM secret for this user differs from the verifier in the causeway config (salt or iteration count); configure the same verifier or a plain password")
            }
            keys = knownKeys
            clientKey = knownClientKey
        }
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = Crypto.hmacSHA256(key: keys.storedKey, authMessage)
        let proof = zip(clientKey, clientSignature).map { $0 ^ $1 }
        expectedServerSignature = Crypto.hmacSHA256(key: keys.serverKey, authMessage)
        return .send(Array("\(withoutProof),p=\(Crypto.base64(proof))".utf8))
    }

    func verifyServerFinal(_ data: [UInt8]) -> Bool {
        let text = String(decoding: data, as: UTF8.self)
        guard text.hasPrefix("v="), let signature = Crypto.base64Decode(text.dropFirst(2)) else { return false }
        return Crypto.constantTimeEqual(signature, expectedServerSignature)
    }
}

enum MD5Password {
    /// `md5` || md5hex(md5hex(password || user) || salt), as PostgreSQL expects.
    static func response(user: String, password: String, salt: [UInt8]) -> String {
        let inner = Crypto.hex(Crypto.md5(Array((password + user).utf8)))
        return "md5" + Crypto.hex(Crypto.md5(Array(inner.utf8) + salt))
    }
}
