import Testing
@testable import Wire

/// Client messages after login as the proxy reads them: every field validated, so a damaged
/// Bind or Describe is an error (08P01 for the client), never the unnamed statement.
struct FrontendRequestTests {
    static func decode(_ type: UInt8, _ body: [UInt8]) throws(WireError) -> FrontendRequest {
        try FrontendRequest.decode(type: type, body: body[...])
    }

    @Test func wellFormedMessagesDecodeToTheirNames() throws {
        let bind = FrontendMessage.bind(.init(portal: "p", statement: "s", parameterFormats: [1], parameters: [[1, 2], nil],
                                              resultFormats: [0])).encoded()
        #expect(try Self.decode(bind[0], Array(bind[5...])) == .bind(portal: "p", statement: "s"))
        let parse = FrontendMessage.parse(name: "s", query: "SELECT $1", parameterTypes: [23]).encoded()
        #expect(try Self.decode(parse[0], Array(parse[5...])) == .parse(name: "s", query: "SELECT $1", parameterTypes: [23]))
        let close = FrontendMessage.close(kind: .portal, name: "p").encoded()
        #expect(try Self.decode(close[0], Array(close[5...])) == .close(kind: .portal, name: "p"))
    }

    @Test(arguments: [
        ("Bind without its statement name", FrontendMessage.TypeByte.bind, Array("portal\0".utf8)),
        ("Bind whose value runs past the end", FrontendMessage.TypeByte.bind, Array("\0\0".utf8) + [0, 0, 0, 1, 0, 0, 0, 9, 1]),
        ("Bind with a negative value length", FrontendMessage.TypeByte.bind, Array("\0\0".utf8) + [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0, 0, 0]),
        ("Bind with format code 7", FrontendMessage.TypeByte.bind, Array("\0\0".utf8) + [0, 1, 0, 7, 0, 0, 0, 0]),
        ("Bind with trailing bytes", FrontendMessage.TypeByte.bind, Array("\0\0".utf8) + [0, 0, 0, 0, 0, 0, 9]),
        ("Describe of kind X", FrontendMessage.TypeByte.describe, Array("Xname\0".utf8)),
        ("Describe without a name", FrontendMessage.TypeByte.describe, [0x53]),
        ("Close without a terminator", FrontendMessage.TypeByte.close, Array("Sname".utf8)),
        ("Execute without its row limit", FrontendMessage.TypeByte.execute, Array("\0".utf8)),
        ("Parse with too few parameter types", FrontendMessage.TypeByte.parse, Array("\0SELECT 1\0".utf8) + [0, 2, 0, 0, 0, 23]),
        ("Sync with a body", FrontendMessage.TypeByte.sync, [1]),
        ("a password message after login", FrontendMessage.TypeByte.password, Array("secret\0".utf8)),
    ] as [(String, UInt8, [UInt8])])
    func malformedMessagesAreErrors(_ name: String, _ type: UInt8, _ body: [UInt8]) {
        #expect(throws: WireError.self, "\(name)") { try Self.decode(type, body) }
    }
}
