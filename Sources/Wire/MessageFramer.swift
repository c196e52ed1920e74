/// Cuts a byte stream into whole messages. Bytes may arrive split at any offset; a message is
/// handed out only once all of it is buffered. Lengths are validated before anything is buffered,
/// so a hostile length field costs nothing.
public struct MessageFramer: Sendable {
    public let maximumLength: Int
    private var buffer: [UInt8] = []
    private var readIndex = 0

    public init(maximumLength: Int) {
        self.maximumLength = maximumLength
    }

    public var bufferedByteCount: Int { buffer.count - readIndex }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfWorthIt()
        buffer.append(contentsOf: bytes)
    }

    public mutating func append<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        compactIfWorthIt()
        buffer.append(contentsOf: bytes)
    }

    /// Removes and returns everything not yet framed (used when a connection switches to relaying).
    public mutating func takeRemainder() -> [UInt8] {
        defer { buffer.removeAll(keepingCapacity: true); readIndex = 0 }
        return Array(buffer[readIndex...])
    }

    /// Next typed message (`type`, body), or nil when more bytes are needed.
    public mutating func nextTyped() throws(WireError) -> (type: UInt8, body: ArraySlice<UInt8>)? {
        guard bufferedByteCount >= 5 else { return nil }
        let type = buffer[readIndex]
        let length = Self.int32(buffer, at: readIndex + 1)
        guard length >= 4 else { throw .invalidLength(type: type, length: length) }
        guard Int(length) <= maximumLength else {
            throw .oversized(type: type, length: Int(length), limit: maximumLength)
        }
        let total = 1 + Int(length)
        guard bufferedByteCount >= total else { return nil }
        let body = buffer[(readIndex + 5)..<(readIndex + total)]
        readIndex += total
        return (type, body)
    }

    /// Next untyped startup-family packet, including its length word, or nil when more is needed.
    public mutating func nextUntyped() throws(WireError) -> ArraySlice<UInt8>? {
        try nextUntyped(limit: maximumLength)
    }

    /// `nextUntyped` with a tighter limit (the startup packet's own), checked before buffering.
    mutating func nextUntyped(limit: Int) throws(WireError) -> ArraySlice<UInt8>? {
        guard bufferedByteCount >= 4 else { return nil }
        let length = Self.int32(buffer, at: readIndex)
        guard length >= 8 else { throw .invalidLength(type: nil, length: length) }
        guard Int(length) <= limit else {
            throw .oversized(type: nil, length: Int(length), limit: limit)
        }
        guard bufferedByteCount >= Int(length) else { return nil }
        let packet = buffer[readIndex..<(readIndex + Int(length))]
        readIndex += Int(length)
        return packet
    }

    private mutating func compactIfWorthIt() {
        if readIndex > 0 && (readIndex == buffer.count || readIndex > 4096) {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
    }

    static func int32(_ bytes: [UInt8], at index: Int) -> Int32 {
        Int32(bitPattern: UInt32(bytes[index]) << 24 | UInt32(bytes[index + 1]) << 16
            | UInt32(bytes[index + 2]) << 8 | UInt32(bytes[index + 3]))
    }
}

/// Decodes what a client sends: first the startup family (untyped), then typed frontend messages.
public struct FrontendDecoder: Sendable {
    public enum Phase: Sendable { case startup, messages }
    public private(set) var phase: Phase
    private var framer: MessageFramer

    public init(phase: Phase = .startup, maximumLength: Int = 1 << 30) {
        self.phase = phase
        framer = MessageFramer(maximumLength: maximumLength)
    }

    public var bufferedByteCount: Int { framer.bufferedByteCount }
    public mutating func append(_ bytes: UnsafeRawBufferPointer) { framer.append(bytes) }
    public mutating func append(_ bytes: [UInt8]) { framer.append(bytes) }
    public mutating func takeRemainder() -> [UInt8] { framer.takeRemainder() }

    /// Call once the StartupMessage is accepted; later bytes are typed messages.
    public mutating func startupCompleted() { phase = .messages }

    public mutating func nextStartupPacket() throws(WireError) -> StartupPacket? {
        precondition(phase == .startup)
        // Checked from the length word, before the body is buffered, as PostgreSQL does.
        let limit = min(framer.maximumLength, StartupPacket.maximumLength)
        guard let packet = try framer.nextUntyped(limit: limit) else { return nil }
        return try StartupPacket.decode(packet)
    }

    public mutating func nextMessage() throws(WireError) -> FrontendMessage? {
        precondition(phase == .messages)
        guard let (type, body) = try framer.nextTyped() else { return nil }
        return try FrontendMessage.decode(type: type, body: body)
    }
}

/// Decodes what a server sends.
public struct BackendDecoder: Sendable {
    private var framer: MessageFramer

    public init(maximumLength: Int = 1 << 30) {
        framer = MessageFramer(maximumLength: maximumLength)
    }

    public var bufferedByteCount: Int { framer.bufferedByteCount }
    public mutating func append(_ bytes: UnsafeRawBufferPointer) { framer.append(bytes) }
    public mutating func append(_ bytes: [UInt8]) { framer.append(bytes) }
    public mutating func takeRemainder() -> [UInt8] { framer.takeRemainder() }

    public mutating func nextMessage() throws(WireError) -> BackendMessage? {
        guard let (type, body) = try framer.nextTyped() else { return nil }
        return try BackendMessage.decode(type: type, body: body)
    }
}
