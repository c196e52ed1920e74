import Wire

// One or more sample values for every case of the message enums. The `caseName` switches are
// exhaustive on purpose: adding a case to Wire breaks the build here until it gets a fixture.

enum Fixtures {
    static let frontend: [FrontendMessage] = [
        .query("SELECT 1"),
        .query(""),
        .query("INSERT INTO t VALUES ('é', '✓'); SELECT now()"),
        .parse(name: "", query: "SELECT $1::int", parameterTypes: []),
        .parse(name: "stmt_1", query: "SELECT $1, $2", parameterTypes: [23, 4_294_967_295]),
        .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
        .bind(.init(portal: "portal", statement: "stmt_1", parameterFormats: [0, 1],
                    parameters: [Array("42".utf8), nil, [], [0, 1, 2, 255]], resultFormats: [1, 0, -1])),
        .describe(kind: .statement, name: "stmt_1"),
        .describe(kind: .portal, name: ""),
        .execute(portal: "", maxRows: 0),
        .execute(portal: "portal", maxRows: 100),
        .execute(portal: "p", maxRows: -1),
        .sync,
        .flush,
        .close(kind: .statement, name: "stmt_1"),
        .close(kind: .portal, name: "portal"),
        .copyData([]),
        .copyData(Array("1\tone\n2\ttwo\n".utf8) + [0, 0, 255]),
        .copyDone,
        .copyFail("client gave up"),
        .functionCall(.init(functionOID: 1598, argumentFormats: [], arguments: [], resultFormat: 0)),
        .functionCall(.init(functionOID: 4_000_000_000, argumentFormats: [1],
                            arguments: [[0, 0, 0, 7], nil, []], resultFormat: 1)),
        .terminate,
        .passwordFamily(Array("md5d41d8cd98f00b204e9800998ecf8427e".utf8) + [0]),
        .passwordFamily(cString("SCRAM-SHA-256") + int32Bytes(32) + Array("n,,n=,r=rOprNGfwEbeRWgbNEkqO".utf8)),
        .passwordFamily([]),
    ]

    static let backend: [BackendMessage] = [
        .authentication(.ok),
        .authentication(.cleartextPassword),
        .authentication(.md5Password(salt: [0x01, 0x02, 0xfe, 0xff])),
        .authentication(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])),
        .authentication(.sasl(mechanisms: ["SCRAM-SHA-256"])),
        .authentication(.saslContinue(Array("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".utf8))),
        .authentication(.saslFinal(Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))),
        .authentication(.unsupported(code: 2)),
        .authentication(.unsupported(code: 7)),
        .authentication(.unsupported(code: 9)),
        .parameterStatus(name: "server_version", value: "18.1"),
        .parameterStatus(name: "in_hot_standby", value: "off"),
        .parameterStatus(name: "application_name", value: ""),
        .backendKeyData(processID: 4242, secret: [1, 2, 3, 4]),
        .backendKeyData(processID: Int32.max, secret: (0..<32).map { UInt8($0) }),
        .readyForQuery(.idle),
        .readyForQuery(.inTransaction),
        .readyForQuery(.failed),
        .rowDescription(int16Bytes(1) + cString("?column?") + int32Bytes(0) + int16Bytes(0)
            + int32Bytes(23) + int16Bytes(4) + int32Bytes(-1) + int16Bytes(0)),
        .rowDescription(int16Bytes(0)),
        .dataRow(int16Bytes(2) + int32Bytes(1) + [ascii("1")] + int32Bytes(-1)),
        .commandComplete("SELECT 1"),
        .commandComplete("INSERT 0 3"),
        .emptyQueryResponse,
        .errorResponse(ErrorFields(severity: .error, sqlState: "42P01", message: "relation \"t\" does not exist",
                                   detail: "some detail", hint: "some hint")),
        .errorResponse(ErrorFields(fields: [(ascii("S"), "FATAL"), (ascii("M"), "no sqlstate here")])),
        .errorResponse(ErrorFields(fields: [])),
        .noticeResponse(ErrorFields(severity: .notice, sqlState: "00000", message: "hello")),
        .noticeResponse(ErrorFields(fields: [(ascii("Z"), "unknown field code kept verbatim")])),
        .parseComplete,
        .bindComplete,
        .closeComplete,
        .parameterDescription([]),
        .parameterDescription([23, 25, 4_294_967_295]),
        .noData,
        .portalSuspended,
        .copyInResponse([0] + int16Bytes(2) + int16Bytes(0) + int16Bytes(0)),
        .copyOutResponse([1] + int16Bytes(1) + int16Bytes(1)),
        .copyBothResponse([0] + int16Bytes(0)),
        .copyData([]),
        .copyData(Array("row\n".utf8)),
        .copyDone,
        .notification(processID: 77, channel: "jobs", payload: "{\"id\": 1}"),
        .notification(processID: -1, channel: "c", payload: ""),
        .negotiateProtocolVersion(newestVersion: 0, unsupportedOptions: []),
        .negotiateProtocolVersion(newestVersion: (3 << 16) | 2, unsupportedOptions: ["_pq_.grease", "_pq_.other"]),
        .functionCallResponse(nil),
        .functionCallResponse([]),
        .functionCallResponse([9, 8, 7]),
    ]

    static let startup: [StartupPacket] = [
        .sslRequest,
        .gssEncryptionRequest,
        .cancelRequest(processID: 1234, secret: [0xde, 0xad, 0xbe, 0xef]),
        .cancelRequest(processID: -5, secret: (0..<32).map { UInt8($0) }),
        .cancelRequest(processID: 0, secret: [UInt8](repeating: 0xab, count: 256)),
        .startup(StartupMessage(parameters: [("user", "alice")])),
        .startup(StartupMessage(majorVersion: 3, minorVersion: 0,
                                parameters: [("user", "alice"), ("database", "shop"), ("application_name", "psql"),
                                             ("options", "-c search_path=app"), ("replication", "false")])),
        .startup(StartupMessage(majorVersion: 3, minorVersion: 2,
                                parameters: [("user", "bob"), ("_pq_.protocol_managed_params", "search_path"),
                                             ("database", "shop"), ("_pq_.test", "")])),
        .startup(StartupMessage(majorVersion: 3, minorVersion: 9999,
                                parameters: [("user", "grease"), ("_pq_.test_protocol_negotiation", "")])),
        .startup(StartupMessage(parameters: [])),
    ]

    static func caseName(_ message: FrontendMessage) -> String {
        switch message {
        case .query: "query"
        case .parse: "parse"
        case .bind: "bind"
        case .describe: "describe"
        case .execute: "execute"
        case .sync: "sync"
        case .flush: "flush"
        case .close: "close"
        case .copyData: "copyData"
        case .copyDone: "copyDone"
        case .copyFail: "copyFail"
        case .functionCall: "functionCall"
        case .terminate: "terminate"
        case .passwordFamily: "passwordFamily"
        }
    }
    static let frontendCaseCount = 14

    static func caseName(_ message: BackendMessage) -> String {
        switch message {
        case .authentication: "authentication"
        case .parameterStatus: "parameterStatus"
        case .backendKeyData: "backendKeyData"
        case .readyForQuery: "readyForQuery"
        case .rowDescription: "rowDescription"
        case .dataRow: "dataRow"
        case .commandComplete: "commandComplete"
        case .emptyQueryResponse: "emptyQueryResponse"
        case .errorResponse: "errorResponse"
        case .noticeResponse: "noticeResponse"
        case .parseComplete: "parseComplete"
        case .bindComplete: "bindComplete"
        case .closeComplete: "closeComplete"
        case .parameterDescription: "parameterDescription"
        case .noData: "noData"
        case .portalSuspended: "portalSuspended"
        case .copyInResponse: "copyInResponse"
        case .copyOutResponse: "copyOutResponse"
        case .copyBothResponse: "copyBothResponse"
        case .copyData: "copyData"
        case .copyDone: "copyDone"
        case .notification: "notification"
        case .negotiateProtocolVersion: "negotiateProtocolVersion"
        case .functionCallResponse: "functionCallResponse"
        }
    }
    static let backendCaseCount = 24

    static func caseName(_ request: AuthenticationRequest) -> String {
        switch request {
        case .ok: "ok"
        case .cleartextPassword: "cleartextPassword"
        case .md5Password: "md5Password"
        case .sasl: "sasl"
        case .saslContinue: "saslContinue"
        case .saslFinal: "saslFinal"
        case .unsupported: "unsupported"
        }
    }
    static let authenticationCaseCount = 7

    static func caseName(_ packet: StartupPacket) -> String {
        switch packet {
        case .sslRequest: "sslRequest"
        case .gssEncryptionRequest: "gssEncryptionRequest"
        case .cancelRequest: "cancelRequest"
        case .startup: "startup"
        }
    }
    static let startupCaseCount = 4

    /// A realistic client session: SSL refused, then StartupMessage, then simple and extended
    /// queries, a COPY, a function call and Terminate.
    static var clientSession: (startup: [StartupPacket], messages: [FrontendMessage]) {
        let startup: [StartupPacket] = [
            .sslRequest,
            .startup(StartupMessage(majorVersion: 3, minorVersion: 2,
                                    parameters: [("user", "alice"), ("database", "shop"), ("_pq_.x", "1")])),
        ]
        return (startup, frontend)
    }

    static func encoded(_ packets: [StartupPacket], _ messages: [FrontendMessage]) -> [UInt8] {
        packets.flatMap { $0.encoded() } + messages.flatMap { $0.encoded() }
    }
}
