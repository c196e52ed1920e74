/// Follows message boundaries in a relayed byte stream without copying it. The relay forwards
/// each received chunk as-is and only asks the scanner which messages ended inside it; bodies are
/// captured (into one reused buffer) only for the few types the proxy must look at, and only when
/// small, so the per-message path neither allocates nor copies in the steady state.
public struct MessageScanner: Sendable {
    public let maximumLength: Int
    private var interesting: (UInt64, UInt64, UInt64, UInt64)
    private let captureLimit: Int

    private var header: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
    private var headerCount = 0
    private var bodyRemaining = 0
    private var capturing = false
    private var capture: [UInt8] = []

    public init(interestingTypes: [UInt8], captureLimit: Int = 512, maximumLength: Int = 1 << 30) {
        var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for type in interestingTypes {
            let bit = UInt64(1) << UInt64(type & 63)
            switch type >> 6 {
            case 0: bits.0 |= bit
            case 1: bits.1 |= bit
            case 2: bits.2 |= bit
            default: bits.3 |= bit
            }
        }
        interesting = bits
        self.captureLimit = captureLimit
        self.maximumLength = maximumLength
        capture.reserveCapacity(captureLimit)
    }

    /// True when the stream is exactly at a message boundary.
    public var isAtBoundary: Bool { headerCount == 0 && bodyRemaining == 0 && !capturing }

    private func isInteresting(_ type: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(type & 63)
        switch type >> 6 {
        case 0: return interesting.0 & bit != 0
        case 1: return interesting.1 & bit != 0
        case 2: return interesting.2 & bit != 0
        default: return interesting.3 & bit != 0
        }
    }

    /// Scans `bytes`, calling `onMessage(type, body)` for every message that ends inside them.
    /// `body` is the captured body for interesting, small messages and nil otherwise.
    public mutating func scan(
        _ bytes: UnsafeRawBufferPointer,
        onMessage: (UInt8, ArraySlice<UInt8>?) throws(WireError) -> Void
    ) throws(WireError) {
        var index = 0
        let count = bytes.count
        while index < count {
            if bodyRemaining == 0 && !capturing {
                // Collect the 5-byte header, possibly across chunks.
                while headerCount < 5 && index < count {
                    setHeaderByte(headerCount, bytes[index])
                    headerCount += 1
                    index += 1
                }
                if headerCount < 5 { return }
                headerCount = 0
                let type = header.0
                let length = Int32(bitPattern: UInt32(header.1) << 24 | UInt32(header.2) << 16
                    | UInt32(header.3) << 8 | UInt32(header.4))
                guard length >= 4 else { throw .invalidLength(type: type, length: length) }
                guard Int(length) <= maximumLength else {
                    throw .oversized(type: type, length: Int(length), limit: maximumLength)
                }
                bodyRemaining = Int(length) - 4
                if isInteresting(type) && bodyRemaining <= captureLimit {
                    capturing = true
                    capture.removeAll(keepingCapacity: true)
                }
                if bodyRemaining == 0 {
                    capturing = false
                    try onMessage(type, isInteresting(type) ? capture[...] : nil)
                    continue
                }
            }
            let take = min(bodyRemaining, count - index)
            if capturing {
                capture.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
            }
            index += take
            bodyRemaining -= take
            if bodyRemaining == 0 {
                let wasCapturing = capturing
                capturing = false
                try onMessage(header.0, wasCapturing ? capture[...] : nil)
            }
        }
    }

    private mutating func setHeaderByte(_ position: Int, _ value: UInt8) {
        switch position {
        case 0: header.0 = value
        case 1: header.1 = value
        case 2: header.2 = value
        case 3: header.3 = value
        default: header.4 = value
        }
    }
}
