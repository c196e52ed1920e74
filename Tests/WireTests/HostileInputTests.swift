import Testing
import Wire

/// The outcome of feeding a stream: everything decoded before the first error, and that error.
struct Outcome<Decoded: Equatable>: Equatable {
    var decoded: Decoded
    var error: WireError?
}

func frontendOutcome(_ chunks: [[UInt8]], phase: FrontendDecoder.Phase = .startup, maximumLength: Int = 1 << 30)
    -> Outcome<FrontendTranscript> {
    var decoder = FrontendDecoder(phase: phase, maximumLength: maximumLength)
    var transcript = FrontendTranscript()
    do throws(WireError) {
        for chunk in chunks {
            decoder.append(chunk)
            try drainFrontend(&decoder, into: &transcript)
        }
    } catch {
        return Outcome(decoded: transcript, error: error)
    }
    return Outcome(decoded: transcript, error: nil)
}

func backendOutcome(_ chunks: [[UInt8]], maximumLength: Int = 1 << 30) -> Outcome<[BackendMessage]> {
    var decoder = BackendDecoder(maximumLength: maximumLength)
    var messages: [BackendMessage] = []
    do throws(WireError) {
        for chunk in chunks {
            decoder.append(chunk)
            try drainBackend(&decoder, into: &messages)
        }
    } catch {
        return Outcome(decoded: messages, error: error)
    }
    return Outcome(decoded: messages, error: nil)
}

func frontendError(_ bytes: [UInt8], phase: FrontendDecoder.Phase = .messages, maximumLength: Int = 1 << 30) -> WireError? {
    frontendOutcome([bytes], phase: phase, maximumLength: maximumLength).error
}

func backendError(_ bytes: [UInt8], maximumLength: Int = 1 << 30) -> WireError? {
    backendOutcome([bytes], maximumLength: maximumLength).error
}

@Suite struct HostileInputTests {
    // MARK: Length words

    @Test(arguments: [Int32(0), 1, 2, 3])
    func typedLengthBelowFourIsATypedError(_ length: Int32) {
        let bytes = typedHeader(ascii("Q"), length: length) + [0, 0, 0, 0]
        #expect(frontendError(bytes) == .invalidLength(type: ascii("Q"), length: length))
        #expect(backendError(bytes) == .invalidLength(type: ascii("Q"), length: length))
    }

    @Test(arguments: [Int32(-1), -4, -5, Int32.min])
    func negativeLengthIsATypedError(_ length: Int32) {
        let typed = typedHeader(ascii("D"), length: length)
        #expect(frontendError(typed) == .invalidLength(type: ascii("D"), length: length))
        #expect(backendError(typed) == .invalidLength(type: ascii("D"), length: length))
        #expect(frontendError(int32Bytes(length), phase: .startup) == .invalidLength(type: nil, length: length))
    }

    @Test(arguments: Array(Int32(0)...7))
    func startupLengthBelowEightIsATypedError(_ length: Int32) {
        let bytes = int32Bytes(length) + int32Bytes(StartupPacket.sslRequestCode)
        #expect(frontendError(bytes, phase: .startup) == .invalidLength(type: nil, length: length))
    }

    @Test func startupPacketWhoseLengthWordDisagreesWithItsSizeIsRejectedByDecode() {
        let packet = StartupPacket.sslRequest.encoded()
        #expect(throws: WireError.invalidLength(type: nil, length: 8)) { try StartupPacket.decode(packet[...] + [0]) }
        #expect(throws: WireError.invalidLength(type: nil, length: 8)) { try StartupPacket.decode(packet.prefix(7)) }
        let error = #expect(throws: WireError.self) { try StartupPacket.decode(packet.prefix(3)) }
        #expect(isMalformed(error, type: nil))
    }

    @Test func lengthOverTheFramerLimitIsATypedErrorBeforeTheBodyIsBuffered() {
        let limit = 1_024
        // Only the 5-byte header has arrived: the error must not wait for 1 KiB of body.
        let header = typedHeader(ascii("d"), length: Int32(limit + 1))
        #expect(frontendError(header, maximumLength: limit) == .oversized(type: ascii("d"), length: limit + 1, limit: limit))
        #expect(backendError(header, maximumLength: limit) == .oversized(type: ascii("d"), length: limit + 1, limit: limit))

        var decoder = BackendDecoder(maximumLength: limit)
        decoder.append(header)
        #expect(throws: WireError.oversized(type: ascii("d"), length: limit + 1, limit: limit)) { try decoder.nextMessage() }
        #expect(decoder.bufferedByteCount == 5)
    }

    @Test func lengthExactlyAtTheFramerLimitIsAccepted() throws {
        let limit = 1_024
        let message = BackendMessage.copyData([UInt8](repeating: 3, count: limit - 4))
        #expect(backendOutcome([message.encoded()], maximumLength: limit) == Outcome(decoded: [message], error: nil))
        #expect(backendOutcome([Array(message.encoded().prefix(5))], maximumLength: limit) == Outcome(decoded: [], error: nil))
    }

    @Test func maximumInt32LengthIsRejectedByTheDefaultLimits() {
        let header = typedHeader(ascii("D"), length: Int32.max)
        let expected = WireError.oversized(type: ascii("D"), length: Int(Int32.max), limit: 1 << 30)
        #expect(frontendError(header) == expected)
        #expect(backendError(header) == expected)
        #expect(frontendError(int32Bytes(Int32.max), phase: .startup)
            == .oversized(type: nil, length: Int(Int32.max), limit: StartupPacket.maximumLength))
    }

    @Test func startupPacketOverTenThousandBytesIsRejectedFromItsLengthWord() {
        // PostgreSQL rejects the length before reading the body; so must the proxy, or every
        // unauthenticated connection could make it buffer up to the framer limit.
        let header = int32Bytes(Int32(StartupPacket.maximumLength + 1)) + [0, 3, 0, 0]
        let expected = WireError.oversized(type: nil, length: StartupPacket.maximumLength + 1, limit: StartupPacket.maximumLength)
        #expect(frontendError(header, phase: .startup) == expected)
        #expect(frontendError(Array(header.prefix(4)), phase: .startup) == expected)

        var decoder = FrontendDecoder()
        decoder.append(header)
        #expect(throws: expected) { try decoder.nextStartupPacket() }
        #expect(decoder.bufferedByteCount == 8)
    }

    @Test func wholeStartupPacketOverTenThousandBytesIsRejected() {
        let value = String(repeating: "x", count: StartupPacket.maximumLength)
        let bytes = StartupPacket.startup(StartupMessage(parameters: [("user", value)])).encoded()
        #expect(frontendError(bytes, phase: .startup)
            == .oversized(type: nil, length: bytes.count, limit: StartupPacket.maximumLength))
    }

    @Test func startupPacketRespectsASmallerFramerLimit() {
        let bytes = StartupPacket.startup(StartupMessage(parameters: [("user", String(repeating: "u", count: 200))])).encoded()
        #expect(frontendError(bytes, phase: .startup, maximumLength: 100)
            == .oversized(type: nil, length: bytes.count, limit: 100))
    }

    // MARK: Truncated bodies

    @Test func bindWhoseParameterLengthExceedsTheBodyIsMalformed() {
        let body = cString("") + cString("s") + int16Bytes(0) + int16Bytes(1) + int32Bytes(100) + [1, 2, 3] + int16Bytes(0)
        #expect(isMalformed(frontendError(typedMessage(ascii("B"), body: body)), type: ascii("B")))
    }

    @Test func bindWithNegativeParameterLengthOtherThanNullIsMalformed() {
        let body = cString("") + cString("") + int16Bytes(0) + int16Bytes(1) + int32Bytes(-2) + int16Bytes(0)
        #expect(isMalformed(frontendError(typedMessage(ascii("B"), body: body)), type: ascii("B")))
    }

    @Test func bindWithMoreFormatsOrParametersThanPresentIsMalformed() {
        let formats = cString("") + cString("") + int16Bytes(3) + int16Bytes(0)
        #expect(isMalformed(frontendError(typedMessage(ascii("B"), body: formats)), type: ascii("B")))
        let values = cString("") + cString("") + int16Bytes(0) + int16Bytes(-1) + int32Bytes(-1)
        #expect(isMalformed(frontendError(typedMessage(ascii("B"), body: values)), type: ascii("B")))
        let noResultFormats = cString("") + cString("") + int16Bytes(0) + int16Bytes(0)
        #expect(isMalformed(frontendError(typedMessage(ascii("B"), body: noResultFormats)), type: ascii("B")))
    }

    @Test func everyTruncationOfEveryFixtureEitherDecodesOrIsATypedError() {
        // Cut the body short but keep the length word honest: this walks every field boundary.
        for message in Fixtures.frontend {
            let bytes = message.encoded()
            for cut in 0..<(bytes.count - 5) {
                let truncated = typedMessage(bytes[0], body: Array(bytes[5..<(5 + cut)]))
                if case let .unknownType(type)? = frontendError(truncated) { Issue.record("unexpected unknown type \(type)") }
            }
        }
        for message in Fixtures.backend {
            let bytes = message.encoded()
            for cut in 0..<(bytes.count - 5) {
                let truncated = typedMessage(bytes[0], body: Array(bytes[5..<(5 + cut)]))
                if case let .unknownType(type)? = backendError(truncated) { Issue.record("unexpected unknown type \(type)") }
            }
        }
        for packet in Fixtures.startup {
            let bytes = packet.encoded()
            for cut in 4..<(bytes.count - 4) {
                _ = frontendError(untypedPacket(Array(bytes[4..<(4 + cut)])), phase: .startup)
            }
        }
    }

    @Test func fixedLayoutMessagesTruncatedAnywhereAreMalformed() {
        let messages: [FrontendMessage] = [
            .parse(name: "n", query: "q", parameterTypes: [1, 2]),
            .bind(.init(portal: "p", statement: "s", parameterFormats: [1], parameters: [[1], nil], resultFormats: [1])),
            .describe(kind: .statement, name: "n"), .execute(portal: "p", maxRows: 5), .close(kind: .portal, name: "p"),
            .query("q"), .copyFail("x"),
            .functionCall(.init(functionOID: 1, argumentFormats: [0], arguments: [[1]], resultFormat: 0)),
        ]
        for message in messages {
            let bytes = message.encoded()
            for cut in 0..<(bytes.count - 5) {
                let truncated = typedMessage(bytes[0], body: Array(bytes[5..<(5 + cut)]))
                #expect(isMalformed(frontendError(truncated), type: bytes[0]), "\(message) cut to \(cut)")
            }
        }
        let backend: [BackendMessage] = [
            .authentication(.md5Password(salt: [1, 2, 3, 4])), .authentication(.sasl(mechanisms: ["SCRAM-SHA-256"])),
            .parameterStatus(name: "a", value: "b"), .backendKeyData(processID: 1, secret: [1, 2, 3, 4]),
            .readyForQuery(.idle), .commandComplete("x"),
            .errorResponse(ErrorFields(severity: .error, sqlState: "XX000", message: "m")),
            .parameterDescription([1, 2]), .notification(processID: 1, channel: "c", payload: "p"),
            .negotiateProtocolVersion(newestVersion: 0, unsupportedOptions: ["_pq_.x"]), .functionCallResponse([1, 2]),
        ]
        for message in backend {
            let bytes = message.encoded()
            for cut in 0..<(bytes.count - 5) {
                let truncated = typedMessage(bytes[0], body: Array(bytes[5..<(5 + cut)]))
                #expect(isMalformed(backendError(truncated), type: bytes[0]), "\(message) cut to \(cut)")
            }
        }
    }

    @Test func functionCallResponseWithBadValueLengthIsMalformed() {
        #expect(isMalformed(backendError(typedMessage(ascii("V"), body: int32Bytes(10) + [1])), type: ascii("V")))
        #expect(isMalformed(backendError(typedMessage(ascii("V"), body: int32Bytes(-2))), type: ascii("V")))
        #expect(isMalformed(backendError(typedMessage(ascii("V"), body: int32Bytes(Int32.min))), type: ascii("V")))
    }

    @Test func describeOrCloseWithUnknownObjectKindIsMalformed() {
        #expect(isMalformed(frontendError(typedMessage(ascii("D"), body: [ascii("X")] + cString("n"))), type: ascii("D")))
        #expect(isMalformed(frontendError(typedMessage(ascii("C"), body: [0] + cString("n"))), type: ascii("C")))
    }

    @Test func hugeCountsWithLittleDataAreMalformedNotAllocated() {
        let parse = cString("") + cString("q") + [0xff, 0xff]
        #expect(isMalformed(frontendError(typedMessage(ascii("P"), body: parse)), type: ascii("P")))
        let description = [UInt8]([0xff, 0xff]) + int32Bytes(23)
        #expect(isMalformed(backendError(typedMessage(ascii("t"), body: description)), type: ascii("t")))
        let options = int32Bytes(0) + int32Bytes(-1)
        #expect(isMalformed(backendError(typedMessage(ascii("v"), body: options)), type: ascii("v")))
    }

    // MARK: Unknown types, terminators, trailing bytes, versions

    @Test func unknownFrontendTypeBytesAreTypedErrors() {
        for type in UInt8.min...UInt8.max where !knownFrontendTypes.contains(type) {
            #expect(frontendError(typedMessage(type, body: [])) == .unknownType(type))
            #expect(throws: WireError.unknownType(type)) { try FrontendMessage.decode(type: type, body: [1, 2, 3]) }
        }
    }

    @Test func unknownBackendTypeBytesAreTypedErrors() {
        for type in UInt8.min...UInt8.max where !knownBackendTypes.contains(type) {
            #expect(backendError(typedMessage(type, body: [])) == .unknownType(type))
            #expect(throws: WireError.unknownType(type)) { try BackendMessage.decode(type: type, body: [1, 2, 3]) }
        }
    }

    @Test func backendOnlyTypesAreUnknownToTheFrontendDecoder() {
        // 'Z' and 'R' are never sent by a client.
        #expect(frontendError(BackendMessage.readyForQuery(.idle).encoded()) == .unknownType(ascii("Z")))
        #expect(frontendError(BackendMessage.authentication(.ok).encoded()) == .unknownType(ascii("R")))
        #expect(backendError(FrontendMessage.query("x").encoded()) == .unknownType(ascii("Q")))
    }

    @Test func missingNULTerminatorsAreMalformed() {
        let frontend: [(UInt8, [UInt8])] = [
            (ascii("Q"), Array("SELECT 1".utf8)),
            (ascii("P"), Array("name".utf8)),
            (ascii("P"), cString("n") + Array("SELECT".utf8)),
            (ascii("B"), Array("portal".utf8)),
            (ascii("D"), [ascii("S")] + Array("stmt".utf8)),
            (ascii("C"), [ascii("P")] + Array("portal".utf8)),
            (ascii("E"), Array("portal".utf8)),
            (ascii("f"), Array("reason".utf8)),
        ]
        for (type, body) in frontend {
            #expect(isMalformed(frontendError(typedMessage(type, body: body)), type: type), "\(type)")
        }
        let backend: [(UInt8, [UInt8])] = [
            (ascii("S"), Array("server_version".utf8)),
            (ascii("S"), cString("server_version") + Array("18".utf8)),
            (ascii("C"), Array("SELECT 1".utf8)),
            (ascii("E"), [ascii("S")] + Array("ERROR".utf8)),
            (ascii("E"), [ascii("S")] + cString("ERROR")), // no final field terminator
            (ascii("N"), []),
            (ascii("R"), int32Bytes(10) + cString("SCRAM-SHA-256")), // no empty name ending the list
            (ascii("R"), int32Bytes(10) + Array("SCRAM-SHA-256".utf8)),
            (ascii("A"), int32Bytes(1) + Array("channel".utf8)),
            (ascii("A"), int32Bytes(1) + cString("channel") + Array("payload".utf8)),
            (ascii("v"), int32Bytes(0) + int32Bytes(1) + Array("_pq_.x".utf8)),
        ]
        for (type, body) in backend {
            #expect(isMalformed(backendError(typedMessage(type, body: body)), type: type), "\(type) \(body)")
        }
        let version = int32Bytes(3 << 16)
        let startup: [[UInt8]] = [
            version + Array("user".utf8),
            version + cString("user") + Array("alice".utf8),
            version + cString("user") + cString("alice"), // no final terminator
            version,
        ]
        for body in startup {
            #expect(isMalformed(frontendError(untypedPacket(body), phase: .startup), type: nil), "\(body)")
        }
    }

    @Test func trailingBytesAreMalformed() {
        let frontend: [[UInt8]] = [
            typedMessage(ascii("S"), body: [0]),
            typedMessage(ascii("H"), body: [1, 2]),
            typedMessage(ascii("X"), body: [0]),
            typedMessage(ascii("c"), body: [0]),
            typedMessage(ascii("Q"), body: cString("SELECT 1") + [ascii("x")]),
            typedMessage(ascii("E"), body: cString("") + int32Bytes(0) + [0]),
            typedMessage(ascii("D"), body: [ascii("S")] + cString("n") + [0]),
            typedMessage(ascii("f"), body: cString("a") + cString("b")),
            typedMessage(ascii("P"), body: cString("") + cString("q") + int16Bytes(1) + int32Bytes(1) + [9]),
        ]
        for bytes in frontend {
            #expect(isMalformed(frontendError(bytes), type: bytes[0]), "\(bytes)")
        }
        let backend: [[UInt8]] = [
            typedMessage(ascii("Z"), body: [ascii("I"), ascii("I")]),
            typedMessage(ascii("R"), body: int32Bytes(0) + [0]),
            typedMessage(ascii("R"), body: int32Bytes(3) + [0]),
            typedMessage(ascii("R"), body: int32Bytes(10) + cString("SCRAM-SHA-256") + [0, 0]),
            typedMessage(ascii("1"), body: [0]),
            typedMessage(ascii("I"), body: [0]),
            typedMessage(ascii("n"), body: [0]),
            typedMessage(ascii("s"), body: [0]),
            typedMessage(ascii("c"), body: [0]),
            typedMessage(ascii("E"), body: [0, 0]),
            typedMessage(ascii("C"), body: cString("SELECT 1") + [0]),
            typedMessage(ascii("S"), body: cString("a") + cString("b") + cString("c")),
            typedMessage(ascii("t"), body: int16Bytes(0) + [0]),
            typedMessage(ascii("v"), body: int32Bytes(0) + int32Bytes(0) + cString("_pq_.extra")),
            typedMessage(ascii("V"), body: int32Bytes(1) + [1, 2]),
            typedMessage(ascii("A"), body: int32Bytes(1) + cString("c") + cString("p") + [0]),
        ]
        for bytes in backend {
            #expect(isMalformed(backendError(bytes), type: bytes[0]), "\(bytes)")
        }
        let startup: [[UInt8]] = [
            untypedPacket(int32Bytes(StartupPacket.sslRequestCode) + int32Bytes(0)),
            untypedPacket(int32Bytes(StartupPacket.gssEncryptionRequestCode) + [0]),
            untypedPacket(int32Bytes(3 << 16) + cString("user") + cString("u") + [0, 0]),
            untypedPacket(int32Bytes(3 << 16) + cString("user") + cString("u") + [0] + [ascii("x")]),
        ]
        for bytes in startup {
            #expect(isMalformed(frontendError(bytes, phase: .startup), type: nil), "\(bytes)")
        }
    }

    @Test(arguments: [(0, 0), (1, 0), (2, 0), (4, 0), (65535, 65535), (1234, 5677), (1234, 5681)])
    func unknownProtocolMajorVersionIsATypedError(_ major: Int, _ minor: Int) {
        let code = Int32(bitPattern: UInt32(major) << 16 | UInt32(minor))
        let bytes = untypedPacket(int32Bytes(code) + cString("user") + cString("u") + [0])
        #expect(frontendError(bytes, phase: .startup) == .unsupportedProtocol(major: major, minor: minor))
    }

    @Test func errorDescriptionsNameTheProblem() {
        #expect(WireError.invalidLength(type: ascii("Q"), length: -1).description == "invalid message length -1 (type 'Q')")
        #expect(WireError.invalidLength(type: nil, length: 3).description == "invalid message length 3 (startup packet)")
        #expect(WireError.oversized(type: 0x01, length: 20, limit: 10).description
            == "message of 20 bytes exceeds the limit of 10 bytes (type 0x1)")
        #expect(WireError.unknownType(ascii("?")).description == "unknown message type '?'")
        #expect(WireError.unknownType(0x20).description == "unknown message type 0x20")
        #expect(WireError.malformed(type: nil, reason: "r").description == "malformed message (startup packet): r")
        #expect(WireError.unsupportedProtocol(major: 4, minor: 0).description.contains("4.0"))
    }

    // MARK: Random input

    @Test func randomGarbageNeverCrashesAndChunkingNeverChangesTheOutcome() {
        var generator = SeededGenerator(seed: 0xDEC0DE)
        for iteration in 0..<3_000 {
            let bytes = generator.bytes(Int.random(in: 0...200, using: &generator))
            let chunks = randomChunks(bytes, using: &generator, maxChunk: 16)
            let limit = 4_096

            let startup = frontendOutcome([bytes], phase: .startup, maximumLength: limit)
            #expect(frontendOutcome(chunks, phase: .startup, maximumLength: limit) == startup, "iteration \(iteration)")
            let messages = frontendOutcome([bytes], phase: .messages, maximumLength: limit)
            #expect(frontendOutcome(chunks, phase: .messages, maximumLength: limit) == messages, "iteration \(iteration)")
            let backend = backendOutcome([bytes], maximumLength: limit)
            #expect(backendOutcome(chunks, maximumLength: limit) == backend, "iteration \(iteration)")
        }
    }

    @Test func randomBodiesBehindHonestHeadersNeverCrash() throws {
        // Garbage with valid framing reaches every body parser.
        var generator = SeededGenerator(seed: 0xB0D1E5)
        let frontendTypes = Array(knownFrontendTypes).sorted()
        let backendTypes = Array(knownBackendTypes).sorted()
        for _ in 0..<3_000 {
            let body = generator.bytes(Int.random(in: 0...48, using: &generator))
            let frontendType = frontendTypes.randomElement(using: &generator)!
            let backendType = backendTypes.randomElement(using: &generator)!
            if let message = try? FrontendMessage.decode(type: frontendType, body: body[...]) {
                // Whatever decodes re-encodes to something that decodes to the same value.
                #expect(try decodeSingleFrontend(message.encoded()) == message)
            }
            if let message = try? BackendMessage.decode(type: backendType, body: body[...]) {
                #expect(try decodeSingleBackend(message.encoded()) == message)
            }
            let code: Int32 = [StartupPacket.cancelRequestCode, StartupPacket.sslRequestCode,
                        StartupPacket.gssEncryptionRequestCode, 3 << 16, 3 << 16 | 2].randomElement(using: &generator)!
            if let packet = try? StartupPacket.decode(untypedPacket(int32Bytes(code) + body)[...]) {
                #expect(try decodeSingleStartup(packet.encoded()) == packet)
            }
        }
    }

    @Test func mutatedValidStreamsNeverCrash() {
        var generator = SeededGenerator(seed: 0x0BAD_F00D)
        let client = Fixtures.clientSession
        let clientBytes = Fixtures.encoded(client.startup, client.messages)
        let serverBytes = Fixtures.backend.flatMap { $0.encoded() }
        for iteration in 0..<2_000 {
            var frontend = clientBytes
            var backend = serverBytes
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                frontend[Int.random(in: 0..<frontend.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                backend[Int.random(in: 0..<backend.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            let limit = 1 << 16
            let frontendChunks = randomChunks(frontend, using: &generator, maxChunk: 64)
            #expect(frontendOutcome(frontendChunks, maximumLength: limit) == frontendOutcome([frontend], maximumLength: limit),
                    "iteration \(iteration)")
            let backendChunks = randomChunks(backend, using: &generator, maxChunk: 64)
            #expect(backendOutcome(backendChunks, maximumLength: limit) == backendOutcome([backend], maximumLength: limit),
                    "iteration \(iteration)")
        }
    }
}
