// A small reader for the subset of TOML that Causeway's configuration uses.
//
// Supported: `[table]` and `[[array.of.tables]]` headers, `key = value` with bare, quoted and dotted
// keys, basic strings ("..." with \" \\ \b \f \n \r \t \uXXXX \UXXXXXXXX), literal strings ('...'),
// integers (decimal with sign and `_` separators; 0x / 0o / 0b), booleans, arrays (nested, spanning
// lines, trailing comma, comments inside), and `#` comments. Floats, dates, inline tables and
// multi-line strings are rejected with a message that says so.
//
// Every value and table remembers the line it was written on, so the configuration loader can name
// the exact line of every problem. Syntax errors never quote the text of a value: a value may be a
// password.

/// A syntax error in a TOML document. `key` is the dotted key being defined, when known.
struct TOMLError: Error, Sendable, Equatable {
    var line: Int
    var column: Int?
    var key: String?
    var message: String
}

/// One value of a TOML document and the line it starts on.
struct TOMLValue {
    enum Kind {
        case string(String)
        case integer(Int)
        case boolean(Bool)
        case array([TOMLValue])
        case table(TOMLTable)
        /// Defined by `[[name]]` headers.
        case tableArray([TOMLTable])
    }

    var kind: Kind
    var line: Int

    /// "a string", "an integer", ... for messages such as "expected an integer (got a string)".
    var typeDescription: String {
        switch kind {
        case .string: "a string"
        case .integer: "an integer"
        case .boolean: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .tableArray: "an array of tables"
        }
    }
}

/// A TOML table. Keys keep the order in which they were written.
final class TOMLTable {
    enum Origin {
        case root
        /// Named by a `[header]`.
        case header
        /// Created as the parent of a header (`[a.b]` creates `a`); may later get its own header.
        case implicit
        /// Created by a dotted key (`a.b = 1` creates `a`).
        case dotted
        /// One element of a `[[header]]` array.
        case arrayElement
    }

    /// The line of the header that defined the table (the first key's line for dotted tables, 0 for
    /// the root).
    var line: Int
    var origin: Origin
    /// Dotted path for messages: "proxy", "backends[1]", "" for the root.
    let path: String
    private(set) var keys: [String] = []
    private var entries: [String: TOMLValue] = [:]

    init(line: Int, origin: Origin, path: String) {
        self.line = line
        self.origin = origin
        self.path = path
    }

    subscript(key: String) -> TOMLValue? { entries[key] }

    /// Sets `key`, appending it to `keys` when new.
    func set(_ key: String, _ value: TOMLValue) {
        if entries.updateValue(value, forKey: key) == nil { keys.append(key) }
    }

    /// The dotted path of `key` inside this table, for messages.
    func path(of key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
}

enum TOMLReader {
    /// Parses a whole document and returns its root table.
    static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var parser = TOMLParser(bytes: Array(text.utf8))
        return try parser.parseDocument()
    }
}

// MARK: - Parser

private enum TOMLByte {
    static let tab: UInt8 = 0x09
    static let newline: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let quote: UInt8 = 0x22  // "
    static let hash: UInt8 = 0x23  // #
    static let apostrophe: UInt8 = 0x27  // '
    static let plus: UInt8 = 0x2B
    static let comma: UInt8 = 0x2C
    static let minus: UInt8 = 0x2D
    static let dot: UInt8 = 0x2E
    static let colon: UInt8 = 0x3A
    static let equals: UInt8 = 0x3D
    static let openBracket: UInt8 = 0x5B  // [
    static let backslash: UInt8 = 0x5C
    static let closeBracket: UInt8 = 0x5D  // ]
    static let underscore: UInt8 = 0x5F
    static let openBrace: UInt8 = 0x7B  // {
    static let delete: UInt8 = 0x7F

    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isLetter(_ c: UInt8) -> Bool { (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
    static func isBareKey(_ c: UInt8) -> Bool { isLetter(c) || isDigit(c) || c == underscore || c == minus }
    static func isControl(_ c: UInt8) -> Bool { (c < 0x20 && c != tab) || c == delete }
}

private struct TOMLParser {
    let bytes: [UInt8]
    var index = 0
    var line = 1
    var lineStart = 0
    let root: TOMLTable
    /// The table that `key = value` lines go to: the root, or the latest header's table.
    var current: TOMLTable

    init(bytes: [UInt8]) {
        self.bytes = bytes
        root = TOMLTable(line: 0, origin: .root, path: "")
        current = root
    }

    // MARK: Positions and errors

    func peek(_ offset: Int = 0) -> UInt8? {
        let i = index + offset
        return i < bytes.count ? bytes[i] : nil
    }

    /// 1-based column of byte `position` on the current line, counting characters, not bytes.
    func column(of position: Int) -> Int {
        var count = 1
        var i = lineStart
        while i < position && i < bytes.count {
            if bytes[i] & 0xC0 != 0x80 { count += 1 }
            i += 1
        }
        return count
    }

    func error(_ message: String, at position: Int? = nil, key: String? = nil) -> TOMLError {
        TOMLError(line: line, column: column(of: position ?? index), key: key, message: message)
    }

    // MARK: Document structure

    mutating func parseDocument() throws(TOMLError) -> TOMLTable {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {  // UTF-8 byte order mark
            index = 3
            lineStart = 3
        }
        while true {
            skipSpaces()
            guard let c = peek() else { break }
            switch c {
            case TOMLByte.hash:
                skipComment()
            case TOMLByte.newline, TOMLByte.carriageReturn:
                try consumeNewline()
            case TOMLByte.openBracket:
                try parseHeader()
                try expectLineEnd(after: "the table header")
            default:
                try parseKeyValue()
                try expectLineEnd(after: "the value")
            }
        }
        return root
    }

    mutating func skipSpaces() {
        while let c = peek(), c == TOMLByte.space || c == TOMLByte.tab { index += 1 }
    }

    mutating func skipComment() {
        while let c = peek(), c != TOMLByte.newline { index += 1 }
        // A comment may end in "\r\n"; the "\r" was skipped above, which is harmless.
    }

    /// Consumes "\n" or "\r\n" at the current position.
    mutating func consumeNewline() throws(TOMLError) {
        if peek() == TOMLByte.carriageReturn {
            guard peek(1) == TOMLByte.newline else {
                throw error("carriage return not followed by a line feed")
            }
            index += 1
        }
        index += 1
        line += 1
        lineStart = index
    }

    /// Skips spaces, newlines and comments (inside arrays).
    mutating func skipBlank() throws(TOMLError) {
        while let c = peek() {
            switch c {
            case TOMLByte.space, TOMLByte.tab: index += 1
            case TOMLByte.hash: skipComment()
            case TOMLByte.newline, TOMLByte.carriageReturn: try consumeNewline()
            default: return
            }
        }
    }

    mutating func expectLineEnd(after what: String) throws(TOMLError) {
        skipSpaces()
        if peek() == TOMLByte.hash { skipComment() }
        guard let c = peek() else { return }
        guard c == TOMLByte.newline || c == TOMLByte.carriageReturn else {
            throw error("unexpected text after \(what) (one key = value or [table] per line)")
        }
        try consumeNewline()
    }

    // MARK: Headers

    mutating func parseHeader() throws(TOMLError) {
        let start = index
        index += 1
        let isArray = peek() == TOMLByte.openBracket
        if isArray { index += 1 }
        skipSpaces()
        if peek() == TOMLByte.closeBracket {
            throw error("empty table name")
        }
        let parts = try parseKeyPath()
        skipSpaces()
        let closing = isArray ? "]]" : "]"
        guard peek() == TOMLByte.closeBracket, !isArray || peek(1) == TOMLByte.closeBracket else {
            throw error("expected \"\(closing)\" to close the table header opened at column \(column(of: start))")
        }
        index += isArray ? 2 : 1

        // Walk to the parent of the last part, creating implicit tables on the way.
        var table = root
        for part in parts.dropLast() {
            if let existing = table[part] {
                switch existing.kind {
                case .table(let sub):
                    table = sub
                case .tableArray(let elements):
                    table = elements[elements.count - 1]
                default:
                    throw error(
                        "\(table.path(of: part)) is already \(existing.typeDescription) (line \(existing.line)), not a table",
                        at: start, key: table.path(of: part))
                }
            } else {
                let sub = TOMLTable(line: line, origin: .implicit, path: table.path(of: part))
                table.set(part, TOMLValue(kind: .table(sub), line: line))
                table = sub
            }
        }

        let name = parts[parts.count - 1]
        let fullPath = table.path(of: name)
        if isArray {
            var elements: [TOMLTable] = []
            if let existing = table[name] {
                guard case .tableArray(let previous) = existing.kind else {
                    throw error(
                        "[[\(fullPath)]] conflicts with \(existing.typeDescription) of the same name (line \(existing.line))",
                        at: start, key: fullPath)
                }
                elements = previous
            }
            let element = TOMLTable(line: line, origin: .arrayElement, path: "\(fullPath)[\(elements.count)]")
            elements.append(element)
            table.set(name, TOMLValue(kind: .tableArray(elements), line: table[name]?.line ?? line))
            current = element
        } else {
            if let existing = table[name] {
                switch existing.kind {
                case .table(let sub) where sub.origin == .implicit:
                    sub.origin = .header
                    sub.line = line
                    table.set(name, TOMLValue(kind: .table(sub), line: line))
                    current = sub
                case .table(let sub):
                    throw error(
                        "table [\(fullPath)] is defined twice (first on line \(sub.line))", at: start, key: fullPath)
                case .tableArray:
                    throw error(
                        "[\(fullPath)] is an array of tables (line \(existing.line)); write [[\(fullPath)]]",
                        at: start, key: fullPath)
                default:
                    throw error(
                        "\(fullPath) is already \(existing.typeDescription) (line \(existing.line)), not a table",
                        at: start, key: fullPath)
                }
            } else {
                let sub = TOMLTable(line: line, origin: .header, path: fullPath)
                table.set(name, TOMLValue(kind: .table(sub), line: line))
                current = sub
            }
        }
    }

    // MARK: Keys

    /// `a`, `"quoted key"`, `'literal key'`, `a.b.c`.
    mutating func parseKeyPath() throws(TOMLError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpaces()
            parts.append(try parseKeyPart())
            skipSpaces()
            guard peek() == TOMLByte.dot else { return parts }
            index += 1
        }
    }

    mutating func parseKeyPart() throws(TOMLError) -> String {
        guard let c = peek() else { throw error("expected a key") }
        switch c {
        case TOMLByte.quote:
            if peek(1) == TOMLByte.quote, peek(2) == TOMLByte.quote {
                throw error("multi-line strings cannot be keys")
            }
            return try parseBasicString()
        case TOMLByte.apostrophe:
            if peek(1) == TOMLByte.apostrophe, peek(2) == TOMLByte.apostrophe {
                throw error("multi-line strings cannot be keys")
            }
            return try parseLiteralString()
        default:
            let start = index
            while let b = peek(), TOMLByte.isBareKey(b) { index += 1 }
            guard index > start else {
                if c == TOMLByte.equals { throw error("missing key before \"=\"") }
                if c == TOMLByte.newline || c == TOMLByte.carriageReturn || c == TOMLByte.dot || c == TOMLByte.closeBracket {
                    throw error("expected a key")
                }
                throw error("invalid character in key (bare keys may use A-Z a-z 0-9 _ -; quote other keys)")
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }
    }

    // MARK: Key/value pairs

    mutating func parseKeyValue() throws(TOMLError) {
        let keyLine = line
        let parts = try parseKeyPath()
        if let c = peek(), c != TOMLByte.equals, c != TOMLByte.space, c != TOMLByte.tab, c != TOMLByte.newline,
            c != TOMLByte.carriageReturn, c != TOMLByte.hash, c != TOMLByte.quote, c != TOMLByte.apostrophe
        {
            throw error("invalid character in key (bare keys may use A-Z a-z 0-9 _ -; quote other keys)")
        }
        skipSpaces()
        // Navigate dotted keys first so that errors below can name the full key.
        var table = current
        for part in parts.dropLast() {
            if let existing = table[part] {
                guard case .table(let sub) = existing.kind, sub.origin == .dotted else {
                    throw error(
                        "\(table.path(of: part)) is already defined (line \(existing.line)) and cannot be extended with a dotted key",
                        key: table.path(of: part))
                }
                table = sub
            } else {
                let sub = TOMLTable(line: keyLine, origin: .dotted, path: table.path(of: part))
                table.set(part, TOMLValue(kind: .table(sub), line: keyLine))
                table = sub
            }
        }
        let name = parts[parts.count - 1]
        let fullPath = table.path(of: name)
        guard peek() == TOMLByte.equals else {
            throw error("expected \"=\" after the key", key: fullPath)
        }
        index += 1
        skipSpaces()
        let value = try parseValue(key: fullPath)
        if let existing = table[name] {
            throw TOMLError(
                line: keyLine, column: nil, key: fullPath,
                message: "duplicate key (first set on line \(existing.line))")
        }
        table.set(name, value)
    }

    // MARK: Values

    mutating func parseValue(key: String) throws(TOMLError) -> TOMLValue {
        let valueLine = line
        guard let c = peek() else { throw error("missing value after \"=\"", key: key) }
        switch c {
        case TOMLByte.quote:
            if peek(1) == TOMLByte.quote, peek(2) == TOMLByte.quote {
                throw error("multi-line strings (\"\"\") are not supported; use one line with \\n escapes", key: key)
            }
            return TOMLValue(kind: .string(try parseBasicString()), line: valueLine)
        case TOMLByte.apostrophe:
            if peek(1) == TOMLByte.apostrophe, peek(2) == TOMLByte.apostrophe {
                throw error("multi-line literal strings (''') are not supported", key: key)
            }
            return TOMLValue(kind: .string(try parseLiteralString()), line: valueLine)
        case TOMLByte.openBracket:
            return try parseArray(key: key)
        case TOMLByte.openBrace:
            throw error("inline tables ({ ... }) are not supported; use a [table] section", key: key)
        case TOMLByte.newline, TOMLByte.carriageReturn, TOMLByte.hash:
            throw error("missing value after \"=\"", key: key)
        case TOMLByte.comma:
            throw error("expected a value before \",\"", key: key)
        case _ where TOMLByte.isDigit(c) || c == TOMLByte.plus || c == TOMLByte.minus:
            return TOMLValue(kind: .integer(try parseInteger(key: key)), line: valueLine)
        case _ where TOMLByte.isLetter(c):
            let start = index
            while let b = peek(), TOMLByte.isBareKey(b) || b == TOMLByte.dot { index += 1 }
            let word = String(decoding: bytes[start..<index], as: UTF8.self)
            switch word {
            case "true": return TOMLValue(kind: .boolean(true), line: valueLine)
            case "false": return TOMLValue(kind: .boolean(false), line: valueLine)
            case "inf", "nan":
                throw error("floating-point numbers are not supported; use an integer", at: start, key: key)
            default:
                // Never quote the word: it may be an unquoted password.
                throw error("invalid value; strings must be in quotes (\"...\" or '...')", at: start, key: key)
            }
        default:
            throw error("invalid value; strings must be in quotes (\"...\" or '...')", key: key)
        }
    }

    mutating func parseArray(key: String) throws(TOMLError) -> TOMLValue {
        let openLine = line
        let openColumn = column(of: index)
        index += 1
        var elements: [TOMLValue] = []
        let unterminated = TOMLError(
            line: openLine, column: openColumn, key: key,
            message: "unterminated array (missing \"]\")")
        while true {
            try skipBlank()
            guard let c = peek() else { throw unterminated }
            if c == TOMLByte.closeBracket {
                index += 1
                break
            }
            elements.append(try parseValue(key: "\(key)[\(elements.count)]"))
            try skipBlank()
            guard let next = peek() else { throw unterminated }
            if next == TOMLByte.comma {
                index += 1
            } else if next == TOMLByte.closeBracket {
                index += 1
                break
            } else {
                throw error("expected \",\" or \"]\" in the array opened on line \(openLine)", key: key)
            }
        }
        return TOMLValue(kind: .array(elements), line: openLine)
    }

    /// Decimal (sign, `_` between digits, no leading zeros) or unsigned 0x / 0o / 0b integers.
    /// Recognises floats and dates only to reject them clearly.
    mutating func parseInteger(key: String) throws(TOMLError) -> Int {
        let start = index
        while let b = peek(),
            TOMLByte.isBareKey(b) || b == TOMLByte.plus || b == TOMLByte.dot || b == TOMLByte.colon
        {
            index += 1
        }
        let token = Array(bytes[start..<index])
        func fail(_ message: String) -> TOMLError { error(message, at: start, key: key) }

        var digits = token[...]
        var negative = false
        if let first = digits.first, first == TOMLByte.plus || first == TOMLByte.minus {
            negative = first == TOMLByte.minus
            digits = digits.dropFirst()
        }
        let text = String(decoding: digits, as: UTF8.self)
        let isRadixPrefixed = text.hasPrefix("0x") || text.hasPrefix("0o") || text.hasPrefix("0b")
        if !isRadixPrefixed {
            let looksLikeDate = text.contains(":") || (text.count >= 10 && Array(text.utf8)[4] == TOMLByte.minus)
            if looksLikeDate {
                throw fail("dates and times are not supported; use a quoted string")
            }
            if text == "inf" || text == "nan" || text.contains(".") || text.contains("e") || text.contains("E") {
                throw fail("floating-point numbers are not supported; use an integer")
            }
        }

        var radix = 10
        if digits.count > 2, digits.first == 0x30, let marker = digits.dropFirst().first,
            marker == 0x78 || marker == 0x6F || marker == 0x62  // x o b
        {
            guard token.first != TOMLByte.plus && token.first != TOMLByte.minus else {
                throw fail("hexadecimal, octal and binary integers cannot have a sign")
            }
            radix = marker == 0x78 ? 16 : marker == 0x6F ? 8 : 2
            digits = digits.dropFirst(2)
        }
        guard !digits.isEmpty else { throw fail("invalid integer") }
        if radix == 10, digits.count > 1, digits.first == 0x30 {
            throw fail("leading zeros are not allowed in integers")
        }

        var value = 0
        var previousWasDigit = false
        for b in digits {
            if b == TOMLByte.underscore {
                guard previousWasDigit else {
                    throw fail("\"_\" in an integer must sit between two digits")
                }
                previousWasDigit = false
                continue
            }
            guard let d = Self.digitValue(b), d < radix else {
                throw fail("invalid integer")
            }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: radix)
            let (next, overflow2) =
                negative ? shifted.subtractingReportingOverflow(d) : shifted.addingReportingOverflow(d)
            guard !overflow1, !overflow2 else { throw fail("integer out of range") }
            value = next
            previousWasDigit = true
        }
        guard previousWasDigit else {
            throw fail("\"_\" in an integer must sit between two digits")
        }
        return value
    }

    static func digitValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: Int(b - 0x30)
        case 0x41...0x46: Int(b - 0x41 + 10)
        case 0x61...0x66: Int(b - 0x61 + 10)
        default: nil
        }
    }

    // MARK: Strings

    /// `"..."` with escapes. The error for an unterminated string points at its opening quote.
    mutating func parseBasicString() throws(TOMLError) -> String {
        let open = index
        index += 1
        var out: [UInt8] = []
        while true {
            guard let c = peek(), c != TOMLByte.newline, c != TOMLByte.carriageReturn else {
                throw error("unterminated string (missing closing \")", at: open)
            }
            switch c {
            case TOMLByte.quote:
                index += 1
                return String(decoding: out, as: UTF8.self)
            case TOMLByte.backslash:
                try parseEscape(into: &out)
            case _ where TOMLByte.isControl(c):
                throw error("control character in a string; use an escape such as \\t or \\n")
            default:
                out.append(c)
                index += 1
            }
        }
    }

    mutating func parseEscape(into out: inout [UInt8]) throws(TOMLError) {
        let backslash = index
        index += 1
        guard let e = peek() else {
            throw error("unterminated string (missing closing \")", at: backslash)
        }
        index += 1
        switch e {
        case TOMLByte.quote: out.append(TOMLByte.quote)
        case TOMLByte.backslash: out.append(TOMLByte.backslash)
        case 0x6E: out.append(TOMLByte.newline)  // n
        case 0x74: out.append(TOMLByte.tab)  // t
        case 0x72: out.append(TOMLByte.carriageReturn)  // r
        case 0x62: out.append(0x08)  // b
        case 0x66: out.append(0x0C)  // f
        case 0x75, 0x55:  // u, U
            let count = e == 0x75 ? 4 : 8
            var scalar: UInt32 = 0
            for _ in 0..<count {
                guard let h = peek(), let d = Self.digitValue(h) else {
                    throw error("\\\(e == 0x75 ? "u" : "U") must be followed by \(count) hex digits", at: backslash)
                }
                scalar = scalar << 4 | UInt32(d)
                index += 1
            }
            guard let s = Unicode.Scalar(scalar) else {
                throw error("\\u escape is not a valid Unicode scalar value", at: backslash)
            }
            UTF8.encode(s) { out.append($0) }
        default:
            // Don't echo the character: the string may be a password.
            throw error(
                "invalid escape sequence in a string (allowed: \\\" \\\\ \\b \\f \\n \\r \\t \\uXXXX \\UXXXXXXXX;"
                    + " use '...' for text with backslashes)",
                at: backslash)
        }
    }

    /// `'...'`: no escapes.
    mutating func parseLiteralString() throws(TOMLError) -> String {
        let open = index
        index += 1
        let start = index
        while true {
            guard let c = peek(), c != TOMLByte.newline, c != TOMLByte.carriageReturn else {
                throw error("unterminated string (missing closing ')", at: open)
            }
            if c == TOMLByte.apostrophe { break }
            if TOMLByte.isControl(c) {
                throw error("control character in a literal string")
            }
            index += 1
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        index += 1
        return text
    }
}
