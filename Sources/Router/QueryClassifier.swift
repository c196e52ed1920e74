// Classifies a query text for routing: every `;`-separated statement is examined, and any statement
// that must run on the primary makes the whole text a write. The rules themselves live in
// StatementRules.swift; this file holds the entry point, statement splitting and token helpers.

public enum QueryClassifier {
    /// Classifies `sql`. `volatileFunctions` holds names of user functions declared VOLATILE;
    /// calling one makes the text a write.
    public static func classify(_ sql: String, volatileFunctions: Set<String>) -> Classification {
        var classification = classifyIgnoringVolatility(sql)
        classification.isWrite = classification.isWrite(volatileFunctions: volatileFunctions)
        return classification
    }

    /// Everything that does not depend on the volatile-function list (what the cache keeps).
    static func classifyIgnoringVolatility(_ sql: String) -> Classification {
        // Token offsets are 32-bit; PostgreSQL caps a query at 1 GB anyway.
        guard sql.utf8.count < Int(Int32.max) else { return Classification(isWrite: true) }
        var text = sql
        return text.withUTF8 { bytes in
            var analyzer = Analyzer(bytes: bytes, standardConformingStrings: true)
            var classification = analyzer.run()
            // A '…' string holding a backslash ends elsewhere if the server runs with
            // standard_conforming_strings = off. Read the text that way too and keep the more
            // conservative answer, so no setting can hide a write inside what looked like a string.
            if analyzer.sawBackslashInPlainString, !classification.isWrite {
                var alternative = Analyzer(bytes: bytes, standardConformingStrings: false)
                let reading = alternative.run()
                // Unterminated under that reading means the server would reject it: nothing runs.
                if reading.isWrite, !alternative.sawUnterminated { classification.isWrite = true }
            }
            return classification
        }
    }
}

/// One pass over one text. Statement rules are in an extension (StatementRules.swift).
struct Analyzer {
    let bytes: UnsafeBufferPointer<UInt8>
    let standardConformingStrings: Bool
    var tokens: [SQLToken] = []
    var result = Classification(statementCount: 0)
    var sawUnterminated = false
    var sawBackslashInPlainString = false
    /// Transaction block state while walking the statements of this text.
    var blockOpen = false
    var blockReadOnly: Bool?
    var causewayStatements = 0
    /// Depth of statements classified inside other statements (EXPLAIN, COPY, DECLARE, PREPARE).
    var nesting = 0
    /// Names already in `result.functions`.
    var seenFunctions: Set<String> = []

    init(bytes: UnsafeBufferPointer<UInt8>, standardConformingStrings: Bool) {
        self.bytes = bytes
        self.standardConformingStrings = standardConformingStrings
    }

    mutating func run() -> Classification {
        lex()
        classifyStatements()
        if sawUnterminated {
            // An unterminated string, identifier or comment: we cannot know where it ends, so the
            // text may hide anything. The server will most likely reject it; send it to the primary.
            result.isWrite = true
            result.causewayCommand = nil
        }
        if causewayStatements > 0, result.statementCount > 1 {
            result.causewayCommand = .invalid(
                sqlState: "0A000",
                message: "causeway.* settings must be sent as a query of their own, not combined with other statements")
        }
        result.leavesTransactionOpen = blockOpen
        result.transactionReadOnly = blockOpen ? blockReadOnly : nil
        return result
    }

    private mutating func lex() {
        var lexer = Lexer(bytes, standardConformingStrings: standardConformingStrings)
        tokens.reserveCapacity(min(bytes.count / 3 + 4, 1 << 14))
        var leading = true
        while let token = lexer.next() {
            if token.isUnterminated { sawUnterminated = true }
            if token.hasBackslash { sawBackslashInPlainString = true }
            if token.kind == .comment {
                if leading, result.hint == nil { result.hint = hint(in: token) }
                continue
            }
            leading = false
            tokens.append(token)
        }
    }

    /// Splits at `;`, except inside a `BEGIN ATOMIC … END` body of CREATE FUNCTION/PROCEDURE
    /// (CASE … END nests inside it), the way psql does.
    private mutating func classifyStatements() {
        var statementStart = 0
        var atomicDepth = 0
        for index in tokens.indices {
            switch tokens[index].kind {
            case .semicolon where atomicDepth == 0:
                classifyTopLevel(statementStart, index)
                statementStart = index + 1
            case .word:
                if isKeyword(index, "begin"), isKeyword(index + 1, "atomic"), isRoutineDefinition(at: statementStart) {
                    atomicDepth += 1
                } else if atomicDepth > 0, isKeyword(index, "case") {
                    atomicDepth += 1
                } else if atomicDepth > 0, isKeyword(index, "end") {
                    atomicDepth -= 1
                }
            default:
                break
            }
        }
        classifyTopLevel(statementStart, tokens.count)
    }

    private mutating func classifyTopLevel(_ start: Int, _ end: Int) {
        guard start < end else { return }
        result.statementCount += 1
        classify(start, end, effects: true)
    }

    private func isRoutineDefinition(at start: Int) -> Bool {
        guard isKeyword(start, "create") else { return false }
        var index = start + 1
        if isKeyword(index, "or"), isKeyword(index + 1, "replace") { index += 2 }
        return isKeyword(index, "function") || isKeyword(index, "procedure")
    }

    /// `/* causeway: primary */`, `-- causeway=replica`: the word after `causeway:` or `causeway=`.
    private func hint(in comment: SQLToken) -> RouteHint? {
        let end = Int(comment.end)
        var index = Int(comment.start)
        while index + 8 <= end {
            defer { index += 1 }
            guard matches(at: index, "causeway") else { continue }
            var cursor = index + 8
            while cursor < end, isSpace(bytes[cursor]) { cursor += 1 }
            guard cursor < end, bytes[cursor] == .colon || bytes[cursor] == .equals else { continue }
            cursor += 1
            while cursor < end, isSpace(bytes[cursor]) { cursor += 1 }
            let wordStart = cursor
            while cursor < end, isLetter(bytes[cursor]) { cursor += 1 }
            if let hint = RouteHint(rawValue: lowercased(wordStart..<cursor)) { return hint }
        }
        return nil
    }

    // MARK: - Token helpers

    /// Whether token `index` is the unquoted keyword `keyword` (given in lower case).
    func isKeyword(_ index: Int, _ keyword: StaticString) -> Bool {
        guard index >= 0, index < tokens.count else { return false }
        let token = tokens[index]
        guard token.kind == .word, Int(token.end - token.start) == keyword.utf8CodeUnitCount else { return false }
        return matches(at: Int(token.start), keyword)
    }

    /// Case-insensitive comparison of the bytes at `offset` with `keyword` (lower case).
    func matches(at offset: Int, _ keyword: StaticString) -> Bool {
        let count = keyword.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        let expected = keyword.utf8Start
        for position in 0..<count where asciiLowercased(bytes[offset + position]) != expected[position] {
            return false
        }
        return true
    }

    func isOperator(_ index: Int, _ text: StaticString) -> Bool {
        guard index < tokens.count, tokens[index].kind == .op,
              Int(tokens[index].end - tokens[index].start) == text.utf8CodeUnitCount
        else { return false }
        return matches(at: Int(tokens[index].start), text)
    }

    func lowercased(_ range: Range<Int>) -> String {
        String(unsafeUninitializedCapacity: range.count) { buffer in
            for (position, offset) in range.enumerated() { buffer[position] = asciiLowercased(bytes[offset]) }
            return range.count
        }
    }

    func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Source text from the start of token `first` to the end of token `end - 1`.
    func sourceText(_ first: Int, _ end: Int) -> String {
        guard first < end else { return "" }
        return text(Int(tokens[first].start)..<Int(tokens[end - 1].end))
    }

    /// An identifier's name: unquoted words lower-cased, "quoted" ones verbatim (`""` → `"`).
    func identifier(_ index: Int) -> String? {
        guard index < tokens.count else { return nil }
        let token = tokens[index]
        switch token.kind {
        case .word:
            return lowercased(token.byteRange)
        case .quotedIdentifier where !token.isUnterminated:
            let opening = bytes[Int(token.start)] == .doubleQuote ? 1 : 3  // "…" or U&"…"
            return unescaped(Int(token.start) + opening..<Int(token.end) - 1, quote: .doubleQuote)
        default:
            return nil
        }
    }

    /// A literal's value when it needs no interpretation: '…', N'…' and E'…' without backslashes,
    /// $$…$$, numbers, and bare words (lower-cased).
    func literalText(_ index: Int) -> String? {
        guard index < tokens.count else { return nil }
        let token = tokens[index]
        let start = Int(token.start), end = Int(token.end)
        guard !token.isUnterminated else { return nil }
        switch token.kind {
        case .word:
            return lowercased(token.byteRange)
        case .number:
            return text(token.byteRange)
        case .dollarString:
            var tagEnd = start + 1
            while bytes[tagEnd] != .dollar { tagEnd += 1 }
            let delimiter = tagEnd + 1 - start
            return text(start + delimiter..<end - delimiter)
        case .string:
            let bodyStart: Int
            switch asciiLowercased(bytes[start]) {
            case .quote: bodyStart = start + 1
            case UInt8(ascii: "n"), UInt8(ascii: "e"): bodyStart = start + 2
            default: return nil  // B'…', X'…', U&'…'
            }
            let body = bodyStart..<end - 1
            // With a backslash the value depends on E'…' escapes or standard_conforming_strings.
            if body.contains(where: { bytes[$0] == .backslash }) { return nil }
            return unescaped(body, quote: .quote)
        default:
            return nil
        }
    }

    private func unescaped(_ range: Range<Int>, quote: UInt8) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(range.count)
        var offset = range.lowerBound
        while offset < range.upperBound {
            output.append(bytes[offset])
            offset += bytes[offset] == quote && offset + 1 < range.upperBound && bytes[offset + 1] == quote ? 2 : 1
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// A dotted name (`search_path`, `myapp.user_id`, `"Weird".x`), lower-cased, and the index after it.
    func dottedName(_ start: Int, _ end: Int) -> (name: String, next: Int)? {
        guard start < end, var name = identifier(start) else { return nil }
        var index = start + 1
        while index + 1 < end, tokens[index].kind == .dot, let part = identifier(index + 1) {
            name += "." + part
            index += 2
        }
        return (asciiLowercased(name), index)
    }

    /// Index of the `)` closing the `(` at `open`, or `end` when it is missing (or further than
    /// `limit` tokens away).
    func matchingClose(_ open: Int, _ end: Int, limit: Int = .max) -> Int {
        let depth = tokens[open].depth
        var index = open + 1
        let end = open < end - limit ? open + limit : end
        while index < end {
            if tokens[index].kind == .rightParen, tokens[index].depth == depth { return index }
            index += 1
        }
        return end
    }
}

func asciiLowercased(_ string: String) -> String {
    guard string.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else { return string }
    return String(decoding: string.utf8.map(asciiLowercased), as: UTF8.self)
}

/// PostgreSQL's boolean spellings (`true`, `on`, `yes`, `1`, `t`, …).
func parseBoolean(_ text: String) -> Bool? {
    switch asciiLowercased(text) {
    case "t", "true", "y", "yes", "on", "1": true
    case "f", "false", "n", "no", "off", "0": false
    default: nil
    }
}
