import LagMonitor
import Router
import Testing

private let ms: UInt64 = 1_000_000
private let second: UInt64 = 1_000_000_000

@Suite("LagCalculator")
struct LagCalculatorTests {
    @Test("an idle, caught-up replica has no lag however long the primary has been idle")
    func idleCaughtUpReplica() {
        var calc = LagCalculator()
        let t0: UInt64 = 10 * second
        calc.recordPrimary(LSN(1000), at: t0)
        calc.recordReplay(replica: 1, lsn: LSN(1000), at: t0 + 5 * ms)
        // Minutes pass with no writes: the primary keeps reporting the same position.
        for minute in 1...5 {
            let now = t0 + UInt64(minute) * 60 * second
            calc.recordPrimary(LSN(1000), at: now)
            calc.recordReplay(replica: 1, lsn: LSN(1000), at: now)
            let lag = calc.lag(replica: 1, replay: LSN(1000), now: now)
            #expect(lag.bytes == 0)
            #expect(lag.ms == 0)
            #expect(lag.catchUpEstimateMs == 0)
        }
        #expect(calc.sampleCount == 1, "an idle primary adds no samples")
    }

    @Test("after a long idle period, lag counts from the first write, not from the last replayed commit")
    func idlePrimaryThenWrite() {
        var calc = LagCalculator()
        calc.recordPrimary(LSN(500), at: 1 * second)
        // 10 minutes without writes, then one.
        let write = 601 * second
        calc.recordPrimary(LSN(900), at: write)
        let lag = calc.lag(replica: 2, replay: LSN(500), now: write + 300 * ms)
        #expect(lag.bytes == 400)
        #expect(abs(lag.ms - 300) < 0.001)
    }

    @Test("lag is measured on the proxy's clock from when the primary was first seen beyond the replay position")
    func lagFromProxyClock() {
        var calc = LagCalculator()
        // The calculator never sees a server timestamp: only proxy times and positions.
        calc.recordPrimary(LSN(100), at: 1000 * ms)
        calc.recordPrimary(LSN(200), at: 1100 * ms)
        calc.recordPrimary(LSN(300), at: 1200 * ms)
        calc.recordPrimary(LSN(400), at: 1300 * ms)
        // Replayed 200: the primary was first seen beyond 200 (at 300) at 1200 ms.
        var lag = calc.lag(replica: 1, replay: LSN(200), now: 1450 * ms)
        #expect(lag.bytes == 200)
        #expect(abs(lag.ms - 250) < 0.001)
        // Replayed 250 (between samples): still the 300-sample, at 1200 ms.
        lag = calc.lag(replica: 1, replay: LSN(250), now: 1450 * ms)
        #expect(lag.bytes == 150)
        #expect(abs(lag.ms - 250) < 0.001)
        // Behind the oldest sample: from the oldest sample.
        lag = calc.lag(replica: 1, replay: LSN(50), now: 1450 * ms)
        #expect(abs(lag.ms - 450) < 0.001)
        // At or beyond the newest position: caught up.
        #expect(calc.lag(replica: 1, replay: LSN(400), now: 1450 * ms).ms == 0)
        #expect(calc.lag(replica: 1, replay: LSN(450), now: 1450 * ms).bytes == 0)
        #expect(calc.firstTimeBeyond(LSN(399)) == 1300 * ms)
        #expect(calc.firstTimeBeyond(LSN(400)) == nil)
    }

    @Test("a stalled replica's lag keeps growing with the clock")
    func stalledReplicaGrows() {
        var calc = LagCalculator()
        calc.recordPrimary(LSN(100), at: 0)
        calc.recordPrimary(LSN(200), at: 100 * ms)
        var previous = -1.0
        for step in 1...20 {
            let now = 100 * ms + UInt64(step) * 250 * ms
            calc.recordPrimary(LSN(200 + UInt64(step)), at: now)
            let lag = calc.lag(replica: 1, replay: LSN(100), now: now)
            #expect(lag.ms > previous)
            #expect(abs(lag.ms - Double(now - 100 * ms) / 1e6) < 0.001)
            previous = lag.ms
        }
    }

    @Test("replay rate is smoothed bytes per second and gives the catch-up estimate")
    func rateAndCatchUp() {
        var calc = LagCalculator()
        // The replica replays 1 MB every 100 ms (10 MB/s) for 5 s, 4 MB behind a primary that
        // keeps writing at the same speed.
        let step: UInt64 = 1_000_000
        for i in 0...50 {
            let now = UInt64(i) * 100 * ms
            calc.recordPrimary(LSN(4 * step + UInt64(i) * step), at: now)
            calc.recordReplay(replica: 1, lsn: LSN(UInt64(i) * step), at: now)
        }
        let now: UInt64 = 5000 * ms
        let lag = calc.lag(replica: 1, replay: LSN(50 * step), now: now)
        #expect(lag.bytes == 4 * step)
        #expect(abs(lag.replayRateBytesPerSecond - 10_000_000) < 100_000, "rate \(lag.replayRateBytesPerSecond)")
        #expect(lag.catchUpEstimateMs != nil)
        if let estimate = lag.catchUpEstimateMs {
            #expect(abs(estimate - 400) < 5, "4 MB at 10 MB/s; estimate \(estimate)")
        }
        // The primary reached 50 MB at 4600 ms and was first seen beyond it at 4700 ms.
        #expect(abs(lag.ms - 300) < 0.001)
        #expect(calc.replayRate(replica: 1) == lag.replayRateBytesPerSecond)
    }

    @Test("the rate follows a change of speed within a couple of time constants")
    func rateAdapts() {
        var calc = LagCalculator(rateTimeConstantNanos: second)
        var position: UInt64 = 0
        for i in 0...30 {  // 3 s at 1 MB/s
            calc.recordReplay(replica: 1, lsn: LSN(position), at: UInt64(i) * 100 * ms)
            position += 100_000
        }
        #expect(abs(calc.replayRate(replica: 1) - 1_000_000) < 60_000)
        for i in 31...60 {  // 3 s at 4 MB/s
            calc.recordReplay(replica: 1, lsn: LSN(position), at: UInt64(i) * 100 * ms)
            position += 400_000
        }
        #expect(abs(calc.replayRate(replica: 1) - 4_000_000) < 250_000)
    }

    @Test("a replica whose replay stopped has rate 0 and no catch-up estimate")
    func stalledReplicaHasNoEstimate() {
        var calc = LagCalculator(rateTimeConstantNanos: second)
        for i in 0...10 {
            calc.recordReplay(replica: 1, lsn: LSN(UInt64(i) * 1000), at: UInt64(i) * 100 * ms)
        }
        #expect(calc.replayRate(replica: 1) > 0)
        // Replay stops at 10_000 while the primary moves on.
        calc.recordPrimary(LSN(50_000), at: 1000 * ms)
        for i in 11...25 {
            calc.recordReplay(replica: 1, lsn: LSN(10_000), at: UInt64(i) * 100 * ms)
        }
        let lag = calc.lag(replica: 1, replay: LSN(10_000), now: 2500 * ms)
        #expect(lag.bytes == 40_000)
        #expect(lag.replayRateBytesPerSecond == 0)
        #expect(lag.catchUpEstimateMs == nil)
    }

    @Test("the history is bounded by time and by count, always keeping the newest sample")
    func historyBounded() {
        var calc = LagCalculator(horizonNanos: 2 * second, maxSamples: 10_000)
        for i in 0..<1000 {  // 100 s of a busy primary, sampled every 100 ms
            calc.recordPrimary(LSN(UInt64(i + 1) * 10), at: UInt64(i) * 100 * ms)
        }
        #expect(calc.sampleCount <= 21)
        #expect(calc.samples.first!.time >= 97_000 * ms)
        #expect(calc.latestPrimaryLSN == LSN(10_000))

        var capped = LagCalculator(horizonNanos: 3600 * second, maxSamples: 50)
        for i in 0..<1000 {
            capped.recordPrimary(LSN(UInt64(i + 1)), at: UInt64(i) * ms)
        }
        #expect(capped.sampleCount == 50)
        #expect(capped.latestPrimaryLSN == LSN(1000))

        // An idle primary: the one sample stays, however old.
        var idle = LagCalculator(horizonNanos: second)
        idle.recordPrimary(LSN(7), at: 0)
        idle.recordPrimary(LSN(7), at: 3600 * second)
        #expect(idle.sampleCount == 1)
        #expect(idle.lag(replica: 1, replay: LSN(3), now: 3600 * second).ms == 3_600_000)
    }

    @Test("a replica behind the whole history is reported at least the horizon behind")
    func behindTheHorizon() {
        var calc = LagCalculator(horizonNanos: 2 * second)
        for i in 0..<100 {  // 10 s
            calc.recordPrimary(LSN(UInt64(i + 1) * 10), at: UInt64(i) * 100 * ms)
        }
        let now: UInt64 = 9900 * ms
        // Replay 15 was passed at 100 ms (sample 20), long dropped. Reported ≥ the horizon.
        let lag = calc.lag(replica: 1, replay: LSN(15), now: now)
        #expect(lag.ms >= 2000)
        #expect(lag.ms <= 9800)
        #expect(lag.bytes == 1000 - 15)
    }

    @Test("a stalled replica keeps its exact lag after its start has left the history")
    func stalledAcrossHorizon() {
        var calc = LagCalculator(horizonNanos: 1 * second)
        calc.recordPrimary(LSN(10), at: 0)
        calc.recordPrimary(LSN(20), at: 100 * ms)
        // Measured once while the start is still in the history…
        #expect(abs(calc.lag(replica: 1, replay: LSN(10), now: 200 * ms).ms - 100) < 0.001)
        for i in 2..<100 {
            calc.recordPrimary(LSN(UInt64(i + 1) * 10), at: UInt64(i) * 100 * ms)
        }
        // …and 10 s later it is still counted from 100 ms.
        let lag = calc.lag(replica: 1, replay: LSN(10), now: 10_000 * ms)
        #expect(abs(lag.ms - 9900) < 0.001)
    }

    @Test("a primary position going backwards starts a new history")
    func backwardsResets() {
        var calc = LagCalculator()
        calc.recordPrimary(LSN(1000), at: 0)
        calc.recordPrimary(LSN(2000), at: 100 * ms)
        calc.recordPrimary(LSN(500), at: 200 * ms)
        #expect(calc.sampleCount == 1)
        #expect(calc.latestPrimaryLSN == LSN(500))
        #expect(calc.lag(replica: 1, replay: LSN(400), now: 300 * ms).ms == 100)
    }

    @Test("without any primary sample there is nothing to be behind")
    func noReference() {
        var calc = LagCalculator()
        let lag = calc.lag(replica: 1, replay: LSN(5), now: second)
        #expect(lag.bytes == 0 && lag.ms == 0)
    }
}
