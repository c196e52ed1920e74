/// The untyped packets a client may send before its StartupMessage is accepted.
public enum StartupPacket: Equatable, Sendable {
    case sslRequest
    case gssEncryptionRequest
    /// `secret` is 4 bytes for protocol 3.0 clients and up to 256 bytes for 3.2 clients.
    case cancelRequest(processID: Int32, secret: [UInt8])
    case startup(StartupMessage)

    public static let sslRequestCode: Int32 = 80_877_103
    public static let gssEncryptionRequestCode: Int32 = 80_877_104
    public static let cancelRequestCode: Int32 = 80_877_102
    /// PostgreSQL's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
    public static let maximumLength = 10_000
    public static let maximumCancelSecretLength = 256

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.beginUntypedMessage()
        switch self {
        case .sslRequest:
            writer.writeInt32(Self.sslRequestCode)
        case .gssEncryptionRequest:
            writer.writeInt32(Self.gssEncryptionRequestCode)
        case let .cancelRequest(processID, secret):
            writer.writeInt32(Self.cancelRequestCode)
            writer.writeInt32(processID)
            writer.writeBytes(secret)
        case let .startup(message):
            writer.writeInt32(Int32(message.majorVersion) << 16 | Int32(message.minorVersion))
            for (name, value) in message.parameters {
                writer.writeCString(name)
                writer.writeCString(value)
            }
            writer.writeUInt8(0)
        }
        writer.endMessage()
        return writer.bytes
    }

    /// Decodes one whole packet: `bytes` starts at the length word and holds exactly `length` bytes.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> StartupPacket {
        var reader = ByteReader(bytes, messageType: nil)
        let length = try reader.readInt32()
        guard length >= 8, Int(length) == bytes.count else { throw .invalidLength(type: nil, length: length) }
        let code = try reader.readInt32()
        switch code {
        case sslRequestCode:
            try reader.expectEnd()
            return .sslRequest
        case gssEncryptionRequestCode:
            try reader.expectEnd()
            return .gssEncryptionRequest
        case cancelRequestCode:
            let pid = try reader.readInt32()
            let secret = reader.readRest()
            guard (4...maximumCancelSecretLength).contains(secret.count) else {
                throw .malformed(type: nil, reason: "cancel key of \(secret.count) bytes")
            }
            return .cancelRequest(processID: pid, secret: secret)
        default:
            let major = Int(UInt32(bitPattern: code) >> 16)
            let minor = Int(UInt32(bitPattern: code) & 0xffff)
            guard major == 3 else { throw .unsupportedProtocol(major: major, minor: minor) }
            var parameters: [(String, String)] = []
            while true {
                let name = try reader.readCString()
                if name.isEmpty { break }
                let value = try reader.readCString()
                parameters.append((name, value))
            }
            try reader.expectEnd()
            return .startup(StartupMessage(majorVersion: major, minorVersion: minor, parameters: parameters))
        }
    }

    public static func == (lhs: StartupPacket, rhs: StartupPacket) -> Bool {
        switch (lhs, rhs) {
        case (.sslRequest, .sslRequest), (.gssEncryptionRequest, .gssEncryptionRequest): return true
        case let (.cancelRequest(a, s), .cancelRequest(b, t)): return a == b && s == t
        case let (.startup(a), .startup(b)): return a == b
        default: return false
        }
    }
}

/// A StartupMessage: protocol version and the ordered name/value parameters the client sent.
public struct StartupMessage: Equatable, Sendable {
    public var majorVersion: Int
    public var minorVersion: Int
    public var parameters: [(String, String)]

    public init(majorVersion: Int = 3, minorVersion: Int = 0, parameters: [(String, String)]) {
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
        self.parameters = parameters
    }

    public subscript(name: String) -> String? {
        parameters.first { $0.0 == name }?.1
    }

    /// `_pq_.` names are protocol extensions, not settings; a server that doesn't know them must
    /// list them in NegotiateProtocolVersion instead of failing.
    public var protocolExtensionNames: [String] {
        parameters.compactMap { $0.0.hasPrefix("_pq_.") ? $0.0 : nil }
    }

    public static func == (lhs: StartupMessage, rhs: StartupMessage) -> Bool {
        lhs.majorVersion == rhs.majorVersion && lhs.minorVersion == rhs.minorVersion
            && lhs.parameters.elementsEqual(rhs.parameters) { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}
