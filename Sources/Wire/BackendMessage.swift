/// Messages a server (or the proxy acting as one) sends.
public enum BackendMessage: Equatable, Sendable {
    case authentication(AuthenticationRequest)
    case parameterStatus(name: String, value: String)
    /// `secret` is 4 bytes under protocol 3.0, up to 256 under 3.2.
    case backendKeyData(processID: Int32, secret: [UInt8])
    case readyForQuery(TransactionStatus)
    case rowDescription([UInt8])
    case dataRow([UInt8])
    case commandComplete(String)
    case emptyQueryResponse
    case errorResponse(ErrorFields)
    case noticeResponse(ErrorFields)
    case parseComplete
    case bindComplete
    case closeComplete
    case parameterDescription([UInt32])
    case noData
    case portalSuspended
    case copyInResponse([UInt8])
    case copyOutResponse([UInt8])
    case copyBothResponse([UInt8])
    case copyData([UInt8])
    case copyDone
    case notification(processID: Int32, channel: String, payload: String)
    /// `newestVersion` is a whole protocol version code (major << 16 | minor), as PostgreSQL sends
    /// it: libpq 18 refuses a bare minor number as a "downgrade to pre-3.0".
    case negotiateProtocolVersion(newestVersion: Int32, unsupportedOptions: [String])
    case functionCallResponse([UInt8]?)

    public enum TransactionStatus: UInt8, Sendable {
        case idle = 0x49 // I
        case inTransaction = 0x54 // T
        case failed = 0x45 // E
    }

    public enum TypeByte {
        public static let authentication: UInt8 = 0x52 // R
        public static let parameterStatus: UInt8 = 0x53 // S
        public static let backendKeyData: UInt8 = 0x4b // K
        public static let readyForQuery: UInt8 = 0x5a // Z
        public static let rowDescription: UInt8 = 0x54 // T
        public static let dataRow: UInt8 = 0x44 // D
        public static let commandComplete: UInt8 = 0x43 // C
        public static let emptyQueryResponse: UInt8 = 0x49 // I
        public static let errorResponse: UInt8 = 0x45 // E
        public static let noticeResponse: UInt8 = 0x4e // N
        public static let parseComplete: UInt8 = 0x31 // 1
        public static let bindComplete: UInt8 = 0x32 // 2
        public static let closeComplete: UInt8 = 0x33 // 3
        public static let parameterDescription: UInt8 = 0x74 // t
        public static let noData: UInt8 = 0x6e // n
        public static let portalSuspended: UInt8 = 0x73 // s
        public static let copyInResponse: UInt8 = 0x47 // G
        public static let copyOutResponse: UInt8 = 0x48 // H
        public static let copyBothResponse: UInt8 = 0x57 // W
        public static let copyData: UInt8 = 0x64 // d
        public static let copyDone: UInt8 = 0x63 // c
        public static let notification: UInt8 = 0x41 // A
        public static let negotiateProtocolVersion: UInt8 = 0x76 // v
        public static let functionCallResponse: UInt8 = 0x56 // V
    }

    public func encode(into writer: inout ByteWriter) {
        switch self {
        case let .authentication(request):
            writer.beginMessage(TypeByte.authentication)
            request.encodeBody(into: &writer)
        case let .parameterStatus(name, value):
            writer.beginMessage(TypeByte.parameterStatus)
            writer.writeCString(name)
            writer.writeCString(value)
        case let .backendKeyData(pid, secret):
            writer.beginMessage(TypeByte.backendKeyData)
            writer.writeInt32(pid)
            writer.writeBytes(secret)
        case let .readyForQuery(status):
            writer.beginMessage(TypeByte.readyForQuery)
            writer.writeUInt8(status.rawValue)
        case let .rowDescription(body):
            writer.beginMessage(TypeByte.rowDescription)
            writer.writeBytes(body)
        case let .dataRow(body):
            writer.beginMessage(TypeByte.dataRow)
            writer.writeBytes(body)
        case let .commandComplete(tag):
            writer.beginMessage(TypeByte.commandComplete)
            writer.writeCString(tag)
        case .emptyQueryResponse:
            writer.beginMessage(TypeByte.emptyQueryResponse)
        case let .errorResponse(fields):
            writer.beginMessage(TypeByte.errorResponse)
            fields.encodeBody(into: &writer)
        case let .noticeResponse(fields):
            writer.beginMessage(TypeByte.noticeResponse)
            fields.encodeBody(into: &writer)
        case .parseComplete: writer.beginMessage(TypeByte.parseComplete)
        case .bindComplete: writer.beginMessage(TypeByte.bindComplete)
        case .closeComplete: writer.beginMessage(TypeByte.closeComplete)
        case let .parameterDescription(types):
            writer.beginMessage(TypeByte.parameterDescription)
            writer.writeInt16(Int16(truncatingIfNeeded: types.count))
            for oid in types { writer.writeInt32(Int32(bitPattern: oid)) }
        case .noData: writer.beginMessage(TypeByte.noData)
        case .portalSuspended: writer.beginMessage(TypeByte.portalSuspended)
        case let .copyInResponse(body):
            writer.beginMessage(TypeByte.copyInResponse)
            writer.writeBytes(body)
        case let .copyOutResponse(body):
            writer.beginMessage(TypeByte.copyOutResponse)
            writer.writeBytes(body)
        case let .copyBothResponse(body):
            writer.beginMessage(TypeByte.copyBothResponse)
            writer.writeBytes(body)
        case let .copyData(body):
            writer.beginMessage(TypeByte.copyData)
            writer.writeBytes(body)
        case .copyDone: writer.beginMessage(TypeByte.copyDone)
        case let .notification(pid, channel, payload):
            writer.beginMessage(TypeByte.notification)
            writer.writeInt32(pid)
            writer.writeCString(channel)
            writer.writeCString(payload)
        case let .negotiateProtocolVersion(version, options):
            writer.beginMessage(TypeByte.negotiateProtocolVersion)
            writer.writeInt32(version)
            writer.writeInt32(Int32(options.count))
            for option in options { writer.writeCString(option) }
        case let .functionCallResponse(value):
            writer.beginMessage(TypeByte.functionCallResponse)
            if let value {
                writer.writeInt32(Int32(value.count))
                writer.writeBytes(value)
            } else {
                writer.writeInt32(-1)
            }
        }
        writer.endMessage()
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        encode(into: &writer)
        return writer.bytes
    }

    public static func decode(type: UInt8, body: ArraySlice<UInt8>) throws(WireError) -> BackendMessage {
        var reader = ByteReader(body, messageType: type)
        let message: BackendMessage
        switch type {
        case TypeByte.authentication:
            message = .authentication(try AuthenticationRequest.decode(&reader))
        case TypeByte.parameterStatus:
            message = .parameterStatus(name: try reader.readCString(), value: try reader.readCString())
        case TypeByte.backendKeyData:
            let pid = try reader.readInt32()
            let secret = reader.readRest()
            guard (4...StartupPacket.maximumCancelSecretLength).contains(secret.count) else {
                throw reader.fail("cancel key of \(secret.count) bytes")
            }
            message = .backendKeyData(processID: pid, secret: secret)
        case TypeByte.readyForQuery:
            guard let status = TransactionStatus(rawValue: try reader.readUInt8()) else {
                throw reader.fail("unknown transaction status")
            }
            message = .readyForQuery(status)
        case TypeByte.rowDescription: message = .rowDescription(reader.readRest())
        case TypeByte.dataRow: message = .dataRow(reader.readRest())
        case TypeByte.commandComplete: message = .commandComplete(try reader.readCString())
        case TypeByte.emptyQueryResponse: message = .emptyQueryResponse
        case TypeByte.errorResponse: message = .errorResponse(try ErrorFields.decode(&reader))
        case TypeByte.noticeResponse: message = .noticeResponse(try ErrorFields.decode(&reader))
        case TypeByte.parseComplete: message = .parseComplete
        case TypeByte.bindComplete: message = .bindComplete
        case TypeByte.closeComplete: message = .closeComplete
        case TypeByte.parameterDescription:
            let count = try reader.readCount16()
            var types: [UInt32] = []
            for _ in 0..<count { types.append(UInt32(bitPattern: try reader.readInt32())) }
            message = .parameterDescription(types)
        case TypeByte.noData: message = .noData
        case TypeByte.portalSuspended: message = .portalSuspended
        case TypeByte.copyInResponse: message = .copyInResponse(reader.readRest())
        case TypeByte.copyOutResponse: message = .copyOutResponse(reader.readRest())
        case TypeByte.copyBothResponse: message = .copyBothResponse(reader.readRest())
        case TypeByte.copyData: message = .copyData(reader.readRest())
        case TypeByte.copyDone: message = .copyDone
        case TypeByte.notification:
            message = .notification(processID: try reader.readInt32(), channel: try reader.readCString(),
                                    payload: try reader.readCString())
        case TypeByte.negotiateProtocolVersion:
            let version = try reader.readInt32()
            let count = try reader.readInt32()
            guard count >= 0 else { throw reader.fail("negative option count") }
            var options: [String] = []
            for _ in 0..<count { options.append(try reader.readCString()) }
            message = .negotiateProtocolVersion(newestVersion: version, unsupportedOptions: options)
        case TypeByte.functionCallResponse:
            let length = try reader.readInt32()
            if length == -1 {
                message = .functionCallResponse(nil)
            } else if length < 0 {
                throw reader.fail("negative value length")
            } else {
                message = .functionCallResponse(try reader.readBytes(Int(length)))
            }
        default:
            throw .unknownType(type)
        }
        try reader.expectEnd()
        return message
    }
}

/// The 'R' family.
public enum AuthenticationRequest: Equatable, Sendable {
    case ok
    case cleartextPassword
    case md5Password(salt: [UInt8])
    case sasl(mechanisms: [String])
    case saslContinue([UInt8])
    case saslFinal([UInt8])
    /// Kerberos, GSS, SSPI: the proxy does not speak them but must still name them in an error.
    case unsupported(code: Int32)

    func encodeBody(into writer: inout ByteWriter) {
        switch self {
        case .ok: writer.writeInt32(0)
        case .cleartextPassword: writer.writeInt32(3)
        case let .md5Password(salt):
            writer.writeInt32(5)
            writer.writeBytes(salt)
        case let .sasl(mechanisms):
            writer.writeInt32(10)
            for mechanism in mechanisms { writer.writeCString(mechanism) }
            writer.writeUInt8(0)
        case let .saslContinue(data):
            writer.writeInt32(11)
            writer.writeBytes(data)
        case let .saslFinal(data):
            writer.writeInt32(12)
            writer.writeBytes(data)
        case let .unsupported(code):
            writer.writeInt32(code)
        }
    }

    static func decode(_ reader: inout ByteReader) throws(WireError) -> AuthenticationRequest {
        let code = try reader.readInt32()
        switch code {
        case 0: return .ok
        case 3: return .cleartextPassword
        case 5:
            let salt = try reader.readBytes(4)
            return .md5Password(salt: salt)
        case 10:
            var mechanisms: [String] = []
            while true {
                let name = try reader.readCString()
                if name.isEmpty { break }
                mechanisms.append(name)
            }
            return .sasl(mechanisms: mechanisms)
        case 11: return .saslContinue(reader.readRest())
        case 12: return .saslFinal(reader.readRest())
        default:
            _ = reader.readRest()
            return .unsupported(code: code)
        }
    }
}
