// Time values in flags, the workload file and the lag schedule share one spelling, so a value
// copied from one place works in the others: "500ms", "2s", "1.5s", "1m", or a bare number of
// seconds.

public enum Durations {
    /// Milliseconds for `text`, or nil when it is not a duration.
    public static func milliseconds(_ text: String) -> Int? {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { return nil }
        let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = String(trimmed.dropLast(suffix.count))
            // "1ms" also ends in "s": only accept the unit whose prefix is a plain number.
            guard let value = Double(number), value >= 0, value.isFinite else { continue }
            return Int((value * scale).rounded())
        }
        guard let seconds = Double(trimmed), seconds >= 0, seconds.isFinite else { return nil }
        return Int((seconds * 1000).rounded())
    }

    /// "1.5s", "250ms": the short form used in tables and logs.
    public static func describe(milliseconds ms: Int) -> String {
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        if ms > 1000 { return "\(Double(ms) / 1000)s" }
        return "\(ms)ms"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
