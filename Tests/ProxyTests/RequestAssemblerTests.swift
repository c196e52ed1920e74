import Router
import Testing
import Wire
@testable import Proxy

/// The client stream after login, cut into units: whole simple queries and function calls,
/// extended batches forwarded in parts as they arrive, COPY data following its statement.
struct RequestAssemblerTests {
    var assembler = RequestAssembler()
    var statements: [String: PreparedStatement] = [:]

    var context: RequestAssembler.Context {
        let known = statements
        return RequestAssembler.Context(classifier: { QueryClassifier.classify($0, volatileFunctions: []) },
                                        statements: { known[$0] })
    }

    /// Feeds messages; returns the outputs in order, as short descriptions.
    mutating func feed(_ messages: [FrontendMessage], inputEnds: Bool = false) throws -> [String] {
        var out: [String] = []
        for message in messages {
            let bytes = message.encoded()
            let body = bytes[5...]
            let request = try FrontendRequest.decode(type: bytes[0], body: body)
            let (first, second) = assembler.receive(request, type: bytes[0], body: body, context: context)
            for output in [first, second].compactMap({ $0 }) { out.append(Self.describe(output)) }
        }
        if inputEnds, let part = assembler.inputEnded() { out.append(Self.describe(.unit(part))) }
        return out
    }

    static func describe(_ output: RequestAssembler.Output) -> String {
        switch output {
        case let .unit(unit):
            var text = "\(unit.end)"
            if unit.classification?.isWrite == true { text += " write" }
            if unit.executes { text += " executes" }
            if unit.followsIdleBatch { text += " afterIdleBatch" }
            if !unit.uses.isEmpty { text += " uses:\(unit.uses.joined(separator: ","))" }
            return text
        case .copy: return "copy"
        case .syncAfterRefusal: return "syncAfterRefusal"
        case .terminate: return "terminate"
        }
    }

    static let insert = FrontendMessage.parse(name: "", query: "INSERT INTO t VALUES ($1)", parameterTypes: [23])
    static let select = FrontendMessage.parse(name: "", query: "SELECT 1", parameterTypes: [])
    static let bind = FrontendMessage.bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: []))
    static let execute = FrontendMessage.execute(portal: "", maxRows: 0)

    @Test mutating func aSimpleQueryIsOneUnitThatExecutes() throws {
        #expect(try feed([.query("SELECT 1")]) == ["query executes afterIdleBatch"])
        #expect(try feed([.query("UPDATE t SET a = 1")]) == ["query write executes afterIdleBatch"])
    }

    @Test mutating func anExtendedBatchUpToSyncIsOneUnit() throws {
        #expect(try feed([Self.insert, Self.bind, Self.execute, .sync]) == ["sync write executes"])
        #expect(assembler.pending.isEmpty)
    }

    @Test mutating func aPrepareWithoutExecuteDoesNotExecute() throws {
        // psql's \gdesc, PQprepare: a write that never runs must not look like one that did.
        #expect(try feed([Self.insert, .describe(kind: .statement, name: ""), .sync]) == ["sync write"])
    }

    @Test mutating func aFlushEndsAPartAndTheRestOfTheBatchCarriesWhatItDid() throws {
        #expect(try feed([Self.insert, Self.bind, Self.execute, .flush]) == ["flush write executes"])
        #expect(try feed([.sync]) == ["sync write executes"])
    }

    @Test mutating func inputThatEndsMidBatchIsForwardedAsAPart() throws {
        #expect(try feed([Self.select, Self.bind, Self.execute], inputEnds: true) == ["partial executes"])
        #expect(try feed([Self.insert, Self.bind, Self.execute], inputEnds: true) == ["partial write executes"])
        #expect(try feed([.sync]) == ["sync write executes"])
        #expect(assembler.inputEnded() == nil)
    }

    @Test mutating func aQueryAfterABatchThatRanNothingIsRoutedOnItsOwn() throws {
        // asyncpg: Parse/Describe/Flush to prepare, then COPY as a simple query.
        _ = try feed([Self.select, .describe(kind: .statement, name: ""), .flush])
        #expect(try feed([.query("COPY t FROM STDIN")]) == ["query write executes afterIdleBatch"])
    }

    @Test mutating func aQueryAfterAnUnsyncedExecuteBelongsToThatBatch() throws {
        #expect(try feed([Self.insert, Self.bind, Self.execute, .query("SELECT 2")]) ==
            ["partial write executes", "query executes"])
    }

    @Test mutating func copyDataFollowsItsStatementOrItsBatch() throws {
        #expect(try feed([.copyData([1, 2]), .copyDone]) == ["copy", "copy"])
        #expect(try feed([Self.insert, Self.bind, Self.execute, .copyData([1]), .copyDone, .sync]) == ["sync write executes"])
    }

    @Test mutating func afterARefusalEverythingUpToSyncIsDropped() throws {
        _ = try feed([Self.insert, .flush])
        assembler.discardUntilSync()
        #expect(try feed([Self.bind, Self.execute, .query("SELECT 1"), .sync]) == ["syncAfterRefusal"])
        #expect(try feed([.query("SELECT 1")]) == ["query executes afterIdleBatch"])
    }

    @Test mutating func aNamedStatementUsedLaterCarriesItsClassification() throws {
        statements["ins"] = PreparedStatement(query: "INSERT INTO t VALUES (1)", parameterTypes: [],
                                              classification: QueryClassifier.classify("INSERT INTO t VALUES (1)", volatileFunctions: []))
        let bind = FrontendMessage.bind(.init(portal: "", statement: "ins", parameterFormats: [], parameters: [], resultFormats: []))
        #expect(try feed([bind, Self.execute, .sync]) == ["sync write executes uses:ins"])
    }

    @Test mutating func aFunctionCallRunsOnThePrimary() throws {
        let call = FrontendMessage.functionCall(.init(functionOID: 1598, argumentFormats: [], arguments: [], resultFormat: 0))
        let bytes = call.encoded()
        let (_, second) = assembler.receive(try FrontendRequest.decode(type: bytes[0], body: bytes[5...]),
                                            type: bytes[0], body: bytes[5...], context: context)
        guard case let .unit(unit)? = second else {
            Issue.record("no unit")
            return
        }
        #expect(unit.forcePrimary && unit.classification?.isWrite == true && unit.end == .functionCall)
    }

    @Test mutating func terminateEndsTheSession() throws {
        #expect(try feed([.terminate]) == ["terminate"])
    }

    @Test mutating func namedStatementsReachServersUnderTheProxysNamesAndTheUnnamedOneStaysUnnamed() throws {
        let context = RequestAssembler.Context(classifier: { QueryClassifier.classify($0, volatileFunctions: []) },
                                               statements: { _ in nil }, ids: { _, _ in 42 })
        var names: [String] = []
        for message in [FrontendMessage.parse("s1", "SELECT 1"), .bind("s1", portal: "p"),
                        .describe(kind: .statement, name: "s1"), .close(kind: .statement, name: "s1"),
                        .parse("", "SELECT 2"), .bind(""), .sync] {
            let bytes = message.encoded()
            let (first, _) = assembler.receive(try FrontendRequest.decode(type: bytes[0], body: bytes[5...]), type: bytes[0],
                                               body: bytes[5...], context: context)
            guard case let .unit(unit)? = first else { continue }
            var framer = MessageFramer(maximumLength: 1 << 20)
            framer.append(unit.bytes)
            while let (type, body) = try framer.nextTyped() {
                switch try FrontendRequest.decode(type: type, body: body) {
                case let .parse(name, _, _): names.append("P \(name)")
                case let .bind(portal, statement): names.append("B \(portal) \(statement)")
                case let .describe(_, name): names.append("D \(name)")
                case let .close(_, name): names.append("C \(name)")
                default: names.append(String(UnicodeScalar(type)))
                }
            }
        }
        // A Close goes to a name that never exists: the server answers it, the shared statement stays.
        #expect(names == ["P causeway_42", "B p causeway_42", "D causeway_42", "C causeway_0", "P ", "B  ", "S"])
    }
}
