import Testing
import Wire

@Suite struct BackendMessageTests {
    @Test func fixturesCoverEveryBackendCase() {
        #expect(Set(Fixtures.backend.map(Fixtures.caseName)).count == Fixtures.backendCaseCount)
        let authentication = Fixtures.backend.compactMap { message -> AuthenticationRequest? in
            if case let .authentication(request) = message { return request }
            return nil
        }
        #expect(Set(authentication.map(Fixtures.caseName)).count == Fixtures.authenticationCaseCount)
    }

    @Test(arguments: Fixtures.backend)
    func everyBackendMessageRoundTripsThroughTheDecoder(_ message: BackendMessage) throws {
        let bytes = message.encoded()
        #expect(try decodeSingleBackend(bytes) == message)
        #expect(Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4]) == bytes.count - 1)
        #expect(knownBackendTypes.contains(bytes[0]))
        #expect(try BackendMessage.decode(type: bytes[0], body: bytes[5...]) == message)
    }

    @Test func typeBytesMatchTheProtocol() {
        let fields = ErrorFields(fields: [])
        let expected: [(BackendMessage, Character)] = [
            (.authentication(.ok), "R"), (.parameterStatus(name: "a", value: "b"), "S"),
            (.backendKeyData(processID: 1, secret: [1, 2, 3, 4]), "K"), (.readyForQuery(.idle), "Z"),
            (.rowDescription([]), "T"), (.dataRow([]), "D"), (.commandComplete(""), "C"),
            (.emptyQueryResponse, "I"), (.errorResponse(fields), "E"), (.noticeResponse(fields), "N"),
            (.parseComplete, "1"), (.bindComplete, "2"), (.closeComplete, "3"), (.parameterDescription([]), "t"),
            (.noData, "n"), (.portalSuspended, "s"), (.copyInResponse([]), "G"), (.copyOutResponse([]), "H"),
            (.copyBothResponse([]), "W"), (.copyData([]), "d"), (.copyDone, "c"),
            (.notification(processID: 0, channel: "", payload: ""), "A"),
            (.negotiateProtocolVersion(newestVersion: 0, unsupportedOptions: []), "v"), (.functionCallResponse(nil), "V"),
        ]
        for (message, type) in expected {
            #expect(message.encoded().first == type.asciiValue, "\(message)")
        }
        #expect(Set(expected.map { $0.1.asciiValue! }) == knownBackendTypes)
    }

    // MARK: Authentication

    @Test func authenticationOkIsCodeZero() throws {
        let expected: [UInt8] = [ascii("R"), 0, 0, 0, 8, 0, 0, 0, 0]
        #expect(BackendMessage.authentication(.ok).encoded() == expected)
        #expect(try decodeSingleBackend(expected) == .authentication(.ok))
    }

    @Test func authenticationCleartextPasswordIsCodeThree() throws {
        let expected = typedMessage(ascii("R"), body: int32Bytes(3))
        #expect(BackendMessage.authentication(.cleartextPassword).encoded() == expected)
        #expect(try decodeSingleBackend(expected) == .authentication(.cleartextPassword))
    }

    @Test func authenticationMD5CarriesAFourByteSalt() throws {
        let expected = typedMessage(ascii("R"), body: int32Bytes(5) + [0xca, 0xfe, 0xba, 0xbe])
        #expect(BackendMessage.authentication(.md5Password(salt: [0xca, 0xfe, 0xba, 0xbe])).encoded() == expected)
        #expect(try decodeSingleBackend(expected) == .authentication(.md5Password(salt: [0xca, 0xfe, 0xba, 0xbe])))
    }

    @Test func authenticationMD5WithShortOrLongSaltIsMalformed() {
        for salt in [[UInt8](), [1, 2, 3], [1, 2, 3, 4, 5]] {
            let error = #expect(throws: WireError.self) {
                try decodeSingleBackend(typedMessage(ascii("R"), body: int32Bytes(5) + salt))
            }
            #expect(isMalformed(error, type: ascii("R")))
        }
    }

    @Test func authenticationSASLListsMechanismsThenAnEmptyName() throws {
        let expected = typedMessage(ascii("R"), body: int32Bytes(10) + cString("SCRAM-SHA-256-PLUS")
            + cString("SCRAM-SHA-256") + [0])
        let message = BackendMessage.authentication(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
        #expect(message.encoded() == expected)
        #expect(try decodeSingleBackend(expected) == message)
    }

    @Test func authenticationSASLWithEmptyMechanismListRoundTrips() throws {
        let message = BackendMessage.authentication(.sasl(mechanisms: []))
        #expect(message.encoded() == typedMessage(ascii("R"), body: int32Bytes(10) + [0]))
        #expect(try decodeSingleBackend(message.encoded()) == message)
    }

    @Test func authenticationSASLContinueAndFinalCarryTheRestOfTheBody() throws {
        let serverFirst = Array("r=abcdef,s=QSXCR+Q6sek8bf92,i=4096".utf8)
        let continueBytes = typedMessage(ascii("R"), body: int32Bytes(11) + serverFirst)
        #expect(BackendMessage.authentication(.saslContinue(serverFirst)).encoded() == continueBytes)
        #expect(try decodeSingleBackend(continueBytes) == .authentication(.saslContinue(serverFirst)))

        let serverFinal = Array("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".utf8)
        let finalBytes = typedMessage(ascii("R"), body: int32Bytes(12) + serverFinal)
        #expect(BackendMessage.authentication(.saslFinal(serverFinal)).encoded() == finalBytes)
        #expect(try decodeSingleBackend(finalBytes) == .authentication(.saslFinal(serverFinal)))
    }

    @Test(arguments: [Int32(2), 6, 7, 9, 13, 99, -1])
    func authenticationMethodsTheProxyDoesNotSpeakDecodeAsUnsupported(_ code: Int32) throws {
        #expect(try decodeSingleBackend(typedMessage(ascii("R"), body: int32Bytes(code))) == .authentication(.unsupported(code: code)))
        #expect(try decodeSingleBackend(BackendMessage.authentication(.unsupported(code: code)).encoded())
            == .authentication(.unsupported(code: code)))
    }

    @Test func authenticationGSSContinueWithDataDecodesAsUnsupported() throws {
        let bytes = typedMessage(ascii("R"), body: int32Bytes(8) + [1, 2, 3, 4, 5])
        #expect(try decodeSingleBackend(bytes) == .authentication(.unsupported(code: 8)))
    }

    @Test func authenticationWithoutCodeIsMalformed() {
        let error = #expect(throws: WireError.self) { try decodeSingleBackend(typedMessage(ascii("R"), body: [0, 0])) }
        #expect(isMalformed(error, type: ascii("R")))
    }

    // MARK: Errors and notices

    @Test func errorResponseWithSQLStateRoundTripsAndExposesFields() throws {
        let fields = ErrorFields(severity: .fatal, sqlState: SQLState.tooManyConnections,
                                 message: "sorry, too many clients already", detail: "d", hint: "h")
        let decoded = try decodeSingleBackend(BackendMessage.errorResponse(fields).encoded())
        guard case let .errorResponse(roundTripped)? = decoded else {
            Issue.record("expected ErrorResponse, got \(String(describing: decoded))")
            return
        }
        #expect(roundTripped == fields)
        #expect(roundTripped.sqlState == "53300")
        #expect(roundTripped.severity == "FATAL")
        #expect(roundTripped.message == "sorry, too many clients already")
        #expect(roundTripped[ErrorFields.FieldCode.detail] == "d")
        #expect(roundTripped[ErrorFields.FieldCode.hint] == "h")
        #expect(roundTripped.fields.map(\.code) == Array("SVCMDH".utf8))
    }

    @Test func errorResponseWithoutSQLStateRoundTripsWithNilSQLState() throws {
        // PgBouncer CVE-2026-6666: an ErrorResponse without 'C' must not be assumed to have one.
        let fields = ErrorFields(fields: [(ascii("S"), "ERROR"), (ascii("M"), "boom")])
        let bytes = typedMessage(ascii("E"), body: [ascii("S")] + cString("ERROR") + [ascii("M")] + cString("boom") + [0])
        #expect(BackendMessage.errorResponse(fields).encoded() == bytes)
        let decoded = try decodeSingleBackend(bytes)
        guard case let .errorResponse(roundTripped)? = decoded else {
            Issue.record("expected ErrorResponse, got \(String(describing: decoded))")
            return
        }
        #expect(roundTripped == fields)
        #expect(roundTripped.sqlState == nil)
        #expect(roundTripped.message == "boom")
        #expect(roundTripped.severity == "ERROR")
    }

    @Test func errorResponseWithNoFieldsAtAllRoundTrips() throws {
        let bytes = typedMessage(ascii("E"), body: [0])
        #expect(try decodeSingleBackend(bytes) == .errorResponse(ErrorFields(fields: [])))
        #expect(ErrorFields(fields: []).sqlState == nil)
        #expect(ErrorFields(fields: []).message == nil)
        #expect(ErrorFields(fields: []).severity == nil)
    }

    @Test func nonLocalizedSeverityWinsOverLocalized() {
        let fields = ErrorFields(fields: [(ascii("S"), "FEHLER"), (ascii("V"), "ERROR")])
        #expect(fields.severity == "ERROR")
        #expect(ErrorFields(fields: [(ascii("S"), "FEHLER")]).severity == "FEHLER")
    }

    @Test func unknownErrorFieldCodesArePreserved() throws {
        let fields = ErrorFields(fields: [(ascii("q"), "internal query"), (ascii("~"), "future field"), (ascii("C"), "XX000")])
        #expect(try decodeSingleBackend(BackendMessage.noticeResponse(fields).encoded()) == .noticeResponse(fields))
        #expect(fields.sqlState == "XX000")
    }

    @Test func proxyRaisedErrorHasSeverityCodeAndMessageInOrder() {
        let fields = ErrorFields(severity: .error, sqlState: SQLState.readOnlyTransaction, message: "read only")
        #expect(fields.fields.map(\.code) == Array("SVCM".utf8))
        #expect(fields.fields.map(\.value) == ["ERROR", "ERROR", "25006", "read only"])
    }

    @Test func errorFieldsEqualityIsOrderSensitive() {
        let a = ErrorFields(fields: [(ascii("S"), "ERROR"), (ascii("C"), "1")])
        #expect(a == ErrorFields(fields: [(ascii("S"), "ERROR"), (ascii("C"), "1")]))
        #expect(a != ErrorFields(fields: [(ascii("C"), "1"), (ascii("S"), "ERROR")]))
        #expect(a != ErrorFields(fields: [(ascii("S"), "ERROR")]))
    }

    // MARK: Session setup

    @Test func backendKeyDataWithFourByteSecretHasTheProtocol30Layout() throws {
        let expected: [UInt8] = [ascii("K"), 0, 0, 0, 12, 0, 0, 0x30, 0x39, 1, 2, 3, 4]
        let message = BackendMessage.backendKeyData(processID: 12345, secret: [1, 2, 3, 4])
        #expect(message.encoded() == expected)
        #expect(try decodeSingleBackend(expected) == message)
    }

    @Test(arguments: [4, 32, 256])
    func backendKeyDataWithVariableLengthSecretRoundTrips(_ length: Int) throws {
        var generator = SeededGenerator(seed: UInt64(length))
        let message = BackendMessage.backendKeyData(processID: 1, secret: generator.bytes(length))
        #expect(try decodeSingleBackend(message.encoded()) == message)
    }

    @Test(arguments: [0, 3, 257])
    func backendKeyDataWithSecretOutsideFourTo256BytesIsMalformed(_ length: Int) {
        let bytes = BackendMessage.backendKeyData(processID: 1, secret: [UInt8](repeating: 1, count: length)).encoded()
        let error = #expect(throws: WireError.self) { try decodeSingleBackend(bytes) }
        #expect(isMalformed(error, type: ascii("K")))
    }

    @Test func readyForQueryCarriesTheTransactionStatusByte() throws {
        #expect(BackendMessage.readyForQuery(.idle).encoded() == [ascii("Z"), 0, 0, 0, 5, ascii("I")])
        #expect(BackendMessage.readyForQuery(.inTransaction).encoded() == [ascii("Z"), 0, 0, 0, 5, ascii("T")])
        #expect(BackendMessage.readyForQuery(.failed).encoded() == [ascii("Z"), 0, 0, 0, 5, ascii("E")])
    }

    @Test func readyForQueryWithUnknownStatusIsMalformed() {
        let error = #expect(throws: WireError.self) { try decodeSingleBackend([ascii("Z"), 0, 0, 0, 5, ascii("X")]) }
        #expect(isMalformed(error, type: ascii("Z")))
    }

    @Test func negotiateProtocolVersionHasTheDocumentedLayout() throws {
        let message = BackendMessage.negotiateProtocolVersion(newestVersion: 0, unsupportedOptions: ["_pq_.a", "_pq_.b"])
        let expected = typedMessage(ascii("v"), body: int32Bytes(0) + int32Bytes(2) + cString("_pq_.a") + cString("_pq_.b"))
        #expect(message.encoded() == expected)
        #expect(try decodeSingleBackend(expected) == message)
    }

    @Test func negotiateProtocolVersionWithMoreOptionsThanPresentIsMalformed() {
        let bytes = typedMessage(ascii("v"), body: int32Bytes(2) + int32Bytes(Int32.max) + cString("_pq_.a"))
        let error = #expect(throws: WireError.self) { try decodeSingleBackend(bytes) }
        #expect(isMalformed(error, type: ascii("v")))
    }

    @Test func parameterDescriptionWithMoreThanInt16MaxTypesRoundTrips() throws {
        // The count is unsigned 16-bit on the wire (statements may have up to 65535 parameters).
        let message = BackendMessage.parameterDescription((0..<40_000).map { UInt32($0) })
        #expect(try decodeSingleBackend(message.encoded()) == message)
    }

    @Test func notificationHasTheDocumentedLayout() throws {
        let message = BackendMessage.notification(processID: 9, channel: "ch", payload: "hi")
        let expected = typedMessage(ascii("A"), body: int32Bytes(9) + cString("ch") + cString("hi"))
        #expect(message.encoded() == expected)
        #expect(try decodeSingleBackend(expected) == message)
    }

    @Test func functionCallResponseDistinguishesNullFromEmpty() throws {
        #expect(BackendMessage.functionCallResponse(nil).encoded() == typedMessage(ascii("V"), body: int32Bytes(-1)))
        #expect(BackendMessage.functionCallResponse([]).encoded() == typedMessage(ascii("V"), body: int32Bytes(0)))
        #expect(try decodeSingleBackend(typedMessage(ascii("V"), body: int32Bytes(-1))) == .functionCallResponse(nil))
        #expect(try decodeSingleBackend(typedMessage(ascii("V"), body: int32Bytes(0))) == .functionCallResponse([]))
    }

    @Test func backendDecoderAcceptsUnsafeRawBufferPointerInputAndTakesTheRemainder() throws {
        let bytes = BackendMessage.parseComplete.encoded() + BackendMessage.readyForQuery(.idle).encoded()
        var decoder = BackendDecoder()
        bytes.withUnsafeBytes { decoder.append($0) }
        #expect(try decoder.nextMessage() == .parseComplete)
        #expect(decoder.bufferedByteCount == 6)
        #expect(decoder.takeRemainder() == BackendMessage.readyForQuery(.idle).encoded())
        #expect(decoder.bufferedByteCount == 0)
        #expect(try decoder.nextMessage() == nil)
    }
}
