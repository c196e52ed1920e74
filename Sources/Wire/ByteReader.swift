/// Reads big-endian protocol fields from a message body. Every read is bounds-checked and throws
/// `WireError.malformed` instead of trapping, so hostile input can never crash a worker.
public struct ByteReader {
    @usableFromInline let bytes: ArraySlice<UInt8>
    @usableFromInline var index: Int
    @usableFromInline let messageType: UInt8?

    public init(_ bytes: ArraySlice<UInt8>, messageType: UInt8?) {
        self.bytes = bytes
        self.index = bytes.startIndex
        self.messageType = messageType
    }

    public init(_ bytes: [UInt8], messageType: UInt8?) {
        self.init(bytes[...], messageType: messageType)
    }

    public var remaining: Int { bytes.endIndex - index }
    public var isAtEnd: Bool { index >= bytes.endIndex }

    func fail(_ reason: String) -> WireError { .malformed(type: messageType, reason: reason) }

    public mutating func readUInt8() throws(WireError) -> UInt8 {
        guard remaining >= 1 else { throw fail("truncated byte field") }
        defer { index += 1 }
        return bytes[index]
    }

    public mutating func readInt16() throws(WireError) -> Int16 {
        guard remaining >= 2 else { throw fail("truncated Int16 field") }
        defer { index += 2 }
        return Int16(bitPattern: UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]))
    }

    public mutating func readInt32() throws(WireError) -> Int32 {
        guard remaining >= 4 else { throw fail("truncated Int32 field") }
        defer { index += 4 }
        return Int32(bitPattern: UInt32(bytes[index]) << 24 | UInt32(bytes[index + 1]) << 16
            | UInt32(bytes[index + 2]) << 8 | UInt32(bytes[index + 3]))
    }

    public mutating func readBytes(_ count: Int) throws(WireError) -> [UInt8] {
        guard count >= 0, remaining >= count else { throw fail("truncated byte string") }
        defer { index += count }
        return Array(bytes[index..<index + count])
    }

    public mutating func readRest() -> [UInt8] {
        defer { index = bytes.endIndex }
        return Array(bytes[index...])
    }

    /// A NUL-terminated string. Invalid UTF-8 is repaired rather than rejected: the proxy only
    /// relays or compares these, and PostgreSQL itself validates encodings.
    public mutating func readCString() throws(WireError) -> String {
        guard let end = bytes[index...].firstIndex(of: 0) else { throw fail("missing string terminator") }
        defer { index = end + 1 }
        return String(decoding: bytes[index..<end], as: UTF8.self)
    }

    public func expectEnd() throws(WireError) {
        guard isAtEnd else { throw fail("\(remaining) unexpected trailing bytes") }
    }
}
