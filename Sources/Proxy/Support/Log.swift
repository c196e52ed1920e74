import CShims
import Foundation

/// key=value log lines on stderr, one write(2) per line. Values with spaces or quotes are quoted.
/// Never pass a password or a query parameter value here.
public struct Log: Sendable {
    public let minimumLevel: LogLevel
    public let component: String

    public init(component: String, minimumLevel: LogLevel = .info) {
        self.component = component
        self.minimumLevel = minimumLevel
    }

    public func enabled(_ level: LogLevel) -> Bool { level >= minimumLevel }

    public func debug(_ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible> = [:]) {
        write(.debug, event, fields)
    }

    public func info(_ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible> = [:]) {
        write(.info, event, fields)
    }

    public func warn(_ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible> = [:]) {
        write(.warn, event, fields)
    }

    public func error(_ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible> = [:]) {
        write(.error, event, fields)
    }

    /// A line another module already formatted as key=value (the monitor's); logged at info.
    public func raw(_ keyValues: String) {
        guard LogLevel.info >= minimumLevel else { return }
        emit("ts=\(Log.timestamp()) level=info component=\(component) \(keyValues)\n")
    }

    private func emit(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                cw_write_stderr($0, buffer.count)
            }
        }
    }

    public func write(_ level: LogLevel, _ event: String, _ fields: KeyValuePairs<String, CustomStringConvertible>) {
        guard level >= minimumLevel else { return }
        var line = "ts=\(Log.timestamp()) level=\(level.rawValue) component=\(component) event=\(event)"
        for (key, value) in fields {
            line += " \(key)=\(Log.quoted(value.description))"
        }
        line += "\n"
        emit(line)
    }

    static func quoted(_ value: String) -> String {
        if !value.isEmpty && !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }) {
            return value
        }
        var escaped = "\""
        for character in value {
            switch character {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped + "\""
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}
