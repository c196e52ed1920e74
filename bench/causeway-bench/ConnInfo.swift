// Connection strings as libpq understands them (URI or key=value), parsed by libpq itself so
// every form it accepts works here, and rebuilt with changes (another user, another database)
// or without the password for reports and logs.

import CLibPQ
import Foundation

struct ConnInfo: Sendable, Equatable {
    private(set) var pairs: [(key: String, value: String)]

    static func == (a: ConnInfo, b: ConnInfo) -> Bool { a.text == b.text }

    init(parsing text: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(text, &error) else {
            let message = error.map { String(cString: $0) } ?? "invalid connection string"
            if let error { PQfreemem(error) }
            throw ConnInfoError(message: "\(PQClient.oneLine(message)): \(text)")
        }
        defer { PQconninfoFree(options) }
        var pairs: [(String, String)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { pairs.append((String(cString: keyword), String(cString: value))) }
            option += 1
        }
        self.pairs = pairs
    }

    init(_ pairs: [(String, String)]) { self.pairs = pairs.map { (key: $0.0, value: $0.1) } }

    subscript(key: String) -> String? { pairs.first { $0.key == key }?.value }

    /// A copy with `changes` set (nil removes the key).
    func with(_ changes: [String: String?]) -> ConnInfo {
        var copy = self
        for (key, value) in changes {
            copy.pairs.removeAll { $0.key == key }
            if let value { copy.pairs.append((key, value)) }
        }
        return copy
    }

    /// key='value' form, for libpq.
    var text: String {
        pairs.map { "\($0.key)='\($0.value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'"))'" }
            .joined(separator: " ")
    }

    /// For reports and logs: never a password.
    var masked: String {
        pairs.filter { $0.key != "password" }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    /// The port libpq will use (PGPORT, else 5432, when the string has none).
    var port: Int? {
        if let p = self["port"] { return Int(p.split(separator: ",").first ?? "") }
        return Int(ProcessInfo.processInfo.environment["PGPORT"] ?? "5432")
    }
}

struct ConnInfoError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
