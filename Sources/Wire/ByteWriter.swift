/// Builds protocol messages. `beginMessage`/`endMessage` back-patch the length so callers never
/// compute lengths by hand.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]
    private var lengthOffset: Int = -1

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func beginMessage(_ type: UInt8) {
        bytes.append(type)
        lengthOffset = bytes.count
        writeInt32(0)
    }

    /// Startup-family packets have no type byte.
    public mutating func beginUntypedMessage() {
        lengthOffset = bytes.count
        writeInt32(0)
    }

    public mutating func endMessage() {
        precondition(lengthOffset >= 0, "endMessage without beginMessage")
        let length = UInt32(bytes.count - lengthOffset)
        bytes[lengthOffset] = UInt8(truncatingIfNeeded: length >> 24)
        bytes[lengthOffset + 1] = UInt8(truncatingIfNeeded: length >> 16)
        bytes[lengthOffset + 2] = UInt8(truncatingIfNeeded: length >> 8)
        bytes[lengthOffset + 3] = UInt8(truncatingIfNeeded: length)
        lengthOffset = -1
    }

    public mutating func writeUInt8(_ value: UInt8) { bytes.append(value) }

    public mutating func writeInt16(_ value: Int16) {
        let v = UInt16(bitPattern: value)
        bytes.append(UInt8(v >> 8))
        bytes.append(UInt8(v & 0xff))
    }

    public mutating func writeInt32(_ value: Int32) {
        let v = UInt32(bitPattern: value)
        bytes.append(UInt8(v >> 24))
        bytes.append(UInt8((v >> 16) & 0xff))
        bytes.append(UInt8((v >> 8) & 0xff))
        bytes.append(UInt8(v & 0xff))
    }

    public mutating func writeBytes<S: Sequence>(_ value: S) where S.Element == UInt8 { bytes.append(contentsOf: value) }

    public mutating func writeCString(_ value: String) {
        bytes.append(contentsOf: value.utf8)
        bytes.append(0)
    }
}
