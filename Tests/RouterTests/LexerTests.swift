import Router
import Testing

private func lex(_ sql: String, comments: Bool = false) -> [(SQLTokenKind, String)] {
    SQLLexer.tokenize(sql, includeComments: comments).map { ($0.kind, SQLLexer.text(of: $0, in: sql)) }
}

private func kinds(_ sql: String, comments: Bool = false) -> [SQLTokenKind] { lex(sql, comments: comments).map(\.0) }
private func texts(_ sql: String, comments: Bool = false) -> [String] { lex(sql, comments: comments).map(\.1) }

@Suite struct LexerTests {
    @Test func everyQuotingFormIsOneToken() {
        let sql = #"SELECT e'a\'b', 'it''s', U&'x', U&"y", "q""q", B'101', X'1F', N'n', $1, $$a$$, $t$b$t$"#
        #expect(lex(sql).map(\.0) == [
            .word, .string, .comma, .string, .comma, .string, .comma, .quotedIdentifier, .comma,
            .quotedIdentifier, .comma, .string, .comma, .string, .comma, .string, .comma, .parameter, .comma,
            .dollarString, .comma, .dollarString,
        ])
        #expect(texts(sql).filter { $0 != "," } == [
            "SELECT", #"e'a\'b'"#, "'it''s'", "U&'x'", #"U&"y""#, #""q""q""#, "B'101'", "X'1F'", "N'n'", "$1", "$$a$$", "$t$b$t$",
        ])
    }

    @Test func numbersOperatorsAndPunctuation() {
        #expect(lex("1.5e-3 0x1F 1_000 .5 a::int <> b != c := [1]").map(\.0) == [
            .number, .number, .number, .number, .word, .op, .word, .op, .word, .op, .word, .op,
            .leftBracket, .number, .rightBracket,
        ])
        #expect(texts("x>=-1") == ["x", ">=", "-", "1"], "trailing - is split off, as PostgreSQL does")
        #expect(texts("x=-+1") == ["x", "=", "-", "+", "1"])
        #expect(texts("a @- b") == ["a", "@-", "b"], "kept whole when it holds an unusual operator byte")
        #expect(texts("a *- b") == ["a", "*", "-", "b"])
        #expect(kinds("a.b; c: d") == [.word, .dot, .word, .semicolon, .word, .colon, .word])
    }

    @Test func identifiersMayHoldDollarsAndNonASCII() {
        #expect(texts("SELECT a$b$c, café, _x1 FROM t") == ["SELECT", "a$b$c", ",", "café", ",", "_x1", "FROM", "t"])
    }

    @Test func blockCommentsNest() {
        #expect(lex("/* a /* b */ c */ SELECT", comments: true).map(\.0) == [.comment, .word])
        #expect(texts("/* a /* b */ c */ SELECT") == ["SELECT"])
    }

    @Test func lineCommentsEndAtNewlineOrCarriageReturn() {
        #expect(texts("-- x\nSELECT") == ["SELECT"])
        #expect(texts("-- x\rSELECT") == ["SELECT"])
        #expect(texts("SELECT 1 -- x") == ["SELECT", "1"])
    }

    @Test func operatorsStopBeforeAComment() {
        #expect(texts("SELECT 1+--x\n2") == ["SELECT", "1", "+", "2"])
        #expect(texts("SELECT 1*/*x*/2") == ["SELECT", "1", "*", "2"])
    }

    @Test func dollarQuotesMatchOnlyTheirOwnTag() {
        #expect(lex("$a$ $b$ x $b$ $a$").map(\.0) == [.dollarString])
        #expect(lex("$a$ x $A$ $a$").map(\.0) == [.dollarString], "tags are case-sensitive")
        #expect(kinds("$ x") == [.other, .word])
        #expect(kinds("$1x") == [.parameter, .word])
    }

    @Test func eStringsHonourBackslashesAndPlainStringsDoNot() {
        #expect(texts(#"E'\'' x"#) == [#"E'\''"#, "x"])
        #expect(texts(#"'\' x"#) == [#"'\'"#, "x"])
        #expect(texts(#"U&'\' x"#) == [#"U&'\'"#, "x"])
    }

    @Test func backslashesInConformingStringsAreFlagged() {
        #expect(SQLLexer.tokenize(#"'a\b'"#).first?.hasBackslash == true)
        #expect(SQLLexer.tokenize(#"E'a\b'"#).first?.hasBackslash == false)
        #expect(SQLLexer.tokenize("'ab'").first?.hasBackslash == false)
    }

    @Test func parenthesisDepthIsTracked() {
        let tokens = SQLLexer.tokenize("((a)) b )")
        #expect(tokens.map(\.depth) == [0, 1, 2, 1, 0, 0, 0], "( and ) carry the depth outside them; never negative")
    }

    @Test(arguments: [
        ("'abc", SQLTokenKind.string), ("E'abc\\'", .string), ("\"abc", .quotedIdentifier),
        ("U&\"abc", .quotedIdentifier), ("$$abc", .dollarString), ("$x$abc$y$", .dollarString),
        ("/* abc", .comment), ("/* a /* b */", .comment),
    ])
    func unterminatedTokensRunToTheEndAndAreFlagged(_ sql: String, _ kind: SQLTokenKind) throws {
        let token = try #require(SQLLexer.tokenize(sql, includeComments: true).last)
        #expect(token.kind == kind)
        #expect(token.isUnterminated)
        #expect(token.byteRange.upperBound == sql.utf8.count)
    }

    @Test func keywordSoupNeverCrashesTheClassifier() {
        // Random sequences of the words and symbols the statement rules look at, so every rule
        // meets truncated and out-of-order input (a statement ending right after `pg_temp`, …).
        let vocabulary = [
            "SELECT", "INSERT", "INTO", "TEMP", "pg_temp", ".", "(", ")", ";", "FOR", "UPDATE", "SHARE", "KEY",
            "EXPLAIN", "ANALYZE", "COPY", "TO", "FROM", "DECLARE", "CURSOR", "WITH", "HOLD", "PREPARE", "AS",
            "TRANSACTION", "SET", "RESET", "SESSION", "LOCAL", "CHARACTERISTICS", "BEGIN", "ATOMIC", "END", "CASE",
            "CREATE", "OR", "REPLACE", "FUNCTION", "LOCK", "IN", "MODE", "ROW", "ACCESS", "EXCLUSIVE", "set_config",
            "'x'", "false", "true", ",", "$1", "causeway", "route", "min_lsn", "=", "TIME", "ZONE", "SHOW", "ALL",
            "DISCARD", "UNLISTEN", "*", "COMMIT", "ROLLBACK", "AND", "CHAIN", "NO", "ON", "DROP", "nextval",
            "pg_advisory_lock", "'16/0'", "DEFAULT", "READ", "ONLY", "WRITE", "ISOLATION", "LEVEL", "START",
            "/* causeway: replica */", "--x\n", "$$x$$", "\"q\"", "E'\\''", "SAVEPOINT", "PREPARED", "CLOSE",
            "DEALLOCATE", "LISTEN", "WAIT", "VALUES", "TABLE", "GLOBAL", "ROLE", "NAMES", "SCHEMA", "XML", "OPTION",
        ]
        var generator = SeededRandom(seed: 0x5EED)
        let cache = ClassificationCache(capacity: 64)
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<14, using: &generator)
            let sql = (0..<count).map { _ in vocabulary.randomElement(using: &generator)! }.joined(separator: " ")
            let classification = QueryClassifier.classify(sql, volatileFunctions: ["x"])
            #expect(cache.classify(sql, volatileFunctions: ["x"]) == classification)
        }
    }

    @Test func deeplyNestedStatementsAreRefusedNotRecursedInto() {
        let explains = String(repeating: "EXPLAIN ANALYZE ", count: 100_000) + "SELECT 1"
        #expect(QueryClassifier.classify(explains, volatileFunctions: []).isWrite)
        let copies = String(repeating: "COPY (", count: 100_000) + "SELECT 1" + String(repeating: ") TO STDOUT", count: 100_000)
        #expect(QueryClassifier.classify(copies, volatileFunctions: []).isWrite)
        #expect(!QueryClassifier.classify("EXPLAIN ANALYZE EXPLAIN SELECT 1", volatileFunctions: []).isWrite, "shallow nesting still works")
        let parentheses = String(repeating: "(", count: 100_000) + "SELECT 1" + String(repeating: ")", count: 100_000)
        #expect(!QueryClassifier.classify(parentheses, volatileFunctions: []).isWrite)
    }

    @Test func hostileRepetitionIsHandledInLinearTime() {
        // Each of these took quadratic time in a naive design; they must finish and classify right.
        let nestedSetConfig = "SELECT " + String(repeating: "set_config('a', ", count: 20_000) + "'b'" + String(repeating: ", false)", count: 20_000)
        let classification = QueryClassifier.classify(nestedSetConfig, volatileFunctions: [])
        #expect(classification.pin == .untrackedSetting)
        #expect(classification.functions == ["set_config"])

        let manyFunctions = "SELECT " + (0..<50_000).map { "f\($0)()" }.joined(separator: ", ")
        let listed = QueryClassifier.classify(manyFunctions, volatileFunctions: ["f49999"])
        #expect(listed.functions.count == 50_000)
        #expect(listed.isWrite)
    }

    @Test func arbitraryBytesNeverCrashAndTokensAdvance() {
        var generator = SeededRandom(seed: 0xC0FFEE)
        let alphabet = Array("sElEcT'\"$-/*();:., \n\\EeU&1x_é\u{0}".utf8)
        for _ in 0..<2_000 {
            let length = Int.random(in: 0..<40, using: &generator)
            let bytes = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            let sql = String(decoding: bytes, as: UTF8.self)
            var previousEnd = 0
            for token in SQLLexer.tokenize(sql, includeComments: true) {
                #expect(token.byteRange.lowerBound >= previousEnd)
                #expect(!token.byteRange.isEmpty)
                previousEnd = token.byteRange.upperBound
            }
            #expect(previousEnd <= sql.utf8.count)
            _ = QueryClassifier.classify(sql, volatileFunctions: ["x"])
        }
    }
}

/// SplitMix64, so a failing fuzz iteration can be replayed.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
