import Wire

/// Follows one server connection's response stream and decides, message by message, what reaches
/// the client. Responses to requests the proxy injected itself (replayed SETs, re-prepared
/// statements, LSN captures) are swallowed; everything else is forwarded untouched. When nothing
/// is swallowed in a chunk — the common case — the chunk is forwarded as it is, without a copy.
///
/// A NotificationResponse carries the sending server backend's pid; clients compare it with the
/// pid they were given (the proxy's), so the stream rewrites it in place through `notificationPID`.
/// When a read ends inside the first nine bytes of one (type, length, pid), those bytes are
/// withheld and handed back, rewritten, by `takeWithheld()` before the next read's bytes.
///
/// Pure value type: feed it bytes, it reports events and which byte ranges to forward.
struct ResponseStream {
    enum Expectation: Equatable {
        /// A whole proxy-made request: swallow everything through its ReadyForQuery.
        case internalRequest(tag: Int)
        /// The same for a replay of the client's own settings: its ParameterStatus messages are
        /// swallowed too (they tell the client values it was already told when it set them).
        case settingsReplay(tag: Int)
        /// Proxy-made Parse/Close messages placed among a client's messages: swallow that many
        /// ParseComplete/CloseComplete once the client's own completions before them (the
        /// stream's `clientCompletionsSent` when they were injected) have gone by. An error ends
        /// the swallowing (the client must see it; the server skips to Sync).
        /// `batch` is filled in by `expect`: which client batch (counted by its Sync) they are in.
        case injectedCompletions(count: Int, afterClientCompletions: Int, batch: Int = 0)
        /// Client requests already in flight ahead of a later internal one: forward through that
        /// many ReadyForQuery messages.
        case clientReadies(count: Int)
        /// A Sync the proxy added to end a client's batch: forward the batch's responses, swallow
        /// the ReadyForQuery the client did not ask for.
        case batchEnd(tag: Int)
    }

    enum Event {
        /// A ReadyForQuery that belongs to the client (forwarded).
        case clientReady(BackendMessage.TransactionStatus)
        /// A message of an internal request, with its body when small enough to capture.
        case internalMessage(tag: Int, type: UInt8, body: ArraySlice<UInt8>?)
        /// The ReadyForQuery that ends an internal request.
        case internalDone(tag: Int, status: BackendMessage.TransactionStatus)
        /// A forwarded ErrorResponse whose severity is FATAL or PANIC: the server is going away.
        case fatalError
        /// A forwarded ErrorResponse (body captured when small), for SQLSTATE-based decisions.
        case clientError(ArraySlice<UInt8>?)
        case copyInStarted
        case copyOutStarted
    }

    private(set) var expectations: [Expectation] = []
    private var head = 0
    /// Client Parse/Close messages sent and completions forwarded so far; at each client Sync
    /// (or Query) the count sent before it, because after an error the server skips the rest of
    /// the batch and its completions never come.
    private(set) var clientCompletionsSent = 0
    private var clientCompletionsSeen = 0
    private var completionsAtReady: [Int] = []
    /// Client batches (ReadyForQuery messages) noted so far, and those whose ReadyForQuery came.
    private var readiesNoted = 0
    private var readiesSeen = 0

    private var headerBytes: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
    private var headerCount = 0
    private var bodyRemaining = 0
    private var forwarding = true
    private var capture: [UInt8] = []
    private var capturing = false
    private let captureLimit = 8192
    /// Bytes of a NotificationResponse's type, length and pid seen so far while they straddle
    /// reads (at most nine), and whether the current message is such a notification.
    private var notificationHead: [UInt8] = []
    private var inNotificationHead = false
    private var withheld: [UInt8]?
    static let notificationHeadLength = 9
    let maximumLength: Int

    init(maximumLength: Int = 1 << 30) {
        self.maximumLength = maximumLength
        capture.reserveCapacity(256)
    }

    var isAtBoundary: Bool { headerCount == 0 && bodyRemaining == 0 }
    var hasExpectations: Bool { head < expectations.count }

    /// Client messages went to the server: `completions` Parse/Close among them, ending with
    /// `readies` ReadyForQuery (Sync, Query) — or a Sync of the proxy's that ends a client batch.
    mutating func noteClientMessages(completions: Int, readies: Int) {
        clientCompletionsSent += completions
        readiesNoted += readies
        for _ in 0..<readies { completionsAtReady.append(clientCompletionsSent) }
    }

    /// The connection changes hands (a pooled connection goes to another client, whose
    /// session counts its own Parse/Close messages from zero): the counts start over. Only
    /// while nothing is in flight.
    mutating func startOverClientCounts() {
        guard completionsAtReady.isEmpty, !hasExpectations, isAtBoundary else { return }
        clientCompletionsSent = 0
        clientCompletionsSeen = 0
        readiesNoted = 0
        readiesSeen = 0
    }

    private mutating func readyArrived() {
        guard !completionsAtReady.isEmpty else { return }
        clientCompletionsSeen = max(clientCompletionsSeen, completionsAtReady.removeFirst())
        readiesSeen += 1
        dropInjectedCompletions(ofBatchesBefore: readiesSeen)
    }

    /// Injected completions of batches up to `batch` that will never come: the server skipped to
    /// the batch's Sync after an error.
    private mutating func dropInjectedCompletions(ofBatchesBefore batch: Int) {
        while head < expectations.count, case let .injectedCompletions(_, _, owner) = expectations[head], owner < batch {
            head += 1
        }
    }

    mutating func expect(_ expectation: Expectation) {
        if head > 0 && head == expectations.count {
            expectations.removeAll(keepingCapacity: true)
            head = 0
        }
        if case let .injectedCompletions(count, after, _) = expectation {
            // They belong to the batch whose Sync is the next one noted.
            expectations.append(.injectedCompletions(count: count, afterClientCompletions: after, batch: readiesNoted))
        } else {
            expectations.append(expectation)
        }
    }

    /// Bytes withheld from earlier reads that go to the client before this read's ranges.
    mutating func takeWithheld() -> [UInt8]? {
        defer { withheld = nil }
        return withheld
    }

    /// Processes `bytes`. Returns nil when the whole buffer is to be forwarded, otherwise the
    /// ranges to forward (possibly empty). `notificationPID` maps a notifying server pid to the
    /// pid the client knows (nil: leave it).
    mutating func process(_ bytes: UnsafeMutableRawBufferPointer, notificationPID: (Int32) -> Int32? = { _ in nil },
                          onEvent: (Event) -> Void) throws(WireError) -> [Range<Int>]? {
        var ranges: [Range<Int>]? = nil
        var forwardStart = 0
        var index = 0
        let count = bytes.count

        func skipRange(_ start: Int, _ end: Int) {
            // Bytes [start, end) are not forwarded: close the current forward run.
            if ranges == nil { ranges = [] }
            if forwardStart < start { ranges!.append(forwardStart..<start) }
            forwardStart = end
        }

        while index < count {
            if headerCount == 0 && bodyRemaining == 0 {
                // A message starts here: its type decides its fate.
                let type = bytes[index]
                forwarding = decideForwarding(type)
                capturing = !forwarding || type == BackendMessage.TypeByte.errorResponse
                    || type == BackendMessage.TypeByte.readyForQuery
                capture.removeAll(keepingCapacity: true)
                if forwarding && type == BackendMessage.TypeByte.notification {
                    if count - index >= Self.notificationHeadLength {
                        Self.rewritePID(in: bytes, at: index + 5, notificationPID)
                    } else {
                        // The pid is not all here: withhold the message's start until it is.
                        inNotificationHead = true
                        notificationHead.removeAll(keepingCapacity: true)
                    }
                }
            }
            if inNotificationHead {
                let start = index
                let take = min(Self.notificationHeadLength - notificationHead.count, count - index)
                notificationHead.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                if notificationHead.count < Self.notificationHeadLength {
                    // Still short: everything of it in this read is withheld.
                    skipRange(start, start + take)
                    for offset in 0..<take { try advanceHeader(bytes[start + offset]) }
                    index += take
                    continue
                }
                // Complete: the withheld part goes out rewritten before this read's bytes, the
                // rest of the nine is rewritten in place and forwarded with them.
                inNotificationHead = false
                notificationHead.withUnsafeMutableBytes { Self.rewritePID(in: $0, at: 5, notificationPID) }
                let withheldCount = Self.notificationHeadLength - take
                withheld = (withheld ?? []) + notificationHead[0..<withheldCount]
                for offset in 0..<take { bytes[start + offset] = notificationHead[withheldCount + offset] }
            }
            if headerCount < 5 {
                let start = index
                while headerCount < 5 && index < count {
                    setHeaderByte(headerCount, bytes[index])
                    headerCount += 1
                    index += 1
                }
                if !forwarding { skipRange(start, index) }
                if headerCount < 5 { break }
                bodyRemaining = try bodyLength(atLeast: 0)
                if bodyRemaining > captureLimit { capturing = false }
            }
            let take = min(bodyRemaining, count - index)
            if take > 0 {
                if capturing {
                    capture.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                }
                if !forwarding { skipRange(index, index + take) }
                index += take
                bodyRemaining -= take
            }
            if bodyRemaining == 0 {
                headerCount = 0
                finishMessage(onEvent)
            }
        }
        if ranges != nil && forwardStart < count { ranges!.append(forwardStart..<count) }
        return ranges
    }

    private mutating func decideForwarding(_ type: UInt8) -> Bool {
        guard head < expectations.count else { return true }
        switch expectations[head] {
        case .internalRequest:
            // Asynchronous messages (NOTIFY, notices, ParameterStatus) still belong to the client.
            switch type {
            case BackendMessage.TypeByte.notification, BackendMessage.TypeByte.noticeResponse,
                 BackendMessage.TypeByte.parameterStatus:
                return true
            default:
                return false
            }
        case .settingsReplay:
            return type == BackendMessage.TypeByte.notification || type == BackendMessage.TypeByte.noticeResponse
        case let .injectedCompletions(_, after, _):
            let completion = type == BackendMessage.TypeByte.parseComplete || type == BackendMessage.TypeByte.closeComplete
            return !completion || clientCompletionsSeen < after
        case .clientReadies:
            return true
        case .batchEnd:
            return type != BackendMessage.TypeByte.readyForQuery
        }
    }

    private mutating func finishMessage(_ onEvent: (Event) -> Void) {
        let type = headerBytes.0
        if forwarding {
            switch type {
            case BackendMessage.TypeByte.readyForQuery:
                if head < expectations.count, case let .clientReadies(remaining) = expectations[head] {
                    if remaining <= 1 { head += 1 } else { expectations[head] = .clientReadies(count: remaining - 1) }
                }
                readyArrived()
                if let status = capturedStatus() { onEvent(.clientReady(status)) }
            case BackendMessage.TypeByte.parseComplete, BackendMessage.TypeByte.closeComplete:
                clientCompletionsSeen += 1
            case BackendMessage.TypeByte.errorResponse:
                onEvent(.clientError(capturing ? capture[...] : nil))
                if capturing, Self.isFatal(capture[...]) { onEvent(.fatalError) }
                // An error cancels every injected-completion run left in its batch: the server
                // skips to Sync.
                dropInjectedCompletions(ofBatchesBefore: readiesSeen + 1)
            case BackendMessage.TypeByte.copyInResponse:
                onEvent(.copyInStarted)
            case BackendMessage.TypeByte.copyOutResponse:
                onEvent(.copyOutStarted)
            default:
                break
            }
            return
        }
        guard head < expectations.count else { return }
        switch expectations[head] {
        case let .internalRequest(tag), let .settingsReplay(tag):
            if type == BackendMessage.TypeByte.readyForQuery {
                head += 1
                onEvent(.internalDone(tag: tag, status: capturedStatus() ?? .idle))
            } else {
                onEvent(.internalMessage(tag: tag, type: type, body: capturing ? capture[...] : nil))
            }
        case let .injectedCompletions(remaining, after, batch):
            if remaining <= 1 {
                head += 1
            } else {
                expectations[head] = .injectedCompletions(count: remaining - 1, afterClientCompletions: after, batch: batch)
            }
        case let .batchEnd(tag):
            head += 1
            readyArrived()
            onEvent(.internalDone(tag: tag, status: capturedStatus() ?? .idle))
        case .clientReadies:
            break
        }
    }

    /// The status byte of a ReadyForQuery: the body is one byte, captured or not.
    private func capturedStatus() -> BackendMessage.TransactionStatus? {
        capture.first.flatMap(BackendMessage.TransactionStatus.init(rawValue:))
    }

    /// Feeds one header or body byte of a withheld notification head through the framing state.
    private mutating func advanceHeader(_ byte: UInt8) throws(WireError) {
        if headerCount < 5 {
            setHeaderByte(headerCount, byte)
            headerCount += 1
            // A pid and two strings at least.
            if headerCount == 5 { bodyRemaining = try bodyLength(atLeast: 6) }
        } else if bodyRemaining > 0 {
            bodyRemaining -= 1
        }
    }

    /// The body length the complete header announces, checked against what a message needs and
    /// the limit.
    private func bodyLength(atLeast minimum: Int) throws(WireError) -> Int {
        let length = Int32(bitPattern: UInt32(headerBytes.1) << 24 | UInt32(headerBytes.2) << 16
            | UInt32(headerBytes.3) << 8 | UInt32(headerBytes.4))
        guard Int(length) >= 4 + minimum else { throw .invalidLength(type: headerBytes.0, length: length) }
        guard Int(length) <= maximumLength else { throw .oversized(type: headerBytes.0, length: Int(length), limit: maximumLength) }
        return Int(length) - 4
    }

    private static func rewritePID(in bytes: UnsafeMutableRawBufferPointer, at offset: Int, _ map: (Int32) -> Int32?) {
        let pid = Int32(bitPattern: UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
            | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
        guard let mapped = map(pid) else { return }
        let value = UInt32(bitPattern: mapped)
        bytes[offset] = UInt8(value >> 24)
        bytes[offset + 1] = UInt8(value >> 16 & 0xff)
        bytes[offset + 2] = UInt8(value >> 8 & 0xff)
        bytes[offset + 3] = UInt8(value & 0xff)
    }

    private mutating func setHeaderByte(_ position: Int, _ value: UInt8) {
        switch position {
        case 0: headerBytes.0 = value
        case 1: headerBytes.1 = value
        case 2: headerBytes.2 = value
        case 3: headerBytes.3 = value
        default: headerBytes.4 = value
        }
    }

    static func isFatal(_ body: ArraySlice<UInt8>) -> Bool {
        var reader = ByteReader(body, messageType: BackendMessage.TypeByte.errorResponse)
        while let code = try? reader.readUInt8(), code != 0, let value = try? reader.readCString() {
            if code == ErrorFields.FieldCode.severityNonLocalized || code == ErrorFields.FieldCode.severity {
                return value == "FATAL" || value == "PANIC"
            }
        }
        return false
    }
}
