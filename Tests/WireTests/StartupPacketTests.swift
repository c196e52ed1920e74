import Testing
import Wire

@Suite struct StartupPacketTests {
    @Test func fixturesCoverEveryStartupPacketCase() {
        #expect(Set(Fixtures.startup.map(Fixtures.caseName)).count == Fixtures.startupCaseCount)
    }

    @Test(arguments: Fixtures.startup)
    func everyStartupPacketRoundTripsThroughTheDecoder(_ packet: StartupPacket) throws {
        #expect(try decodeSingleStartup(packet.encoded()) == packet)
        let bytes = packet.encoded()
        #expect(try StartupPacket.decode(bytes[...]) == packet)
    }

    @Test func sslRequestIsTheEightByteMagicPacket() throws {
        // Int32 8, Int32 1234<<16 | 5679 = 80877103.
        let expected: [UInt8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
        #expect(StartupPacket.sslRequest.encoded() == expected)
        #expect(try decodeSingleStartup(expected) == .sslRequest)
    }

    @Test func gssEncryptionRequestIsTheEightByteMagicPacket() throws {
        // 1234<<16 | 5680 = 80877104.
        let expected: [UInt8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]
        #expect(StartupPacket.gssEncryptionRequest.encoded() == expected)
        #expect(try decodeSingleStartup(expected) == .gssEncryptionRequest)
    }

    @Test func cancelRequestWithFourByteKeyHasTheProtocol30Layout() throws {
        let packet = StartupPacket.cancelRequest(processID: 0x0102_0304, secret: [9, 8, 7, 6])
        // Int32 16, Int32 80877102 (1234<<16 | 5678), Int32 pid, 4 secret bytes.
        let expected: [UInt8] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 1, 2, 3, 4, 9, 8, 7, 6]
        #expect(packet.encoded() == expected)
        #expect(try decodeSingleStartup(expected) == packet)
    }

    @Test func cancelRequestWithThirtyTwoByteKeyRoundTrips() throws {
        let secret = (0..<32).map { UInt8(255 - $0) }
        let packet = StartupPacket.cancelRequest(processID: 31337, secret: secret)
        #expect(packet.encoded().count == 12 + 32)
        #expect(try decodeSingleStartup(packet.encoded()) == packet)
    }

    @Test func cancelRequestWithLongKeyRoundTrips() throws {
        var generator = SeededGenerator(seed: 256)
        let secret = generator.bytes(StartupPacket.maximumCancelSecretLength)
        let packet = StartupPacket.cancelRequest(processID: 99, secret: secret)
        #expect(packet.encoded().count == 12 + 256)
        #expect(try decodeSingleStartup(packet.encoded()) == packet)
    }

    @Test(arguments: [0, 1, 3, 257, 1000])
    func cancelRequestWithKeyOutsideFourTo256BytesIsRejected(_ keyLength: Int) {
        let bytes = StartupPacket.cancelRequest(processID: 1, secret: [UInt8](repeating: 7, count: keyLength)).encoded()
        let error = #expect(throws: WireError.self) { try decodeSingleStartup(bytes) }
        #expect(isMalformed(error, type: nil))
    }

    @Test func cancelRequestWithoutProcessIDIsMalformed() {
        let bytes = untypedPacket(int32Bytes(StartupPacket.cancelRequestCode) + [0, 0])
        let error = #expect(throws: WireError.self) { try decodeSingleStartup(bytes) }
        #expect(isMalformed(error, type: nil))
    }

    @Test func startupMessage30HasTheDocumentedLayout() throws {
        let message = StartupMessage(parameters: [("user", "u"), ("database", "d")])
        let expected: [UInt8] = [0, 0, 0, 27, 0, 3, 0, 0] + cString("user") + cString("u")
            + cString("database") + cString("d") + [0]
        #expect(StartupPacket.startup(message).encoded() == expected)
        #expect(try decodeSingleStartup(expected) == .startup(message))
    }

    @Test func startupMessage30WithParametersRoundTrips() throws {
        let message = StartupMessage(majorVersion: 3, minorVersion: 0, parameters: [
            ("user", "alice"), ("database", "shop"), ("application_name", "psql 18"),
            ("client_encoding", "UTF8"), ("options", "-c statement_timeout=5s"),
        ])
        let decoded = try #require(try decodeSingleStartup(StartupPacket.startup(message).encoded()))
        guard case let .startup(startup) = decoded else {
            Issue.record("expected a StartupMessage, got \(decoded)")
            return
        }
        #expect(startup == message)
        #expect(startup.majorVersion == 3 && startup.minorVersion == 0)
        #expect(startup["user"] == "alice")
        #expect(startup["database"] == "shop")
        #expect(startup["replication"] == nil)
        #expect(startup.protocolExtensionNames.isEmpty)
        #expect(startup.parameters.map(\.0) == ["user", "database", "application_name", "client_encoding", "options"])
    }

    @Test func startupMessage32WithProtocolExtensionOptionsRoundTrips() throws {
        let message = StartupMessage(majorVersion: 3, minorVersion: 2, parameters: [
            ("user", "bob"), ("_pq_.protocol_managed_params", "search_path"), ("database", "db"),
            ("_pq_.test_protocol_negotiation", ""), ("search_path", "app,public"),
        ])
        let bytes = StartupPacket.startup(message).encoded()
        #expect(Array(bytes[4..<8]) == [0, 3, 0, 2]) // 196610
        let decoded = try #require(try decodeSingleStartup(bytes))
        guard case let .startup(startup) = decoded else {
            Issue.record("expected a StartupMessage, got \(decoded)")
            return
        }
        #expect(startup == message)
        #expect(startup.minorVersion == 2)
        #expect(startup.protocolExtensionNames == ["_pq_.protocol_managed_params", "_pq_.test_protocol_negotiation"])
        #expect(startup["_pq_.test_protocol_negotiation"] == "")
        #expect(startup["search_path"] == "app,public")
    }

    @Test func greasedMinorVersionIsDecodedForNegotiationNotRejected() throws {
        // PG19 libpq greases with 3.9999; a proxy must answer NegotiateProtocolVersion, so the
        // codec has to hand the packet over rather than fail.
        var writer = ByteWriter()
        writer.beginUntypedMessage()
        writer.writeInt32(3 << 16 | 9999)
        writer.writeCString("user")
        writer.writeCString("g")
        writer.writeUInt8(0)
        writer.endMessage()
        let decoded = try decodeSingleStartup(writer.bytes)
        #expect(decoded == .startup(StartupMessage(majorVersion: 3, minorVersion: 9999, parameters: [("user", "g")])))
    }

    @Test func startupMessageWithNonASCIIParametersRoundTrips() throws {
        let message = StartupMessage(parameters: [("user", "jürgen"), ("application_name", "日本語 ✓")])
        #expect(try decodeSingleStartup(StartupPacket.startup(message).encoded()) == .startup(message))
    }

    @Test func startupPacketOfExactlyTheMaximumLengthIsAccepted() throws {
        // Header 8 + "user\0" 5 + value + NUL 1 + terminator 1 = 10000.
        let value = String(repeating: "x", count: StartupPacket.maximumLength - 8 - 5 - 1 - 1)
        let packet = StartupPacket.startup(StartupMessage(parameters: [("user", value)]))
        #expect(packet.encoded().count == StartupPacket.maximumLength)
        #expect(try decodeSingleStartup(packet.encoded()) == packet)
    }

    @Test func startupMessageEqualityRespectsParameterOrderAndValues() {
        let a = StartupMessage(parameters: [("user", "a"), ("database", "b")])
        #expect(a == StartupMessage(parameters: [("user", "a"), ("database", "b")]))
        #expect(a != StartupMessage(parameters: [("database", "b"), ("user", "a")]))
        #expect(a != StartupMessage(parameters: [("user", "a"), ("database", "c")]))
        #expect(a != StartupMessage(minorVersion: 2, parameters: [("user", "a"), ("database", "b")]))
        #expect(StartupPacket.sslRequest != .gssEncryptionRequest)
        #expect(StartupPacket.cancelRequest(processID: 1, secret: [1, 2, 3, 4])
            != .cancelRequest(processID: 1, secret: [1, 2, 3, 5]))
    }

    @Test func cancelRequestMayFollowSSLRequestOnTheSameStream() throws {
        let cancel = StartupPacket.cancelRequest(processID: 5, secret: [1, 2, 3, 4, 5, 6, 7, 8])
        var decoder = FrontendDecoder()
        decoder.append(StartupPacket.sslRequest.encoded() + cancel.encoded())
        #expect(try decoder.nextStartupPacket() == .sslRequest)
        // Bytes pipelined behind an SSLRequest are visible, so the proxy can refuse them (CVE-2021-23222).
        #expect(decoder.bufferedByteCount == cancel.encoded().count)
        #expect(try decoder.nextStartupPacket() == cancel)
        #expect(try decoder.nextStartupPacket() == nil)
        #expect(decoder.phase == .startup)
    }

    @Test func startupCompletedSwitchesToTypedMessagesAndKeepsBufferedBytes() throws {
        let startup = StartupPacket.startup(StartupMessage(parameters: [("user", "u")]))
        var decoder = FrontendDecoder()
        decoder.append(startup.encoded() + FrontendMessage.query("SELECT 1").encoded() + [ascii("S")])
        #expect(try decoder.nextStartupPacket() == startup)
        decoder.startupCompleted()
        #expect(decoder.phase == .messages)
        #expect(try decoder.nextMessage() == .query("SELECT 1"))
        #expect(try decoder.nextMessage() == nil)
        #expect(decoder.takeRemainder() == [ascii("S")])
        #expect(decoder.bufferedByteCount == 0)
    }
}
