import Testing
import Wire

/// One message as the scanner reports it.
struct ScanEvent: Equatable, CustomStringConvertible {
    var type: UInt8
    var body: [UInt8]?

    var description: String {
        let name = String(UnicodeScalar(type))
        guard let body else { return "\(name)(not captured)" }
        return "\(name)\(body)"
    }
}

/// Scans one chunk. (`withUnsafeBytes` does not forward typed throws, so the error is carried out.)
func scanChunk(
    _ scanner: inout MessageScanner, _ chunk: [UInt8],
    onMessage: (UInt8, ArraySlice<UInt8>?) throws(WireError) -> Void
) throws(WireError) {
    var failure: WireError?
    chunk.withUnsafeBytes { raw in
        do throws(WireError) {
            try scanner.scan(raw) { (type, body) throws(WireError) in try onMessage(type, body) }
        } catch {
            failure = error
        }
    }
    if let failure { throw failure }
}

/// Scans `chunks` in order with `scanner`, returning every reported message.
func scanEvents(_ scanner: inout MessageScanner, _ chunks: [[UInt8]]) throws(WireError) -> [ScanEvent] {
    var events: [ScanEvent] = []
    for chunk in chunks {
        try scanChunk(&scanner, chunk) { type, body in
            events.append(ScanEvent(type: type, body: body.map { Array($0) }))
        }
    }
    return events
}

/// What the scanner should report for `messages` (each a whole encoded typed message).
func expectedEvents(_ messages: [[UInt8]], interesting: Set<UInt8>, captureLimit: Int) -> [ScanEvent] {
    messages.map { bytes in
        let body = Array(bytes[5...])
        let captured = interesting.contains(bytes[0]) && body.count <= captureLimit
        return ScanEvent(type: bytes[0], body: captured ? body : nil)
    }
}

/// Offsets (from the start of the stream) at which a message ends, including 0.
func boundaries(_ messages: [[UInt8]]) -> Set<Int> {
    var result: Set<Int> = [0]
    var end = 0
    for message in messages {
        end += message.count
        result.insert(end)
    }
    return result
}

@Suite struct MessageScannerTests {
    static let interesting: [UInt8] = Array("ZEKSI1".utf8)
    static let captureLimit = 64

    /// Backend traffic with interesting messages of every size class: empty body, small, exactly
    /// at the capture limit, one over it and far over it, interleaved with uninteresting bulk.
    static let messages: [[UInt8]] = {
        var messages = Fixtures.backend.map { $0.encoded() }
        messages.append(BackendMessage.commandComplete(String(repeating: "c", count: 1_000)).encoded())
        messages.append(BackendMessage.parameterStatus(name: "x", value: String(repeating: "v", count: captureLimit - 3)).encoded())
        messages.append(BackendMessage.parameterStatus(name: "x", value: String(repeating: "v", count: captureLimit - 2)).encoded())
        messages.append(BackendMessage.errorResponse(ErrorFields(severity: .error, sqlState: "XX000",
                                                                 message: String(repeating: "m", count: 5_000))).encoded())
        messages.append(BackendMessage.copyData([UInt8](repeating: 1, count: 3_000)).encoded())
        messages.append(BackendMessage.emptyQueryResponse.encoded())
        messages.append(BackendMessage.readyForQuery(.inTransaction).encoded())
        return messages
    }()
    static let bytes = messages.flatMap { $0 }
    static let expected = expectedEvents(messages, interesting: Set(interesting), captureLimit: captureLimit)

    static func makeScanner() -> MessageScanner {
        MessageScanner(interestingTypes: interesting, captureLimit: captureLimit)
    }

    @Test func fixtureStreamExercisesEveryCaptureCase() {
        #expect(Self.expected.contains { $0.body == [] })
        #expect(Self.expected.contains { ($0.body?.count ?? 0) == Self.captureLimit })
        #expect(Self.expected.contains { $0.body == nil && Self.interesting.contains($0.type) })
        #expect(Self.expected.contains { $0.body == nil && !Self.interesting.contains($0.type) })
    }

    @Test func wholeStreamReportsEveryMessageInOrder() throws {
        var scanner = Self.makeScanner()
        #expect(try scanEvents(&scanner, [Self.bytes]) == Self.expected)
        #expect(scanner.isAtBoundary)
    }

    @Test func scannerSplitAtEveryOffsetReportsTheSameSequence() throws {
        let messageEnds = boundaries(Self.messages)
        for offset in 0...Self.bytes.count {
            var scanner = Self.makeScanner()
            let chunks = split(Self.bytes, at: offset)
            var events = try scanEvents(&scanner, [chunks[0]])
            #expect(scanner.isAtBoundary == messageEnds.contains(offset), "split at \(offset)")
            events += try scanEvents(&scanner, [chunks[1]])
            #expect(events == Self.expected, "split at \(offset)")
            #expect(scanner.isAtBoundary, "split at \(offset)")
        }
    }

    @Test func scannerFedOneByteAtATimeReportsTheSameSequenceAndBoundaries() throws {
        let messageEnds = boundaries(Self.messages)
        var scanner = Self.makeScanner()
        var events: [ScanEvent] = []
        for (index, byte) in Self.bytes.enumerated() {
            events += try scanEvents(&scanner, [[byte]])
            #expect(scanner.isAtBoundary == messageEnds.contains(index + 1), "after \(index + 1) bytes")
        }
        #expect(events == Self.expected)
    }

    @Test func scannerInRandomChunksReportsTheSameSequence() throws {
        var generator = SeededGenerator(seed: 0x5CA7)
        for iteration in 0..<300 {
            var scanner = Self.makeScanner()
            let chunks = randomChunks(Self.bytes, using: &generator, maxChunk: iteration % 2 == 0 ? 9 : 2_000)
            #expect(try scanEvents(&scanner, chunks) == Self.expected, "iteration \(iteration)")
            #expect(scanner.isAtBoundary)
        }
    }

    @Test func scannerAgreesWithTheBackendDecoder() throws {
        // The scanner's view of the stream (type and captured body) matches what a full decode of
        // the same bytes yields.
        var scanner = MessageScanner(interestingTypes: Array(knownBackendTypes), captureLimit: 1 << 20)
        let events = try scanEvents(&scanner, [Self.bytes])
        let (decoded, _) = try decodeBackend(chunks: [Self.bytes])
        #expect(events.count == decoded.count)
        for (event, message) in zip(events, decoded) {
            #expect(event.type == message.encoded()[0])
            let body = try #require(event.body)
            #expect(try BackendMessage.decode(type: event.type, body: body[...]) == message)
        }
    }

    @Test func nothingIsCapturedWhenNoTypeIsInteresting() throws {
        var scanner = MessageScanner(interestingTypes: [])
        let events = try scanEvents(&scanner, [Self.bytes])
        #expect(events.map(\.type) == Self.messages.map { $0[0] })
        #expect(events.allSatisfy { $0.body == nil })
    }

    @Test func interestingTypesAcrossAllFourBitmapWordsAreRecognised() throws {
        // Type bytes 0x00-0x3f, 0x40-0x7f, 0x80-0xbf and 0xc0-0xff land in different words; bytes
        // that share the low six bits must not alias.
        let interesting: [UInt8] = [0x05, 0x45, 0x85, 0xc5]
        var scanner = MessageScanner(interestingTypes: interesting)
        var messages: [[UInt8]] = []
        for type in [UInt8(0x05), 0x45, 0x85, 0xc5, 0x06, 0x46, 0x86, 0xc6, 0x00, 0xff, 0x3f, 0x40] {
            messages.append(typedMessage(type, body: [type]))
        }
        let events = try scanEvents(&scanner, [messages.flatMap { $0 }])
        #expect(events == expectedEvents(messages, interesting: Set(interesting), captureLimit: 512))
    }

    @Test func bodyExactlyAtTheCaptureLimitIsCapturedAndOneMoreIsNot() throws {
        var scanner = MessageScanner(interestingTypes: [ascii("Z")], captureLimit: 8)
        let atLimit = typedMessage(ascii("Z"), body: Array(1...8))
        let overLimit = typedMessage(ascii("Z"), body: Array(1...9))
        let events = try scanEvents(&scanner, [atLimit + overLimit + atLimit])
        #expect(events == [ScanEvent(type: ascii("Z"), body: Array(1...8)), ScanEvent(type: ascii("Z"), body: nil),
                           ScanEvent(type: ascii("Z"), body: Array(1...8))])
    }

    @Test func capturedBodiesDoNotLeakIntoLaterMessages() throws {
        // The capture buffer is reused; an empty-bodied interesting message after a full one must
        // report an empty body.
        var scanner = MessageScanner(interestingTypes: [ascii("S"), ascii("Z")])
        let stream = BackendMessage.parameterStatus(name: "a", value: "b").encoded()
            + typedMessage(ascii("Z"), body: []) + BackendMessage.readyForQuery(.idle).encoded()
        for chunks in [[stream], bytewise(stream)] {
            let events = try scanEvents(&scanner, chunks)
            #expect(events == [ScanEvent(type: ascii("S"), body: cString("a") + cString("b")),
                               ScanEvent(type: ascii("Z"), body: []),
                               ScanEvent(type: ascii("Z"), body: [ascii("I")])])
        }
    }

    @Test func frontendTrafficIsScannedToo() throws {
        let messages = Fixtures.frontend.map { $0.encoded() }
        let interesting = Array("QPSX".utf8)
        let expected = expectedEvents(messages, interesting: Set(interesting), captureLimit: 512)
        let bytes = messages.flatMap { $0 }
        for offset in stride(from: 0, through: bytes.count, by: 3) {
            var scanner = MessageScanner(interestingTypes: interesting)
            #expect(try scanEvents(&scanner, split(bytes, at: offset)) == expected, "split at \(offset)")
        }
    }

    @Test func emptyChunkChangesNothing() throws {
        var scanner = Self.makeScanner()
        #expect(try scanEvents(&scanner, [[]]) == [])
        #expect(scanner.isAtBoundary)
        let half = Array(Self.bytes.prefix(3))
        _ = try scanEvents(&scanner, [half, []])
        #expect(!scanner.isAtBoundary)
    }

    @Test func errorThrownByTheCallbackPropagates() {
        var scanner = Self.makeScanner()
        let thrown = WireError.malformed(type: ascii("Z"), reason: "rejected by caller")
        let error = #expect(throws: WireError.self) {
            try scanChunk(&scanner, Self.bytes) { (type, _) throws(WireError) in
                if type == ascii("Z") { throw thrown }
            }
        }
        #expect(error == thrown)
    }
}
