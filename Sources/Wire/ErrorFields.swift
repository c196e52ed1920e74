/// The fields of an ErrorResponse or NoticeResponse. Every field is optional on the wire (a server
/// or a hostile peer may omit even the SQLSTATE), so nothing here assumes one is present.
public struct ErrorFields: Equatable, Sendable {
    public var fields: [(code: UInt8, value: String)]

    public init(fields: [(code: UInt8, value: String)]) {
        self.fields = fields
    }

    /// An error the proxy itself raises. `severity` is ERROR or FATAL (FATAL: the proxy closes).
    public init(severity: Severity, sqlState: String, message: String, detail: String? = nil, hint: String? = nil) {
        var fields: [(code: UInt8, value: String)] = [
            (FieldCode.severity, severity.rawValue),
            (FieldCode.severityNonLocalized, severity.rawValue),
            (FieldCode.sqlState, sqlState),
            (FieldCode.message, message),
        ]
        if let detail { fields.append((FieldCode.detail, detail)) }
        if let hint { fields.append((FieldCode.hint, hint)) }
        self.fields = fields
    }

    public enum Severity: String, Sendable {
        case error = "ERROR"
        case fatal = "FATAL"
        case warning = "WARNING"
        case notice = "NOTICE"
    }

    public enum FieldCode {
        public static let severity: UInt8 = 0x53 // S
        public static let severityNonLocalized: UInt8 = 0x56 // V
        public static let sqlState: UInt8 = 0x43 // C
        public static let message: UInt8 = 0x4d // M
        public static let detail: UInt8 = 0x44 // D
        public static let hint: UInt8 = 0x48 // H
    }

    public subscript(code: UInt8) -> String? {
        fields.first { $0.code == code }?.value
    }

    public var sqlState: String? { self[FieldCode.sqlState] }
    public var message: String? { self[FieldCode.message] }
    public var severity: String? { self[FieldCode.severityNonLocalized] ?? self[FieldCode.severity] }

    func encodeBody(into writer: inout ByteWriter) {
        for field in fields {
            writer.writeUInt8(field.code)
            writer.writeCString(field.value)
        }
        writer.writeUInt8(0)
    }

    static func decode(_ reader: inout ByteReader) throws(WireError) -> ErrorFields {
        var fields: [(code: UInt8, value: String)] = []
        while true {
            let code = try reader.readUInt8()
            if code == 0 { break }
            fields.append((code, try reader.readCString()))
        }
        return ErrorFields(fields: fields)
    }

    public static func == (lhs: ErrorFields, rhs: ErrorFields) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.code == $1.code && $0.value == $1.value }
    }
}

/// SQLSTATE codes the proxy raises itself — every one of them is named here.
public enum SQLState {
    public static let invalidParameterValue = "22023"
    public static let invalidCursorName = "34000"
    public static let syntaxError = "42601"
    public static let undefinedObject = "42704"
    public static let objectNotInPrerequisiteState = "55000"
    public static let configFileError = "F0000"
    public static let protocolViolation = "08P01"
    public static let connectionFailure = "08006"
    public static let cannotConnectNow = "57P03"
    public static let adminShutdown = "57P01"
    public static let invalidPassword = "28P01"
    public static let invalidAuthorization = "28000"
    public static let tooManyConnections = "53300"
    public static let featureNotSupported = "0A000"
    public static let readOnlyTransaction = "25006"
    public static let insufficientPrivilege = "42501"
    public static let internalError = "XX000"
}
