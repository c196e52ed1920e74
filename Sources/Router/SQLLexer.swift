// A PostgreSQL lexer, precise about everything that can hide a keyword: `--` and nested `/* */`
// comments, '…' ('' escapes), E'…' (backslash escapes), B'…'/X'…'/N'…', U&'…' and U&"…",
// "quoted identifiers", $tag$…$tag$ dollar quotes. It walks UTF-8 bytes and produces small value
// tokens (offsets into the text), so lexing allocates nothing per token.

public enum SQLTokenKind: UInt8, Sendable {
    /// Unquoted identifier or keyword (may contain non-ASCII bytes and `$`).
    case word
    /// "quoted identifier" or U&"…".
    case quotedIdentifier
    /// '…', E'…', B'…', X'…', N'…', U&'…'.
    case string
    /// $tag$…$tag$.
    case dollarString
    case number
    /// Positional parameter `$1`.
    case parameter
    /// Operator: a run of `+ - * / < > = ~ ! @ # % ^ & | \` ?`, and `::` / `:=`.
    case op
    case leftParen, rightParen, leftBracket, rightBracket, comma, semicolon, dot, colon
    /// `--` or `/* */` comment (only returned by `SQLLexer.tokenize(_:includeComments:)`).
    case comment
    /// Any other byte (control characters, a stray `$`, a backslash).
    case other
}

/// One token: its kind and where it lies in the UTF-8 bytes of the text.
public struct SQLToken: Sendable, Equatable {
    public var kind: SQLTokenKind
    /// The closing quote or comment end is missing: the text ran out first.
    public var isUnterminated: Bool
    /// A '…' string (not E'…') containing a backslash: it would end elsewhere if the server ran
    /// with `standard_conforming_strings = off`.
    public var hasBackslash: Bool
    /// Parenthesis nesting at the token: `(` and `)` carry the depth outside them.
    public var depth: Int32
    var start: Int32
    var end: Int32

    public var byteRange: Range<Int> { Int(start)..<Int(end) }
}

public enum SQLLexer {
    /// Tokens of `sql` (comments dropped unless asked for).
    public static func tokenize(_ sql: String, includeComments: Bool = false) -> [SQLToken] {
        var text = sql
        return text.withUTF8 { bytes in
            var lexer = Lexer(bytes)
            var tokens: [SQLToken] = []
            while let token = lexer.next() {
                if includeComments || token.kind != .comment { tokens.append(token) }
            }
            return tokens
        }
    }

    /// The source text of `token` within `sql`.
    public static func text(of token: SQLToken, in sql: String) -> String {
        let utf8 = Array(sql.utf8)
        return String(decoding: utf8[token.byteRange.clamped(to: utf8.indices)], as: UTF8.self)
    }
}

/// The lexer proper. `standardConformingStrings = false` makes '…' honour backslash escapes.
struct Lexer {
    let bytes: UnsafeBufferPointer<UInt8>
    let standardConformingStrings: Bool
    private(set) var position = 0
    private var depth: Int32 = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>, standardConformingStrings: Bool = true) {
        self.bytes = bytes
        self.standardConformingStrings = standardConformingStrings
    }

    mutating func next() -> SQLToken? {
        let count = bytes.count
        while position < count, isSpace(bytes[position]) { position += 1 }
        guard position < count else { return nil }
        let start = position
        let first = bytes[start]
        let following = byte(at: start + 1)

        switch first {
        case .minus where following == .minus:
            position += 2
            while position < count, bytes[position] != .newline, bytes[position] != .carriageReturn { position += 1 }
            return token(.comment, from: start)
        case .slash where following == .star:
            return blockComment(from: start)
        case .quote:
            return quoted(.string, from: start, bodyAt: start + 1, backslashEscapes: !standardConformingStrings)
        case .doubleQuote:
            return quoted(.quotedIdentifier, from: start, bodyAt: start + 1, backslashEscapes: false)
        case .dollar:
            return dollar(from: start)
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return number(from: start)
        case .dot where isDigit(following):
            return number(from: start)
        case .leftParen:
            position += 1
            defer { depth += 1 }
            return token(.leftParen, from: start)
        case .rightParen:
            position += 1
            depth = max(0, depth - 1)
            return token(.rightParen, from: start)
        case .leftBracket: position += 1; return token(.leftBracket, from: start)
        case .rightBracket: position += 1; return token(.rightBracket, from: start)
        case .comma: position += 1; return token(.comma, from: start)
        case .semicolon: position += 1; return token(.semicolon, from: start)
        case .dot: position += 1; return token(.dot, from: start)
        case .colon:
            if following == .colon || following == .equals {
                position += 2
                return token(.op, from: start)
            }
            position += 1
            return token(.colon, from: start)
        default:
            if isIdentifierStart(first) { return wordOrPrefixedString(from: start) }
            if isOperatorByte(first) { return operatorRun(from: start) }
            position += 1
            return token(.other, from: start)
        }
    }

    // MARK: - Token scanners

    private mutating func blockComment(from start: Int) -> SQLToken {
        position = start + 2
        var nesting = 1
        while position < bytes.count {
            let byte = bytes[position]
            if byte == .slash, self.byte(at: position + 1) == .star {
                nesting += 1
                position += 2
            } else if byte == .star, self.byte(at: position + 1) == .slash {
                nesting -= 1
                position += 2
                if nesting == 0 { return token(.comment, from: start) }
            } else {
                position += 1
            }
        }
        return token(.comment, from: start, unterminated: true)
    }

    /// '…' or "…" with doubled-quote escapes (and backslash escapes for E'…' or when
    /// standard_conforming_strings is off). `bodyAt` is the offset just after the opening quote.
    private mutating func quoted(_ kind: SQLTokenKind, from start: Int, bodyAt: Int, backslashEscapes: Bool) -> SQLToken {
        let quote = bytes[bodyAt - 1]
        position = bodyAt
        var sawBackslash = false
        while position < bytes.count {
            let byte = bytes[position]
            if byte == quote {
                if self.byte(at: position + 1) == quote {
                    position += 2
                    continue
                }
                position += 1
                var result = token(kind, from: start)
                result.hasBackslash = sawBackslash && kind == .string && !backslashEscapes
                return result
            }
            if byte == .backslash {
                sawBackslash = true
                if backslashEscapes {
                    position += 2
                    continue
                }
            }
            position += 1
        }
        position = bytes.count
        return token(kind, from: start, unterminated: true)
    }

    /// `$1` parameter, `$tag$…$tag$` string, or a stray `$`.
    private mutating func dollar(from start: Int) -> SQLToken {
        var cursor = start + 1
        if isDigit(byte(at: cursor)) {
            while isDigit(byte(at: cursor)) { cursor += 1 }
            position = cursor
            return token(.parameter, from: start)
        }
        if cursor < bytes.count, isIdentifierStart(bytes[cursor]) {
            cursor += 1
            while cursor < bytes.count, isIdentifierStart(bytes[cursor]) || isDigit(bytes[cursor]) { cursor += 1 }
        }
        guard byte(at: cursor) == .dollar else {
            position = start + 1
            return token(.other, from: start)
        }
        let delimiterLength = cursor + 1 - start
        var search = cursor + 1
        while search + delimiterLength <= bytes.count {
            if bytes[search] == .dollar, matchesDelimiter(at: search, delimiterStart: start, length: delimiterLength) {
                position = search + delimiterLength
                return token(.dollarString, from: start)
            }
            search += 1
        }
        position = bytes.count
        return token(.dollarString, from: start, unterminated: true)
    }

    private func matchesDelimiter(at offset: Int, delimiterStart: Int, length: Int) -> Bool {
        for index in 0..<length where bytes[offset + index] != bytes[delimiterStart + index] { return false }
        return true
    }

    private mutating func number(from start: Int) -> SQLToken {
        position = start + 1
        while position < bytes.count {
            let byte = bytes[position]
            if isDigit(byte) || isLetter(byte) || byte == .underscore || byte == .dot {
                position += 1
            } else if (byte == .plus || byte == .minus), bytes[position - 1] | 0x20 == UInt8(ascii: "e"),
                      isDigit(self.byte(at: position + 1)) {
                position += 1
            } else {
                break
            }
        }
        return token(.number, from: start)
    }

    private mutating func wordOrPrefixedString(from start: Int) -> SQLToken {
        let lower = bytes[start] | 0x20
        let following = byte(at: start + 1)
        if following == .quote {
            switch lower {
            case UInt8(ascii: "e"):
                return quoted(.string, from: start, bodyAt: start + 2, backslashEscapes: true)
            case UInt8(ascii: "n"):
                return quoted(.string, from: start, bodyAt: start + 2, backslashEscapes: !standardConformingStrings)
            case UInt8(ascii: "b"), UInt8(ascii: "x"):
                // Bit strings take no escapes at all (and can hold no backslash that matters).
                var token = quoted(.string, from: start, bodyAt: start + 2, backslashEscapes: false)
                token.hasBackslash = false
                return token
            default: break
            }
        }
        if lower == UInt8(ascii: "u"), following == .ampersand {
            switch byte(at: start + 2) {
            case .quote: return quoted(.string, from: start, bodyAt: start + 3, backslashEscapes: false)
            case .doubleQuote: return quoted(.quotedIdentifier, from: start, bodyAt: start + 3, backslashEscapes: false)
            default: break
            }
        }
        position = start + 1
        while position < bytes.count {
            let byte = bytes[position]
            guard isIdentifierStart(byte) || isDigit(byte) || byte == .dollar else { break }
            position += 1
        }
        return token(.word, from: start)
    }

    /// An operator run, cut the way PostgreSQL's scanner cuts it: it stops before `--` or `/*`,
    /// and trailing `+`/`-` are split off unless the operator holds one of ``~!@#^&|`?%``
    /// (so `=-1` is `=` then `-1`, and `SET x=-1` reads as it does on the server).
    private mutating func operatorRun(from start: Int) -> SQLToken {
        position = start + 1
        while position < bytes.count, isOperatorByte(bytes[position]) {
            let byte = bytes[position]
            let following = self.byte(at: position + 1)
            if (byte == .minus && following == .minus) || (byte == .slash && following == .star) { break }
            position += 1
        }
        if position - start > 1, bytes[position - 1] == .plus || bytes[position - 1] == .minus,
           !(start..<position - 1).contains(where: { isUnusualOperatorByte(bytes[$0]) }) {
            repeat { position -= 1 } while position - start > 1 && (bytes[position - 1] == .plus || bytes[position - 1] == .minus)
        }
        return token(.op, from: start)
    }

    private func isUnusualOperatorByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "@"), UInt8(ascii: "#"), UInt8(ascii: "^"),
             UInt8(ascii: "&"), UInt8(ascii: "|"), UInt8(ascii: "`"), UInt8(ascii: "?"), UInt8(ascii: "%"):
            true
        default:
            false
        }
    }

    // MARK: - Helpers

    private func token(_ kind: SQLTokenKind, from start: Int, unterminated: Bool = false) -> SQLToken {
        SQLToken(kind: kind, isUnterminated: unterminated, hasBackslash: false, depth: depth,
                 start: Int32(truncatingIfNeeded: start), end: Int32(truncatingIfNeeded: position))
    }

    private func byte(at offset: Int) -> UInt8 { offset < bytes.count ? bytes[offset] : 0 }
}

// MARK: - Byte classes

@inline(__always) func isSpace(_ byte: UInt8) -> Bool {
    byte == .space || (byte >= 0x09 && byte <= 0x0D)
}

@inline(__always) func isDigit(_ byte: UInt8) -> Bool { byte >= .digit0 && byte <= .digit9 }

@inline(__always) func isLetter(_ byte: UInt8) -> Bool {
    let lower = byte | 0x20
    return lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "z")
}

@inline(__always) func isIdentifierStart(_ byte: UInt8) -> Bool {
    isLetter(byte) || byte == .underscore || byte >= 0x80
}

@inline(__always) func isOperatorByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "*"), UInt8(ascii: "/"), UInt8(ascii: "<"),
         UInt8(ascii: ">"), UInt8(ascii: "="), UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "@"),
         UInt8(ascii: "#"), UInt8(ascii: "%"), UInt8(ascii: "^"), UInt8(ascii: "&"), UInt8(ascii: "|"),
         UInt8(ascii: "`"), UInt8(ascii: "?"):
        true
    default:
        false
    }
}

@inline(__always) func asciiLowercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}

extension UInt8 {
    static let space = UInt8(ascii: " ")
    static let newline = UInt8(ascii: "\n")
    static let carriageReturn = UInt8(ascii: "\r")
    static let minus = UInt8(ascii: "-")
    static let plus = UInt8(ascii: "+")
    static let slash = UInt8(ascii: "/")
    static let star = UInt8(ascii: "*")
    static let quote = UInt8(ascii: "'")
    static let doubleQuote = UInt8(ascii: "\"")
    static let dollar = UInt8(ascii: "$")
    static let dot = UInt8(ascii: ".")
    static let comma = UInt8(ascii: ",")
    static let colon = UInt8(ascii: ":")
    static let semicolon = UInt8(ascii: ";")
    static let equals = UInt8(ascii: "=")
    static let leftParen = UInt8(ascii: "(")
    static let rightParen = UInt8(ascii: ")")
    static let leftBracket = UInt8(ascii: "[")
    static let rightBracket = UInt8(ascii: "]")
    static let backslash = UInt8(ascii: "\\")
    static let underscore = UInt8(ascii: "_")
    static let ampersand = UInt8(ascii: "&")
    static let digit0 = UInt8(ascii: "0")
    static let digit9 = UInt8(ascii: "9")
}
