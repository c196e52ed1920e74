// `--lag-schedule`: when to pause and resume WAL replay on which replica, relative to the start
// of the load. Syntax: comma-separated windows `NAME@START-END` or `NAME@START+LENGTH`, times as
// in `Durations` ("2s", "1500ms", "0.5s", bare seconds):
//     replica1@2s-5s            pause replica1 at 2 s, resume it at 5 s
//     replica2@6s+2s            pause replica2 at 6 s for 2 s
//     replica1@1s-3s,replica1@5s-6s

public struct LagWindow: Codable, Sendable, Equatable {
    public var replica: String
    public var startMs: Int
    public var endMs: Int

    public init(replica: String, startMs: Int, endMs: Int) {
        self.replica = replica
        self.startMs = startMs
        self.endMs = endMs
    }
}

public struct LagAction: Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case pause, resume }
    public var atMs: Int
    public var replica: String
    public var kind: Kind
}

public struct LagSchedule: Sendable, Equatable {
    public var windows: [LagWindow]

    public init(windows: [LagWindow] = []) { self.windows = windows }

    public init(parsing text: String) throws {
        var windows: [LagWindow] = []
        for rawItem in text.split(separator: ",") {
            let item = String(rawItem).trimmingWhitespace()
            guard let at = item.firstIndex(of: "@") else {
                throw WorkloadError("lag schedule item \"\(item)\": expected NAME@START-END or NAME@START+LENGTH")
            }
            let name = String(item[..<at]).trimmingWhitespace()
            let times = String(item[item.index(after: at)...])
            guard !name.isEmpty else { throw WorkloadError("lag schedule item \"\(item)\": the replica name is missing") }
            let window: LagWindow
            if let plus = times.firstIndex(of: "+") {
                guard let start = Durations.milliseconds(String(times[..<plus])),
                      let length = Durations.milliseconds(String(times[times.index(after: plus)...])), length > 0
                else { throw WorkloadError("lag schedule item \"\(item)\": START+LENGTH must be times such as 2s+3s") }
                window = LagWindow(replica: name, startMs: start, endMs: start + length)
            } else if let dash = times.firstIndex(of: "-") {
                guard let start = Durations.milliseconds(String(times[..<dash])),
                      let end = Durations.milliseconds(String(times[times.index(after: dash)...]))
                else { throw WorkloadError("lag schedule item \"\(item)\": START-END must be times such as 2s-5s") }
                guard end > start else { throw WorkloadError("lag schedule item \"\(item)\": the end must come after the start") }
                window = LagWindow(replica: name, startMs: start, endMs: end)
            } else {
                throw WorkloadError("lag schedule item \"\(item)\": expected NAME@START-END or NAME@START+LENGTH")
            }
            windows.append(window)
        }
        guard !windows.isEmpty else { throw WorkloadError("the lag schedule is empty") }
        // Overlapping windows on one replica would resume it in the middle of the other window.
        for (i, a) in windows.enumerated() {
            for b in windows[(i + 1)...] where a.replica == b.replica && a.startMs < b.endMs && b.startMs < a.endMs {
                throw WorkloadError("lag schedule: two windows for \(a.replica) overlap (\(Durations.describe(milliseconds: a.startMs))-\(Durations.describe(milliseconds: a.endMs)) and \(Durations.describe(milliseconds: b.startMs))-\(Durations.describe(milliseconds: b.endMs)))")
            }
        }
        self.windows = windows
    }

    /// Every pause and resume, in time order (a resume before a pause at the same instant).
    public var actions: [LagAction] {
        windows.flatMap { [LagAction(atMs: $0.startMs, replica: $0.replica, kind: .pause),
                           LagAction(atMs: $0.endMs, replica: $0.replica, kind: .resume)] }
            .sorted { ($0.atMs, $0.kind == .pause ? 1 : 0) < ($1.atMs, $1.kind == .pause ? 1 : 0) }
    }

    public var replicas: [String] {
        var seen: [String] = []
        for w in windows where !seen.contains(w.replica) { seen.append(w.replica) }
        return seen
    }

    /// The last instant anything happens; a run shorter than this never resumes by schedule.
    public var endMs: Int { windows.map(\.endMs).max() ?? 0 }
}
