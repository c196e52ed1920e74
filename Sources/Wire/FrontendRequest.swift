/// A client message after login as a proxy needs it to route: names and statement text decoded,
/// every field of the message validated (a malformed Bind or Describe is an error, never read as
/// the unnamed statement), and parameter values and COPY data left in place, not copied.
public enum FrontendRequest: Equatable, Sendable {
    case query(String)
    case parse(name: String, query: String, parameterTypes: [UInt32])
    case bind(portal: String, statement: String)
    case describe(kind: FrontendMessage.ObjectKind, name: String)
    case close(kind: FrontendMessage.ObjectKind, name: String)
    case execute(portal: String)
    case sync
    case flush
    case copyData
    case copyDone
    case copyFail
    case functionCall(oid: UInt32)
    case terminate

    /// Decodes and validates the body of one framed message of the given type. A password
    /// message ('p') is not a request: after login it is as unknown as any other stray type.
    public static func decode(type: UInt8, body: ArraySlice<UInt8>) throws(WireError) -> FrontendRequest {
        typealias TypeByte = FrontendMessage.TypeByte
        var reader = ByteReader(body, messageType: type)
        let request: FrontendRequest
        switch type {
        case TypeByte.query:
            request = .query(try reader.readCString())
        case TypeByte.parse:
            let name = try reader.readCString()
            let query = try reader.readCString()
            let count = try reader.readCount16()
            guard reader.remaining >= count * 4 else { throw reader.fail("truncated parameter types") }
            var types: [UInt32] = []
            types.reserveCapacity(count)
            for _ in 0..<count { types.append(UInt32(bitPattern: try reader.readInt32())) }
            request = .parse(name: name, query: query, parameterTypes: types)
        case TypeByte.bind:
            let portal = try reader.readCString()
            let statement = try reader.readCString()
            try reader.skipFormats()
            try reader.skipValues()
            try reader.skipFormats()
            request = .bind(portal: portal, statement: statement)
        case TypeByte.describe, TypeByte.close:
            guard let kind = FrontendMessage.ObjectKind(rawValue: try reader.readUInt8()) else {
                throw reader.fail("object kind must be 'S' or 'P'")
            }
            let name = try reader.readCString()
            request = type == TypeByte.describe ? .describe(kind: kind, name: name) : .close(kind: kind, name: name)
        case TypeByte.execute:
            let portal = try reader.readCString()
            _ = try reader.readInt32()
            request = .execute(portal: portal)
        case TypeByte.sync: request = .sync
        case TypeByte.flush: request = .flush
        case TypeByte.copyData:
            try reader.skip(reader.remaining, what: "data")
            request = .copyData
        case TypeByte.copyDone: request = .copyDone
        case TypeByte.copyFail:
            _ = try reader.readCString()
            request = .copyFail
        case TypeByte.functionCall:
            let oid = UInt32(bitPattern: try reader.readInt32())
            try reader.skipFormats()
            try reader.skipValues()
            _ = try reader.readInt16()
            request = .functionCall(oid: oid)
        case TypeByte.terminate: request = .terminate
        default: throw .unknownType(type)
        }
        try reader.expectEnd()
        return request
    }
}

extension ByteReader {
    mutating func skip(_ count: Int, what: String) throws(WireError) {
        guard count >= 0, remaining >= count else { throw fail("truncated \(what)") }
        index += count
    }

    /// A format-code array: a count, then that many Int16 codes, each 0 (text) or 1 (binary).
    mutating func skipFormats() throws(WireError) {
        for _ in 0..<(try readCount16()) {
            let format = try readInt16()
            guard format == 0 || format == 1 else { throw fail("invalid format code \(format)") }
        }
    }

    /// A value array: a count, then per value an Int32 length (-1 for NULL) and the bytes.
    mutating func skipValues() throws(WireError) {
        for _ in 0..<(try readCount16()) {
            let length = try readInt32()
            guard length >= -1 else { throw fail("negative value length \(length)") }
            if length > 0 { try skip(Int(length), what: "value") }
        }
    }
}
