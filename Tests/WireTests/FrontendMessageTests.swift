import Testing
import Wire

@Suite struct FrontendMessageTests {
    @Test func fixturesCoverEveryFrontendCase() {
        #expect(Set(Fixtures.frontend.map(Fixtures.caseName)).count == Fixtures.frontendCaseCount)
    }

    @Test(arguments: Fixtures.frontend)
    func everyFrontendMessageRoundTripsThroughTheDecoder(_ message: FrontendMessage) throws {
        let bytes = message.encoded()
        #expect(try decodeSingleFrontend(bytes) == message)
        // The length word counts itself and the body, never the type byte.
        #expect(Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4]) == bytes.count - 1)
        #expect(FrontendMessage.isKnownType(bytes[0]))
        #expect(try FrontendMessage.decode(type: bytes[0], body: bytes[5...]) == message)
    }

    @Test func encodeIntoAppendsToAnExistingWriter() throws {
        var writer = ByteWriter()
        FrontendMessage.sync.encode(into: &writer)
        FrontendMessage.query("x").encode(into: &writer)
        #expect(writer.bytes == FrontendMessage.sync.encoded() + FrontendMessage.query("x").encoded())
    }

    @Test func typeBytesMatchTheProtocol() {
        let expected: [(FrontendMessage, Character)] = [
            (.query(""), "Q"), (.parse(name: "", query: "", parameterTypes: []), "P"),
            (.bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])), "B"),
            (.describe(kind: .portal, name: ""), "D"), (.execute(portal: "", maxRows: 0), "E"), (.sync, "S"),
            (.flush, "H"), (.close(kind: .statement, name: ""), "C"), (.copyData([]), "d"), (.copyDone, "c"),
            (.copyFail(""), "f"),
            (.functionCall(.init(functionOID: 0, argumentFormats: [], arguments: [], resultFormat: 0)), "F"),
            (.terminate, "X"), (.passwordFamily([]), "p"),
        ]
        for (message, type) in expected {
            #expect(message.encoded().first == type.asciiValue, "\(message)")
        }
        #expect(Set(expected.map { $0.1.asciiValue! }) == knownFrontendTypes)
        for byte in UInt8.min...UInt8.max {
            #expect(FrontendMessage.isKnownType(byte) == knownFrontendTypes.contains(byte))
        }
    }

    @Test func syncIsFiveBytes() {
        #expect(FrontendMessage.sync.encoded() == [ascii("S"), 0, 0, 0, 4])
        #expect(FrontendMessage.flush.encoded() == [ascii("H"), 0, 0, 0, 4])
        #expect(FrontendMessage.terminate.encoded() == [ascii("X"), 0, 0, 0, 4])
        #expect(FrontendMessage.copyDone.encoded() == [ascii("c"), 0, 0, 0, 4])
    }

    @Test func queryHasTheDocumentedLayout() throws {
        let expected: [UInt8] = [ascii("Q"), 0, 0, 0, 13] + cString("SELECT 1")
        #expect(FrontendMessage.query("SELECT 1").encoded() == expected)
        #expect(try decodeSingleFrontend(expected) == .query("SELECT 1"))
    }

    @Test func bindHasTheDocumentedLayout() throws {
        let bind = FrontendMessage.bind(.init(portal: "p", statement: "s", parameterFormats: [1],
                                              parameters: [[0xaa, 0xbb], nil], resultFormats: [0]))
        let body: [UInt8] = cString("p") + cString("s") + int16Bytes(1) + int16Bytes(1)
            + int16Bytes(2) + int32Bytes(2) + [0xaa, 0xbb] + int32Bytes(-1)
            + int16Bytes(1) + int16Bytes(0)
        #expect(bind.encoded() == typedMessage(ascii("B"), body: body))
        #expect(try decodeSingleFrontend(typedMessage(ascii("B"), body: body)) == bind)
    }

    @Test func parseHasTheDocumentedLayout() throws {
        let parse = FrontendMessage.parse(name: "s1", query: "SELECT $1", parameterTypes: [25])
        let body = cString("s1") + cString("SELECT $1") + int16Bytes(1) + int32Bytes(25)
        #expect(parse.encoded() == typedMessage(ascii("P"), body: body))
    }

    @Test func describeAndCloseCarryTheObjectKindByte() throws {
        #expect(FrontendMessage.describe(kind: .statement, name: "a").encoded()
            == typedMessage(ascii("D"), body: [ascii("S")] + cString("a")))
        #expect(FrontendMessage.close(kind: .portal, name: "b").encoded()
            == typedMessage(ascii("C"), body: [ascii("P")] + cString("b")))
    }

    @Test func bindWithNullEmptyAndBinaryParametersKeepsThemDistinct() throws {
        let bind = FrontendMessage.Bind(portal: "", statement: "s", parameterFormats: [0, 1, 1],
                                        parameters: [nil, [], [0, 0, 0, 0]], resultFormats: [])
        let decoded = try decodeSingleFrontend(FrontendMessage.bind(bind).encoded())
        guard case let .bind(roundTripped)? = decoded else {
            Issue.record("expected Bind, got \(String(describing: decoded))")
            return
        }
        #expect(roundTripped.parameters[0] == nil)
        #expect(roundTripped.parameters[1] == [])
        #expect(roundTripped.parameters[2] == [0, 0, 0, 0])
    }

    @Test func bindWithMoreThanInt16MaxParametersRoundTrips() throws {
        // Parameter counts are unsigned 16-bit on the wire: libpq and the server allow 65535.
        let count = 40_000
        let bind = FrontendMessage.bind(.init(portal: "", statement: "bulk", parameterFormats: [1],
                                              parameters: (0..<count).map { $0 % 3 == 0 ? nil : [UInt8($0 & 0xff)] },
                                              resultFormats: []))
        #expect(try decodeSingleFrontend(bind.encoded()) == bind)
    }

    @Test func parseWithTheMaximumOf65535ParameterTypesRoundTrips() throws {
        let parse = FrontendMessage.parse(name: "", query: "INSERT ...", parameterTypes: (0..<65535).map { UInt32($0) })
        #expect(try decodeSingleFrontend(parse.encoded()) == parse)
    }

    @Test func functionCallWithNullArgumentRoundTrips() throws {
        let call = FrontendMessage.functionCall(.init(functionOID: 42, argumentFormats: [0, 1],
                                                      arguments: [nil, Array("x".utf8)], resultFormat: 1))
        #expect(try decodeSingleFrontend(call.encoded()) == call)
    }

    @Test func passwordFamilyBodyIsKeptRawForTheAuthenticationState() throws {
        // SASLInitialResponse: mechanism, Int32 length (or -1), data. The codec must not interpret it.
        let initial = cString("SCRAM-SHA-256") + int32Bytes(-1)
        #expect(try decodeSingleFrontend(typedMessage(ascii("p"), body: initial)) == .passwordFamily(initial))
    }

    @Test func copyDataPreservesArbitraryBytes() throws {
        let payload = (0...255).map { UInt8($0) }
        #expect(try decodeSingleFrontend(FrontendMessage.copyData(payload).encoded()) == .copyData(payload))
    }

    @Test func messageLargerThanOneChunkArrivesWhole() throws {
        var generator = SeededGenerator(seed: 7)
        let payload = generator.bytes(200_000)
        let bytes = FrontendMessage.copyData(payload).encoded()
        var decoder = FrontendDecoder(phase: .messages)
        var offset = 0
        while offset + 8192 < bytes.count {
            decoder.append(Array(bytes[offset..<offset + 8192]))
            #expect(try decoder.nextMessage() == nil)
            offset += 8192
        }
        decoder.append(Array(bytes[offset...]))
        #expect(try decoder.nextMessage() == .copyData(payload))
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func decoderAcceptsUnsafeRawBufferPointerInput() throws {
        let bytes = FrontendMessage.query("SELECT 2").encoded() + FrontendMessage.sync.encoded()
        var decoder = FrontendDecoder(phase: .messages)
        bytes.withUnsafeBytes { decoder.append($0) }
        #expect(try decoder.nextMessage() == .query("SELECT 2"))
        #expect(try decoder.nextMessage() == .sync)
        #expect(try decoder.nextMessage() == nil)
    }
}
