/// Why a byte stream could not be decoded. Every decoder failure is one of these, never a crash.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A length field smaller than the length field itself (or negative).
    case invalidLength(type: UInt8?, length: Int32)
    /// A message larger than the decoder is willing to buffer.
    case oversized(type: UInt8?, length: Int, limit: Int)
    /// A message type byte this direction of the protocol does not define.
    case unknownType(UInt8)
    /// A message whose body does not match its type's layout.
    case malformed(type: UInt8?, reason: String)
    /// A startup-phase packet with an unknown request code.
    case unsupportedProtocol(major: Int, minor: Int)

    public var description: String {
        switch self {
        case let .invalidLength(type, length):
            return "invalid message length \(length)\(WireError.typeSuffix(type))"
        case let .oversized(type, length, limit):
            return "message of \(length) bytes exceeds the limit of \(limit) bytes\(WireError.typeSuffix(type))"
        case let .unknownType(byte):
            return "unknown message type \(WireError.printable(byte))"
        case let .malformed(type, reason):
            return "malformed message\(WireError.typeSuffix(type)): \(reason)"
        case let .unsupportedProtocol(major, minor):
            return "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.2"
        }
    }

    static func typeSuffix(_ type: UInt8?) -> String {
        guard let type else { return " (startup packet)" }
        return " (type \(printable(type)))"
    }

    /// A type byte as people read it: `'Q'`, or `0x7` when it is not printable.
    public static func printable(_ byte: UInt8) -> String {
        (0x21...0x7e).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "0x\(String(byte, radix: 16))"
    }
}
