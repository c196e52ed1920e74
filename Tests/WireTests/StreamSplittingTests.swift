import Testing
import Wire

@Suite struct StreamSplittingTests {
    static let client = Fixtures.clientSession
    static let clientBytes = Fixtures.encoded(client.startup, client.messages)
    static let expectedClient = FrontendTranscript(startupPackets: client.startup, messages: client.messages)
    static let serverBytes = Fixtures.backend.flatMap { $0.encoded() }

    @Test func wholeFrontendStreamDecodesInOneChunk() throws {
        let (transcript, decoder) = try decodeFrontend(chunks: [Self.clientBytes])
        #expect(transcript == Self.expectedClient)
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.phase == .messages)
    }

    @Test func frontendStreamSplitAtEveryOffsetDecodesIdentically() throws {
        let bytes = Self.clientBytes
        for offset in 0...bytes.count {
            let (transcript, decoder) = try decodeFrontend(chunks: split(bytes, at: offset))
            #expect(transcript == Self.expectedClient, "split at \(offset)")
            #expect(decoder.bufferedByteCount == 0, "split at \(offset)")
        }
    }

    @Test func frontendStreamFedOneByteAtATimeDecodesIdentically() throws {
        let (transcript, decoder) = try decodeFrontend(chunks: bytewise(Self.clientBytes))
        #expect(transcript == Self.expectedClient)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func frontendStreamInRandomChunksDecodesIdentically() throws {
        var generator = SeededGenerator(seed: 0xF00D)
        for iteration in 0..<300 {
            let chunks = randomChunks(Self.clientBytes, using: &generator, maxChunk: iteration % 2 == 0 ? 7 : 300)
            let (transcript, _) = try decodeFrontend(chunks: chunks)
            #expect(transcript == Self.expectedClient, "iteration \(iteration)")
        }
    }

    @Test func frontendDecoderNeverReturnsAPartialMessage() throws {
        // After each prefix, exactly the messages wholly inside the prefix have been produced.
        let bytes = Self.clientBytes
        var boundaries: [Int] = []
        var end = 0
        for packet in Self.client.startup { end += packet.encoded().count; boundaries.append(end) }
        for message in Self.client.messages { end += message.encoded().count; boundaries.append(end) }

        var decoder = FrontendDecoder()
        var transcript = FrontendTranscript()
        for (index, byte) in bytes.enumerated() {
            decoder.append([byte])
            try drainFrontend(&decoder, into: &transcript)
            let complete = boundaries.filter { $0 <= index + 1 }.count
            #expect(transcript.startupPackets.count + transcript.messages.count == complete, "after \(index + 1) bytes")
            #expect(decoder.bufferedByteCount == index + 1 - (boundaries.last { $0 <= index + 1 } ?? 0))
        }
    }

    @Test func wholeBackendStreamDecodesInOneChunk() throws {
        let (messages, decoder) = try decodeBackend(chunks: [Self.serverBytes])
        #expect(messages == Fixtures.backend)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func backendStreamSplitAtEveryOffsetDecodesIdentically() throws {
        let bytes = Self.serverBytes
        for offset in 0...bytes.count {
            let (messages, decoder) = try decodeBackend(chunks: split(bytes, at: offset))
            #expect(messages == Fixtures.backend, "split at \(offset)")
            #expect(decoder.bufferedByteCount == 0, "split at \(offset)")
        }
    }

    @Test func backendStreamFedOneByteAtATimeDecodesIdentically() throws {
        let (messages, decoder) = try decodeBackend(chunks: bytewise(Self.serverBytes))
        #expect(messages == Fixtures.backend)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func backendStreamInRandomChunksDecodesIdentically() throws {
        var generator = SeededGenerator(seed: 0xBEEF)
        for iteration in 0..<300 {
            let chunks = randomChunks(Self.serverBytes, using: &generator, maxChunk: iteration % 2 == 0 ? 7 : 300)
            let (messages, _) = try decodeBackend(chunks: chunks)
            #expect(messages == Fixtures.backend, "iteration \(iteration)")
        }
    }

    @Test func longStreamCrossingTheCompactionThresholdDecodesIdentically() throws {
        // Many messages buffered at once: the framer compacts consumed bytes as it goes and must
        // not lose or duplicate anything across compaction.
        var generator = SeededGenerator(seed: 42)
        var expected: [BackendMessage] = []
        for index in 0..<2_000 {
            let message: BackendMessage = switch index % 4 {
            case 0: .dataRow(generator.bytes(Int.random(in: 0...300, using: &generator)))
            case 1: .commandComplete("SELECT \(index)")
            case 2: .copyData(generator.bytes(Int.random(in: 0...5_000, using: &generator)))
            default: .readyForQuery(.idle)
            }
            expected.append(message)
        }
        let bytes = expected.flatMap { $0.encoded() }
        let (messages, decoder) = try decodeBackend(chunks: randomChunks(bytes, using: &generator, maxChunk: 20_000))
        #expect(messages == expected)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func directionsAreDecodedBySeparateDecodersDespiteCollidingTypeBytes() throws {
        // 'D', 'E', 'C', 'S', 'H' mean different things in each direction.
        let frontendBytes = FrontendMessage.describe(kind: .portal, name: "").encoded()
        #expect(try decodeSingleFrontend(frontendBytes) == .describe(kind: .portal, name: ""))
        let backendBytes = BackendMessage.dataRow([ascii("P"), 0]).encoded()
        #expect(frontendBytes == backendBytes)
        #expect(try decodeSingleBackend(backendBytes) == .dataRow([ascii("P"), 0]))
    }
}
