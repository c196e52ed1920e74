import Testing
import Wire

// Shared helpers for the Wire tests: a seeded generator, stream drivers that pull every message
// out of a decoder, and ways to cut a byte stream into chunks.

/// SplitMix64: small, fast and fully deterministic, so a failing fuzz iteration can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }
}

/// Everything a client sent, in order: startup-family packets first, then typed messages.
struct FrontendTranscript: Equatable {
    var startupPackets: [StartupPacket] = []
    var messages: [FrontendMessage] = []
}

/// Drives a FrontendDecoder the way a connection would: pull startup packets until the
/// StartupMessage itself, switch phase, then pull typed messages.
func drainFrontend(_ decoder: inout FrontendDecoder, into transcript: inout FrontendTranscript) throws(WireError) {
    while true {
        switch decoder.phase {
        case .startup:
            guard let packet = try decoder.nextStartupPacket() else { return }
            transcript.startupPackets.append(packet)
            if case .startup = packet { decoder.startupCompleted() }
        case .messages:
            guard let message = try decoder.nextMessage() else { return }
            transcript.messages.append(message)
        }
    }
}

func drainBackend(_ decoder: inout BackendDecoder, into messages: inout [BackendMessage]) throws(WireError) {
    while let message = try decoder.nextMessage() {
        messages.append(message)
    }
}

/// Feeds `chunks` one after another into a fresh frontend decoder (startup phase).
func decodeFrontend(chunks: [[UInt8]], maximumLength: Int = 1 << 30) throws(WireError) -> (FrontendTranscript, FrontendDecoder) {
    var decoder = FrontendDecoder(maximumLength: maximumLength)
    var transcript = FrontendTranscript()
    for chunk in chunks {
        decoder.append(chunk)
        try drainFrontend(&decoder, into: &transcript)
    }
    return (transcript, decoder)
}

func decodeBackend(chunks: [[UInt8]], maximumLength: Int = 1 << 30) throws(WireError) -> ([BackendMessage], BackendDecoder) {
    var decoder = BackendDecoder(maximumLength: maximumLength)
    var messages: [BackendMessage] = []
    for chunk in chunks {
        decoder.append(chunk)
        try drainBackend(&decoder, into: &messages)
    }
    return (messages, decoder)
}

/// Decodes exactly one typed frontend message that must fill `bytes` completely.
func decodeSingleFrontend(_ bytes: [UInt8]) throws(WireError) -> FrontendMessage? {
    var decoder = FrontendDecoder(phase: .messages)
    decoder.append(bytes)
    let message = try decoder.nextMessage()
    #expect(decoder.bufferedByteCount == 0)
    return message
}

/// Decodes exactly one backend message that must fill `bytes` completely.
func decodeSingleBackend(_ bytes: [UInt8]) throws(WireError) -> BackendMessage? {
    var decoder = BackendDecoder()
    decoder.append(bytes)
    let message = try decoder.nextMessage()
    #expect(decoder.bufferedByteCount == 0)
    return message
}

/// Decodes exactly one startup-family packet through the decoder (not just `StartupPacket.decode`).
func decodeSingleStartup(_ bytes: [UInt8]) throws(WireError) -> StartupPacket? {
    var decoder = FrontendDecoder()
    decoder.append(bytes)
    let packet = try decoder.nextStartupPacket()
    #expect(decoder.bufferedByteCount == 0)
    return packet
}

/// Two chunks cut at `offset`.
func split(_ bytes: [UInt8], at offset: Int) -> [[UInt8]] {
    [Array(bytes[..<offset]), Array(bytes[offset...])]
}

/// One chunk per byte.
func bytewise(_ bytes: [UInt8]) -> [[UInt8]] {
    bytes.map { [$0] }
}

/// Chunks of random sizes (including empty ones) covering `bytes` in order.
func randomChunks(_ bytes: [UInt8], using generator: inout SeededGenerator, maxChunk: Int = 64) -> [[UInt8]] {
    var chunks: [[UInt8]] = []
    var index = 0
    while index < bytes.count {
        let size = Int.random(in: 0...maxChunk, using: &generator)
        let end = min(bytes.count, index + size)
        chunks.append(Array(bytes[index..<end]))
        index = end
    }
    return chunks
}

/// A typed message header: type byte and a raw length word (which may lie).
func typedHeader(_ type: UInt8, length: Int32) -> [UInt8] {
    var writer = ByteWriter()
    writer.writeUInt8(type)
    writer.writeInt32(length)
    return writer.bytes
}

/// A typed message whose length word is computed honestly from `body`.
func typedMessage(_ type: UInt8, body: [UInt8]) -> [UInt8] {
    typedHeader(type, length: Int32(body.count + 4)) + body
}

/// An untyped (startup-family) packet whose length word is computed honestly from `body`.
func untypedPacket(_ body: [UInt8]) -> [UInt8] {
    var writer = ByteWriter()
    writer.writeInt32(Int32(body.count + 4))
    writer.writeBytes(body)
    return writer.bytes
}

func int32Bytes(_ value: Int32) -> [UInt8] {
    var writer = ByteWriter()
    writer.writeInt32(value)
    return writer.bytes
}

func int16Bytes(_ value: Int16) -> [UInt8] {
    var writer = ByteWriter()
    writer.writeInt16(value)
    return writer.bytes
}

func cString(_ text: String) -> [UInt8] {
    Array(text.utf8) + [0]
}

func ascii(_ character: Unicode.Scalar) -> UInt8 {
    UInt8(character.value)
}

/// True when `error` is `.malformed` for the given message type (nil: startup packet).
func isMalformed(_ error: WireError?, type: UInt8?) -> Bool {
    if case let .malformed(errorType, _)? = error { return errorType == type }
    return false
}

/// Every backend type byte the protocol defines, written out independently of `BackendMessage`.
let knownBackendTypes: Set<UInt8> = Set("R S K Z T D C I E N 1 2 3 t n s G H W d c A v V"
    .split(separator: " ").map { $0.utf8.first! })

/// Every frontend type byte the protocol defines for the messages phase.
let knownFrontendTypes: Set<UInt8> = Set("Q P B D E S H C d c f F X p"
    .split(separator: " ").map { $0.utf8.first! })
