/// Messages a client sends after startup. Types collide with backend types ('D', 'E', 'C', 'S',
/// 'H'), which is why each direction has its own enum and decoder.
public enum FrontendMessage: Equatable, Sendable {
    case query(String)
    case parse(name: String, query: String, parameterTypes: [UInt32])
    case bind(Bind)
    case describe(kind: ObjectKind, name: String)
    case execute(portal: String, maxRows: Int32)
    case sync
    case flush
    case close(kind: ObjectKind, name: String)
    case copyData([UInt8])
    case copyDone
    case copyFail(String)
    case functionCall(FunctionCall)
    case terminate
    /// 'p' is PasswordMessage, SASLInitialResponse or SASLResponse depending on the auth exchange;
    /// only the authentication state knows which, so the body stays raw here.
    case passwordFamily([UInt8])

    public enum ObjectKind: UInt8, Sendable {
        case statement = 0x53 // 'S'
        case portal = 0x50 // 'P'
    }

    public struct Bind: Equatable, Sendable {
        public var portal: String
        public var statement: String
        public var parameterFormats: [Int16]
        public var parameters: [[UInt8]?]
        public var resultFormats: [Int16]
        public init(portal: String, statement: String, parameterFormats: [Int16], parameters: [[UInt8]?], resultFormats: [Int16]) {
            self.portal = portal
            self.statement = statement
            self.parameterFormats = parameterFormats
            self.parameters = parameters
            self.resultFormats = resultFormats
        }
    }

    public struct FunctionCall: Equatable, Sendable {
        public var functionOID: UInt32
        public var argumentFormats: [Int16]
        public var arguments: [[UInt8]?]
        public var resultFormat: Int16
        public init(functionOID: UInt32, argumentFormats: [Int16], arguments: [[UInt8]?], resultFormat: Int16) {
            self.functionOID = functionOID
            self.argumentFormats = argumentFormats
            self.arguments = arguments
            self.resultFormat = resultFormat
        }
    }

    public enum TypeByte {
        public static let query: UInt8 = 0x51 // Q
        public static let parse: UInt8 = 0x50 // P
        public static let bind: UInt8 = 0x42 // B
        public static let describe: UInt8 = 0x44 // D
        public static let execute: UInt8 = 0x45 // E
        public static let sync: UInt8 = 0x53 // S
        public static let flush: UInt8 = 0x48 // H
        public static let close: UInt8 = 0x43 // C
        public static let copyData: UInt8 = 0x64 // d
        public static let copyDone: UInt8 = 0x63 // c
        public static let copyFail: UInt8 = 0x66 // f
        public static let functionCall: UInt8 = 0x46 // F
        public static let terminate: UInt8 = 0x58 // X
        public static let password: UInt8 = 0x70 // p
        static let all: Set<UInt8> = [query, parse, bind, describe, execute, sync, flush, close, copyData,
                                      copyDone, copyFail, functionCall, terminate, password]
    }

    public static func isKnownType(_ byte: UInt8) -> Bool { TypeByte.all.contains(byte) }

    public func encode(into writer: inout ByteWriter) {
        switch self {
        case let .query(text):
            writer.beginMessage(TypeByte.query)
            writer.writeCString(text)
        case let .parse(name, query, types):
            writer.beginMessage(TypeByte.parse)
            writer.writeCString(name)
            writer.writeCString(query)
            writer.writeInt16(Int16(truncatingIfNeeded: types.count))
            for oid in types { writer.writeInt32(Int32(bitPattern: oid)) }
        case let .bind(bind):
            writer.beginMessage(TypeByte.bind)
            writer.writeCString(bind.portal)
            writer.writeCString(bind.statement)
            writer.writeInt16(Int16(truncatingIfNeeded: bind.parameterFormats.count))
            for format in bind.parameterFormats { writer.writeInt16(format) }
            writer.writeValues(bind.parameters)
            writer.writeInt16(Int16(truncatingIfNeeded: bind.resultFormats.count))
            for format in bind.resultFormats { writer.writeInt16(format) }
        case let .describe(kind, name):
            writer.beginMessage(TypeByte.describe)
            writer.writeUInt8(kind.rawValue)
            writer.writeCString(name)
        case let .execute(portal, maxRows):
            writer.beginMessage(TypeByte.execute)
            writer.writeCString(portal)
            writer.writeInt32(maxRows)
        case .sync:
            writer.beginMessage(TypeByte.sync)
        case .flush:
            writer.beginMessage(TypeByte.flush)
        case let .close(kind, name):
            writer.beginMessage(TypeByte.close)
            writer.writeUInt8(kind.rawValue)
            writer.writeCString(name)
        case let .copyData(data):
            writer.beginMessage(TypeByte.copyData)
            writer.writeBytes(data)
        case .copyDone:
            writer.beginMessage(TypeByte.copyDone)
        case let .copyFail(message):
            writer.beginMessage(TypeByte.copyFail)
            writer.writeCString(message)
        case let .functionCall(call):
            writer.beginMessage(TypeByte.functionCall)
            writer.writeInt32(Int32(bitPattern: call.functionOID))
            writer.writeInt16(Int16(truncatingIfNeeded: call.argumentFormats.count))
            for format in call.argumentFormats { writer.writeInt16(format) }
            writer.writeValues(call.arguments)
            writer.writeInt16(call.resultFormat)
        case .terminate:
            writer.beginMessage(TypeByte.terminate)
        case let .passwordFamily(body):
            writer.beginMessage(TypeByte.password)
            writer.writeBytes(body)
        }
        writer.endMessage()
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// Decodes the body of one framed message of the given type.
    public static func decode(type: UInt8, body: ArraySlice<UInt8>) throws(WireError) -> FrontendMessage {
        var reader = ByteReader(body, messageType: type)
        let message: FrontendMessage
        switch type {
        case TypeByte.query:
            message = .query(try reader.readCString())
        case TypeByte.parse:
            let name = try reader.readCString()
            let query = try reader.readCString()
            let count = try reader.readCount16()
            var types: [UInt32] = []
            types.reserveCapacity(min(count, reader.remaining / 4))
            for _ in 0..<count { types.append(UInt32(bitPattern: try reader.readInt32())) }
            message = .parse(name: name, query: query, parameterTypes: types)
        case TypeByte.bind:
            let portal = try reader.readCString()
            let statement = try reader.readCString()
            let formats = try reader.readInt16Array()
            let values = try reader.readValues()
            let resultFormats = try reader.readInt16Array()
            message = .bind(Bind(portal: portal, statement: statement, parameterFormats: formats,
                                 parameters: values, resultFormats: resultFormats))
        case TypeByte.describe, TypeByte.close:
            guard let kind = ObjectKind(rawValue: try reader.readUInt8()) else {
                throw reader.fail("object kind must be 'S' or 'P'")
            }
            let name = try reader.readCString()
            message = type == TypeByte.describe ? .describe(kind: kind, name: name) : .close(kind: kind, name: name)
        case TypeByte.execute:
            message = .execute(portal: try reader.readCString(), maxRows: try reader.readInt32())
        case TypeByte.sync: message = .sync
        case TypeByte.flush: message = .flush
        case TypeByte.copyData: message = .copyData(reader.readRest())
        case TypeByte.copyDone: message = .copyDone
        case TypeByte.copyFail: message = .copyFail(try reader.readCString())
        case TypeByte.functionCall:
            let oid = UInt32(bitPattern: try reader.readInt32())
            let formats = try reader.readInt16Array()
            let arguments = try reader.readValues()
            let resultFormat = try reader.readInt16()
            message = .functionCall(FunctionCall(functionOID: oid, argumentFormats: formats,
                                                 arguments: arguments, resultFormat: resultFormat))
        case TypeByte.terminate: message = .terminate
        case TypeByte.password: message = .passwordFamily(reader.readRest())
        default: throw .unknownType(type)
        }
        try reader.expectEnd()
        return message
    }
}

extension ByteReader {
    /// An Int16 count field. PostgreSQL reads these as unsigned (up to 65535 parameters), so
    /// values above 32767 are large counts, not negative ones.
    mutating func readCount16() throws(WireError) -> Int {
        Int(UInt16(bitPattern: try readInt16()))
    }

    mutating func readInt16Array() throws(WireError) -> [Int16] {
        let count = try readCount16()
        var values: [Int16] = []
        values.reserveCapacity(min(count, remaining / 2))
        for _ in 0..<count { values.append(try readInt16()) }
        return values
    }

    mutating func readValues() throws(WireError) -> [[UInt8]?] {
        let count = try readCount16()
        var values: [[UInt8]?] = []
        values.reserveCapacity(min(count, remaining / 4))
        for _ in 0..<count {
            let length = try readInt32()
            if length == -1 {
                values.append(nil)
            } else if length < 0 {
                throw fail("negative value length \(length)")
            } else {
                values.append(try readBytes(Int(length)))
            }
        }
        return values
    }
}

extension ByteWriter {
    mutating func writeValues(_ values: [[UInt8]?]) {
        writeInt16(Int16(truncatingIfNeeded: values.count))
        for value in values {
            if let value {
                writeInt32(Int32(value.count))
                writeBytes(value)
            } else {
                writeInt32(-1)
            }
        }
    }
}
