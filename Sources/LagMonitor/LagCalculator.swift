// Pure lag arithmetic (design §7): no I/O, no clock of its own — every call is given the time,
// in nanoseconds of the proxy's monotonic clock.
//
// Time lag is measured without trusting any server clock: the calculator remembers when the
// primary was first seen at each WAL position. A replica that has replayed up to R is behind by
// "now − the first time the primary was seen beyond R", and by nothing at all once R has reached
// the primary's latest position — however long the primary has been idle.

import Foundation
import Router

public struct LagCalculator: Sendable {
    /// One observation of the primary: its WAL position, and when the proxy saw it.
    public struct Sample: Sendable, Equatable {
        public var time: UInt64
        public var lsn: LSN

        public init(time: UInt64, lsn: LSN) {
            self.time = time
            self.lsn = lsn
        }
    }

    /// How far one replica is behind.
    public struct Lag: Sendable, Equatable {
        /// Latest primary position − replay position, 0 when caught up.
        public var bytes: UInt64
        /// Milliseconds since the primary was first seen beyond the replay position; 0 when caught up.
        public var ms: Double
        /// Smoothed replay speed, bytes per second.
        public var replayRateBytesPerSecond: Double
        /// `bytes / rate` in ms: 0 when caught up, nil when behind while replay is not moving.
        public var catchUpEstimateMs: Double?

        public init(bytes: UInt64, ms: Double, replayRateBytesPerSecond: Double, catchUpEstimateMs: Double?) {
            self.bytes = bytes
            self.ms = ms
            self.replayRateBytesPerSecond = replayRateBytesPerSecond
            self.catchUpEstimateMs = catchUpEstimateMs
        }
    }

    private struct Replica: Sendable {
        var lastReplay: LSN?
        var lastTime: UInt64 = 0
        /// When replay was last seen to move.
        var lastAdvance: UInt64 = 0
        var rate: Double = 0
        /// The lag start computed for `cachedReplay`: it cannot change while replay stands still,
        /// so a stalled replica keeps an exact, growing lag even after its start left the history.
        var cachedReplay: LSN?
        var cachedStart: UInt64 = 0
    }

    /// Primary samples older than this (relative to the newest) are dropped; the newest sample is
    /// always kept, however old.
    public let horizonNanos: UInt64
    /// Upper bound on the number of samples kept, whatever the horizon.
    public let maxSamples: Int
    /// Time constant of the exponential smoothing of replay rates.
    public let rateTimeConstantNanos: UInt64

    private var buffer: [Sample] = []
    private var head = 0
    /// The newest sample pruned from the history: replicas behind its position are behind by at
    /// least (now − its time).
    private var lastDropped: Sample?
    private var replicas: [Int: Replica] = [:]

    public init(
        horizonNanos: UInt64 = 60_000_000_000,
        maxSamples: Int = 8192,
        rateTimeConstantNanos: UInt64 = 1_000_000_000
    ) {
        self.horizonNanos = horizonNanos
        self.maxSamples = max(1, maxSamples)
        self.rateTimeConstantNanos = max(1, rateTimeConstantNanos)
    }

    // MARK: - Primary history

    /// The retained history, oldest first. Positions strictly increase.
    public var samples: ArraySlice<Sample> { buffer[head...] }

    public var sampleCount: Int { buffer.count - head }

    /// The primary's newest position, if it was ever seen.
    public var latestPrimaryLSN: LSN? { buffer.last?.lsn }

    /// Records that the primary reported `lsn` at `time`. Only a new position is stored (an idle
    /// primary adds nothing); a position lower than the last one means a different WAL history
    /// (a restored or replaced primary), so the history starts over.
    public mutating func recordPrimary(_ lsn: LSN, at time: UInt64) {
        var time = time
        if let last = buffer.last {
            if lsn == last.lsn { return }
            if lsn < last.lsn {
                resetHistory()
            } else if time < last.time {
                time = last.time
            }
        }
        buffer.append(Sample(time: time, lsn: lsn))
        prune(now: time)
    }

    /// Forgets every primary sample (a failover: positions of another server's history).
    public mutating func resetHistory() {
        buffer.removeAll(keepingCapacity: true)
        head = 0
        lastDropped = nil
        for key in replicas.keys {
            replicas[key]?.cachedReplay = nil
        }
    }

    private mutating func prune(now: UInt64) {
        while buffer.count - head > 1 {
            let oldest = buffer[head]
            let tooMany = buffer.count - head > maxSamples
            let tooOld = now > oldest.time && now - oldest.time > horizonNanos
            guard tooMany || tooOld else { break }
            lastDropped = oldest
            head += 1
        }
        if head >= 256 && head * 2 >= buffer.count {
            buffer.removeFirst(head)
            head = 0
        }
    }

    /// When the primary was first seen beyond `position`; nil when it never was.
    public func firstTimeBeyond(_ position: LSN) -> UInt64? {
        guard let latest = buffer.last, position < latest.lsn else { return nil }
        if let dropped = lastDropped, position < dropped.lsn {
            return dropped.time
        }
        var low = head, high = buffer.count - 1
        while low < high {
            let mid = (low + high) / 2
            if buffer[mid].lsn > position { high = mid } else { low = mid + 1 }
        }
        return buffer[low].time
    }

    // MARK: - Replicas

    /// Records a replica's replay position and updates its smoothed replay rate.
    public mutating func recordReplay(replica: Int, lsn: LSN, at time: UInt64) {
        var state = replicas[replica] ?? Replica()
        if let previous = state.lastReplay {
            if lsn < previous {
                state.rate = 0
                state.lastAdvance = time
            } else if time > state.lastTime {
                let elapsed = Double(time - state.lastTime)
                let instant = Double(lsn.value - previous.value) / (elapsed / 1e9)
                let alpha = 1 - exp(-elapsed / Double(rateTimeConstantNanos))
                state.rate += alpha * (instant - state.rate)
                if lsn > previous { state.lastAdvance = time }
                // Replay that has not moved for a whole time constant is stalled (paused, or
                // waiting for WAL): its rate is 0, not a value decaying towards 0 forever.
                if time > state.lastAdvance, time - state.lastAdvance >= rateTimeConstantNanos { state.rate = 0 }
            }
        } else {
            state.lastAdvance = time
        }
        if state.lastReplay == nil || time >= state.lastTime {
            state.lastReplay = lsn
            state.lastTime = max(time, state.lastTime)
        }
        replicas[replica] = state
    }

    /// Drops what is known about a replica (it became the primary, or was removed).
    public mutating func forgetReplica(_ replica: Int) {
        replicas[replica] = nil
    }

    /// The smoothed replay rate of a replica (bytes/s), 0 if unknown.
    public func replayRate(replica: Int) -> Double {
        replicas[replica]?.rate ?? 0
    }

    /// The lag, at `now`, of a replica whose replay position is `replay` (normally the last one
    /// recorded for it). Mutating only to remember when the current lag started.
    public mutating func lag(replica: Int, replay: LSN, now: UInt64) -> Lag {
        var state = replicas[replica] ?? Replica()
        defer { replicas[replica] = state }
        guard let latest = buffer.last, replay < latest.lsn else {
            state.cachedReplay = nil
            return Lag(bytes: 0, ms: 0, replayRateBytesPerSecond: state.rate, catchUpEstimateMs: 0)
        }
        let bytes = latest.lsn.value - replay.value
        let start: UInt64
        if let cached = state.cachedReplay, cached == replay {
            start = state.cachedStart
        } else {
            start = firstTimeBeyond(replay) ?? now
            state.cachedReplay = replay
            state.cachedStart = start
        }
        let ms = now > start ? Double(now - start) / 1e6 : 0
        let estimate: Double? = state.rate > 0 ? Double(bytes) / state.rate * 1000 : nil
        return Lag(bytes: bytes, ms: ms, replayRateBytesPerSecond: state.rate, catchUpEstimateMs: estimate)
    }
}
