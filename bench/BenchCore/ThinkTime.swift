// A pause drawn uniformly from a range, so that many clients with the same think time do not
// march in step.

public struct ThinkTime: Codable, Sendable, Equatable, CustomStringConvertible {
    public var minMs: Int
    public var maxMs: Int

    public static let none = ThinkTime(minMs: 0, maxMs: 0)

    public init(minMs: Int, maxMs: Int) {
        self.minMs = minMs
        self.maxMs = max(minMs, maxMs)
    }

    /// "20ms", "0.5s", or a range "10ms-50ms" / "10-50ms" (the unit of the upper bound applies to a
    /// bare lower bound; bare numbers alone are milliseconds, as think times are short).
    public init?(parsing text: String) {
        let parts = text.split(separator: "-", maxSplits: 1).map { String($0).trimmingWhitespace() }
        func ms(_ part: String, unitOf other: String?) -> Int? {
            if let number = Double(part) {
                if let other, other.hasSuffix("s"), !other.hasSuffix("ms") { return Int((number * 1000).rounded()) }
                return number >= 0 ? Int(number.rounded()) : nil
            }
            return Durations.milliseconds(part)
        }
        guard let first = parts.first, let low = ms(first, unitOf: parts.count > 1 ? parts[1] : nil) else { return nil }
        var high = low
        if parts.count == 2 {
            guard let value = ms(parts[1], unitOf: nil), value >= low else { return nil }
            high = value
        }
        self.init(minMs: low, maxMs: high)
    }

    public var isZero: Bool { maxMs == 0 }

    public func draw(_ random: inout SplitMix64) -> Int {
        minMs == maxMs ? minMs : minMs + Int(random.next() % UInt64(maxMs - minMs + 1))
    }

    public var description: String { minMs == maxMs ? "\(minMs)ms" : "\(minMs)-\(maxMs)ms" }
}

/// A small, seedable generator: each client gets its own, so runs with a seed repeat their choices
/// and clients never contend on a shared generator.
public struct SplitMix64: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0 ..< bound
    public mutating func below(_ bound: Int) -> Int {
        bound <= 1 ? 0 : Int(next() % UInt64(bound))
    }

    /// True with `percent` % probability.
    public mutating func chance(percent: Int) -> Bool {
        below(100) < percent
    }
}
