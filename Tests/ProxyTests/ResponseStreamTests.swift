import Testing
import Wire
@testable import Proxy

/// The relay's response filter: what reaches the client must not depend on how the server's
/// bytes were split, and only proxy-injected responses may disappear.
struct ResponseStreamTests {
    static func encode(_ messages: [BackendMessage]) -> [UInt8] {
        var writer = ByteWriter()
        for message in messages { message.encode(into: &writer) }
        return writer.bytes
    }

    /// Feeds `bytes` in chunks; returns the forwarded bytes and the event kinds seen.
    static func run(_ bytes: [UInt8], chunk: Int, expectations: [ResponseStream.Expectation] = [],
                    stream start: ResponseStream = ResponseStream(),
                    notificationPID: (Int32) -> Int32? = { _ in nil })
        throws -> (forwarded: [UInt8], events: [String]) {
        var unused = start
        return try run(bytes, chunk: chunk, expectations: expectations, stream: start, notificationPID: notificationPID, keep: &unused)
    }

    /// As above, leaving the stream's state in `keep` for a next run.
    static func run(_ bytes: [UInt8], chunk: Int, expectations: [ResponseStream.Expectation] = [],
                    stream start: ResponseStream, notificationPID: (Int32) -> Int32? = { _ in nil },
                    keep: inout ResponseStream)
        throws -> (forwarded: [UInt8], events: [String]) {
        var stream = start
        defer { keep = stream }
        for expectation in expectations { stream.expect(expectation) }
        var forwarded: [UInt8] = []
        var events: [String] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + chunk)
            var piece = Array(bytes[offset..<end])
            try piece.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) throws in
                let ranges = try stream.process(buffer, notificationPID: notificationPID) { event in
                    switch event {
                    case let .clientReady(status): events.append("ready:\(Character(Unicode.Scalar(status.rawValue)))")
                    case let .internalMessage(tag, type, _): events.append("internal\(tag):\(Character(Unicode.Scalar(type)))")
                    case let .internalDone(tag, _): events.append("done\(tag)")
                    case .clientError: events.append("error")
                    case .fatalError: events.append("fatal")
                    case .copyInStarted: events.append("copyIn")
                    case .copyOutStarted: events.append("copyOut")
                    }
                }
                if let withheld = stream.takeWithheld() { forwarded += withheld }
                if let ranges {
                    for range in ranges { forwarded += buffer[range] }
                } else {
                    forwarded += buffer
                }
            }
            offset = end
        }
        return (forwarded, events)
    }

    static let clientResponse: [BackendMessage] = [
        .rowDescription([0, 0]), .dataRow([0, 1, 0, 0, 0, 1, 0x31]), .commandComplete("SELECT 1"), .readyForQuery(.idle),
    ]
    static let lsnResponse: [BackendMessage] = [
        .rowDescription([0, 0]), .dataRow([0, 1, 0, 0, 0, 9] + Array("0/16B3748".utf8)), .commandComplete("SELECT 1"),
        .readyForQuery(.idle),
    ]

    @Test func withNothingExpectedEveryByteIsForwardedAtEverySplit() throws {
        let bytes = Self.encode(Self.clientResponse + [.notification(processID: 7, channel: "c", payload: "p")])
        for chunk in 1...bytes.count {
            let (forwarded, events) = try Self.run(bytes, chunk: chunk, expectations: [])
            #expect(forwarded == bytes, "chunk \(chunk)")
            #expect(events == ["ready:I"], "chunk \(chunk)")
        }
    }

    @Test func anInternalRequestBehindAClientOneIsSwallowedAtEverySplit() throws {
        let bytes = Self.encode(Self.clientResponse + Self.lsnResponse)
        let expected = Self.encode(Self.clientResponse)
        for chunk in 1...bytes.count {
            let (forwarded, events) = try Self.run(
                bytes, chunk: chunk, expectations: [.clientReadies(count: 1), .internalRequest(tag: 3)])
            #expect(forwarded == expected, "chunk \(chunk)")
            #expect(events == ["ready:I", "internal3:T", "internal3:D", "internal3:C", "done3"], "chunk \(chunk)")
        }
    }

    @Test func aParseInjectedMidBatchSwallowsItsOwnCompletionNotTheClientsEarlierOne() throws {
        // The client's Parse/Bind/Execute went out in one part; a later part Binds a statement this
        // server lacks, so the proxy put a Parse of it there. At every split, the client still gets
        // its own ParseComplete first, and only the injected one disappears.
        let clientPart: [BackendMessage] = [.parseComplete, .bindComplete, .commandComplete("INSERT 0 1")]
        let laterPart: [BackendMessage] = [.bindComplete, .commandComplete("INSERT 0 1"), .readyForQuery(.idle)]
        let bytes = Self.encode(clientPart + [.parseComplete] + laterPart)
        for chunk in 1...bytes.count {
            var stream = ResponseStream()
            stream.noteClientMessages(completions: 1, readies: 0)
            stream.expect(.injectedCompletions(count: 1, afterClientCompletions: stream.clientCompletionsSent))
            stream.noteClientMessages(completions: 0, readies: 1)
            let (forwarded, events) = try Self.run(bytes, chunk: chunk, stream: stream)
            #expect(forwarded == Self.encode(clientPart + laterPart), "chunk \(chunk)")
            #expect(events == ["ready:I"], "chunk \(chunk)")
        }
    }

    @Test func afterAnErrorSkippedCompletionsDoNotDelayTheNextInjection() throws {
        // The client's batch failed at its first message: its Parse never completes. The next
        // batch's injected Parse must still be swallowed.
        var stream = ResponseStream()
        stream.noteClientMessages(completions: 2, readies: 1)
        let failed = Self.encode([.errorResponse(ErrorFields(severity: .error, sqlState: "42P01", message: "no such table")),
                                  .readyForQuery(.idle)])
        _ = try Self.run(failed, chunk: failed.count, stream: stream, keep: &stream)
        stream.expect(.injectedCompletions(count: 1, afterClientCompletions: stream.clientCompletionsSent))
        stream.noteClientMessages(completions: 0, readies: 1)
        let next = Self.encode([.parseComplete, .bindComplete, .readyForQuery(.idle)])
        let (forwarded, _) = try Self.run(next, chunk: 1, stream: stream)
        #expect(forwarded == Self.encode([.bindComplete, .readyForQuery(.idle)]))
    }

    @Test func anErrorVoidsEveryInjectionLeftInItsBatchButNotTheNextBatchs() throws {
        // Bind (fails), then two client Parses each preceded by an injected Close, Sync; the
        // server skips both. The next batch's own ParseComplete must reach the client, and its
        // injected one must still be swallowed.
        var stream = ResponseStream()
        stream.expect(.injectedCompletions(count: 1, afterClientCompletions: 0))
        stream.expect(.injectedCompletions(count: 1, afterClientCompletions: 1))
        stream.noteClientMessages(completions: 2, readies: 1)
        let failed = Self.encode([.errorResponse(ErrorFields(severity: .error, sqlState: "22012", message: "division by zero")),
                                  .readyForQuery(.idle)])
        _ = try Self.run(failed, chunk: 3, stream: stream, keep: &stream)
        stream.noteClientMessages(completions: 1, readies: 0)
        stream.expect(.injectedCompletions(count: 1, afterClientCompletions: stream.clientCompletionsSent))
        stream.noteClientMessages(completions: 0, readies: 1)
        let next = Self.encode([.parseComplete, .parseComplete, .bindComplete, .readyForQuery(.idle)])
        let (forwarded, _) = try Self.run(next, chunk: 2, stream: stream, keep: &stream)
        #expect(forwarded == Self.encode([.parseComplete, .bindComplete, .readyForQuery(.idle)]))
        #expect(!stream.hasExpectations)
    }

    @Test func aPooledConnectionsNextClientCountsItsCompletionsFromZero() throws {
        // A connection served one client (three Parse messages), went back to its pool and now
        // serves another, whose session counts its own Parse messages from zero. The injection
        // behind the new client's first Parse swallows the injected completion, not the client's.
        var stream = ResponseStream()
        stream.noteClientMessages(completions: 3, readies: 1)
        let earlier = Self.encode([.parseComplete, .parseComplete, .parseComplete, .readyForQuery(.idle)])
        _ = try Self.run(earlier, chunk: earlier.count, stream: stream, keep: &stream)
        stream.startOverClientCounts()
        stream.noteClientMessages(completions: 1, readies: 0)
        stream.expect(.injectedCompletions(count: 1, afterClientCompletions: 1))
        stream.noteClientMessages(completions: 0, readies: 1)
        let bytes = Self.encode([.parseComplete, .bindComplete, .parseComplete, .bindComplete, .readyForQuery(.idle)])
        let (forwarded, _) = try Self.run(bytes, chunk: 1, stream: stream)
        #expect(forwarded == Self.encode([.parseComplete, .bindComplete, .bindComplete, .readyForQuery(.idle)]))
    }

    @Test func aBatchEndedByTheProxyForwardsItsResponsesButNotItsReadyForQuery() throws {
        // Parse/Describe + Flush from the client, then a Sync the proxy added: the client asked for
        // the ParseComplete and descriptions, not for a ReadyForQuery.
        let batch: [BackendMessage] = [.parseComplete, .parameterDescription([]), .noData]
        let bytes = Self.encode(batch + [.readyForQuery(.idle)])
        for chunk in 1...bytes.count {
            let (forwarded, events) = try Self.run(bytes, chunk: chunk, expectations: [.batchEnd(tag: 4)])
            #expect(forwarded == Self.encode(batch), "chunk \(chunk)")
            #expect(events == ["done4"], "chunk \(chunk)")
        }
    }

    @Test func aBatchEndAfterAClientRequestStillInFlightWaitsForItsReadyForQuery() throws {
        let bytes = Self.encode(Self.clientResponse + [.parseComplete, .readyForQuery(.idle)])
        let (forwarded, events) = try Self.run(bytes, chunk: 3, expectations: [.clientReadies(count: 1), .batchEnd(tag: 4)])
        #expect(forwarded == Self.encode(Self.clientResponse + [.parseComplete]))
        #expect(events == ["ready:I", "done4"])
    }

    @Test func aNotificationCarriesTheSessionsPidAtEverySplit() throws {
        let before = Self.clientResponse
        let after: [BackendMessage] = [.commandComplete("NOTIFY"), .readyForQuery(.idle)]
        let bytes = Self.encode(before + [.notification(processID: 7, channel: "chan", payload: "hello")] + after)
        let expected = Self.encode(before + [.notification(processID: 4_194_305, channel: "chan", payload: "hello")] + after)
        for chunk in 1...bytes.count {
            let (forwarded, events) = try Self.run(bytes, chunk: chunk, expectations: [],
                                                   notificationPID: { $0 == 7 ? 4_194_305 : nil })
            #expect(forwarded == expected, "chunk \(chunk)")
            #expect(events == ["ready:I", "ready:I"], "chunk \(chunk)")
        }
    }

    @Test func aNotificationFromAServerNoSessionUsesIsForwardedAsItIs() throws {
        let bytes = Self.encode([.notification(processID: 9, channel: "c", payload: ""), .readyForQuery(.idle)])
        for chunk in 1...bytes.count {
            let (forwarded, _) = try Self.run(bytes, chunk: chunk, expectations: [], notificationPID: { _ in nil })
            #expect(forwarded == bytes, "chunk \(chunk)")
        }
    }

    @Test func aNotificationTooShortForItsPidIsATypedError() {
        // 'A', length 6: no room for a pid and two strings.
        let bytes: [UInt8] = [0x41, 0, 0, 0, 6, 0, 0]
        #expect(throws: WireError.self) { _ = try Self.run(bytes, chunk: 2, expectations: []) }
    }

    @Test func notificationsDuringAnInternalRequestStillReachTheClient() throws {
        let notice = BackendMessage.notification(processID: 1, channel: "ch", payload: "x")
        let bytes = Self.encode([Self.lsnResponse[0], notice] + Self.lsnResponse.dropFirst())
        let (forwarded, _) = try Self.run(bytes, chunk: 3, expectations: [.internalRequest(tag: 1)])
        #expect(forwarded == notice.encoded())
    }

    @Test func aSettingsReplaySwallowsItsParameterStatusButNotANotification() throws {
        let notice = BackendMessage.notification(processID: 1, channel: "ch", payload: "x")
        let bytes = Self.encode([.commandComplete("SET"), .parameterStatus(name: "application_name", value: "app"), notice,
                                 .readyForQuery(.idle)])
        let (forwarded, _) = try Self.run(bytes, chunk: 4, expectations: [.settingsReplay(tag: 1)])
        #expect(forwarded == notice.encoded())
    }

    @Test func injectedParseCompletesAreSwallowedButAnErrorIsNot() throws {
        let ok = Self.encode([.parseComplete, .parseComplete, .bindComplete, .readyForQuery(.idle)])
        let (forwarded, _) = try Self.run(ok, chunk: 2, expectations: [.injectedCompletions(count: 1, afterClientCompletions: 0)])
        #expect(forwarded == Self.encode([.parseComplete, .bindComplete, .readyForQuery(.idle)]))

        let failure = BackendMessage.errorResponse(ErrorFields(severity: .error, sqlState: "42P01", message: "no table"))
        let failed = Self.encode([failure, .readyForQuery(.idle)])
        let (forwardedFailure, events) = try Self.run(failed, chunk: 4, expectations: [.injectedCompletions(count: 2, afterClientCompletions: 0)])
        #expect(forwardedFailure == failed)
        #expect(events == ["error", "ready:I"])
    }

    @Test func aLengthBelowFourIsATypedErrorNotACrash() {
        #expect(throws: WireError.invalidLength(type: UInt8(ascii: "Z"), length: 2)) {
            _ = try Self.run([UInt8(ascii: "Z"), 0, 0, 0, 2, 0x49], chunk: 1, expectations: [])
        }
    }
}
