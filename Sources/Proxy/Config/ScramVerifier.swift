import Foundation

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
/// It lets the proxy check a client's SCRAM proof without knowing the password.
public struct ScramVerifier: Sendable, Equatable {
    public var iterations: Int
    public var salt: [UInt8]
    /// H(ClientKey), 32 bytes.
    public var storedKey: [UInt8]
    /// HMAC(SaltedPassword, "Server Key"), 32 bytes.
    public var serverKey: [UInt8]

    public init(iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.iterations = iterations
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// Parses the pg_authid text form; nil when it is malformed.
    public init?(parsing text: String) {
        guard case .success(let verifier) = ScramVerifier.parse(text) else { return nil }
        self = verifier
    }

    /// The pg_authid text form (the inverse of `init?(parsing:)`).
    public var encoded: String {
        "SCRAM-SHA-256$\(iterations):\(Self.base64(salt))$\(Self.base64(storedKey)):\(Self.base64(serverKey))"
    }

    /// Parses the text form, or says what is wrong with it without quoting it.
    static func parse(_ text: String) -> Result<ScramVerifier, ScramVerifierError> {
        let sections = text.split(separator: "$", omittingEmptySubsequences: false)
        guard sections.count == 3 else {
            return .failure(.init(reason: "expected three parts separated by \"$\""))
        }
        guard sections[0] == "SCRAM-SHA-256" else {
            return .failure(.init(reason: "must start with \"SCRAM-SHA-256$\""))
        }
        let parameters = sections[1].split(separator: ":", omittingEmptySubsequences: false)
        guard parameters.count == 2 else {
            return .failure(.init(reason: "expected \"<iterations>:<salt>\" after \"SCRAM-SHA-256$\""))
        }
        guard parameters[0].allSatisfy({ $0.isASCII && $0.isNumber }), let iterations = Int(parameters[0]),
            iterations > 0
        else {
            return .failure(.init(reason: "the iteration count must be a positive integer"))
        }
        guard let salt = decodeBase64(parameters[1]), !salt.isEmpty else {
            return .failure(.init(reason: "the salt is not valid base64"))
        }
        let keys = sections[2].split(separator: ":", omittingEmptySubsequences: false)
        guard keys.count == 2 else {
            return .failure(.init(reason: "expected \"<StoredKey>:<ServerKey>\" after the second \"$\""))
        }
        guard let storedKey = decodeBase64(keys[0]), storedKey.count == 32 else {
            return .failure(.init(reason: "StoredKey must be 32 bytes of base64"))
        }
        guard let serverKey = decodeBase64(keys[1]), serverKey.count == 32 else {
            return .failure(.init(reason: "ServerKey must be 32 bytes of base64"))
        }
        return .success(
            ScramVerifier(iterations: iterations, salt: salt, storedKey: storedKey, serverKey: serverKey))
    }

    private static func decodeBase64(_ text: Substring) -> [UInt8]? {
        guard let data = Data(base64Encoded: String(text)) else { return nil }
        return [UInt8](data)
    }

    private static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }
}

struct ScramVerifierError: Error {
    var reason: String
}
