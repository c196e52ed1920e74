// The workload file is a small TOML subset: `key = value` lines, `#` comments, an optional
// `[workload]` table, and strings, numbers and booleans as values. A full TOML library (a C++
// dependency) would buy nothing for a flat list of settings.

public struct WorkloadFile: Equatable, Sendable {
    /// Settings in file order, values as text (strings unquoted), ready for `Workload.set`.
    public var settings: [(key: String, value: String)] = []
    /// `lag_schedule = "…"`: the one non-workload setting a file may hold.
    public var lagSchedule: String?

    public static func == (a: WorkloadFile, b: WorkloadFile) -> Bool {
        a.lagSchedule == b.lagSchedule && a.settings.map(\.key) == b.settings.map(\.key)
            && a.settings.map(\.value) == b.settings.map(\.value)
    }

    public init(settings: [(key: String, value: String)] = [], lagSchedule: String? = nil) {
        self.settings = settings
        self.lagSchedule = lagSchedule
    }

    public init(parsing text: String) throws {
        var seen = Set<String>()
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Self.stripComment(String(rawLine)).trimmingWhitespace()
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                guard line == "[workload]" else {
                    throw WorkloadError("line \(lineNumber): only a [workload] table is allowed (got \(line))")
                }
                continue
            }
            guard let eq = line.firstIndex(of: "=") else {
                throw WorkloadError("line \(lineNumber): expected key = value (got \(line))")
            }
            let key = String(line[..<eq]).trimmingWhitespace().replacingDashes()
            let rawValue = String(line[line.index(after: eq)...]).trimmingWhitespace()
            guard !key.isEmpty, key.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }) else {
                throw WorkloadError("line \(lineNumber): bad key \"\(key)\"")
            }
            guard seen.insert(key).inserted else {
                throw WorkloadError("line \(lineNumber): \(key) is set twice")
            }
            let value = try Self.value(rawValue, line: lineNumber)
            if key == "lag_schedule" {
                lagSchedule = value
            } else {
                guard Workload.keys.contains(key) else {
                    throw WorkloadError("line \(lineNumber): unknown setting \"\(key)\"; known: \(Workload.keys.joined(separator: ", ")), lag_schedule")
                }
                settings.append((key, value))
            }
        }
    }

    /// Applies the file to a workload (flags applied afterwards win).
    public func apply(to workload: inout Workload) throws {
        for (key, value) in settings { try workload.set(key, value) }
    }

    /// A `#` outside a string starts a comment.
    static func stripComment(_ line: String) -> String {
        var inString = false
        var escaped = false
        var out = ""
        for ch in line {
            if inString {
                if escaped { escaped = false } else if ch == "\\" { escaped = true } else if ch == "\"" { inString = false }
            } else if ch == "#" {
                break
            } else if ch == "\"" {
                inString = true
            }
            out.append(ch)
        }
        return out
    }

    static func value(_ raw: String, line: Int) throws -> String {
        if raw.hasPrefix("\"") {
            guard raw.count >= 2, raw.hasSuffix("\"") else { throw WorkloadError("line \(line): unterminated string") }
            var out = ""
            var escaped = false
            for ch in raw.dropFirst().dropLast() {
                if escaped {
                    switch ch {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\\", "\"": out.append(ch)
                    default: throw WorkloadError("line \(line): unsupported escape \\\(ch)")
                    }
                    escaped = false
                } else if ch == "\\" {
                    escaped = true
                } else if ch == "\"" {
                    throw WorkloadError("line \(line): text after the closing quote")
                } else {
                    out.append(ch)
                }
            }
            return out
        }
        if raw == "true" || raw == "false" { return raw }
        // TOML allows 1_000 in numbers.
        let number = raw.filter { $0 != "_" }
        guard !number.isEmpty, Double(number) != nil else {
            throw WorkloadError("line \(line): a value must be a \"string\", a number or true/false (got \(raw))")
        }
        return number
    }
}
