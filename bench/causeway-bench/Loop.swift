// libuv plumbing for the bench: one loop per thread, handles owned by small objects that free
// their memory only in libuv's close callback.

import CLibUV

/// Monotonic nanoseconds; the same clock on every thread, so worker times compare.
@inline(__always)
func nowNanos() -> UInt64 { uv_hrtime() }

func uvError(_ code: Int32) -> String { String(cString: uv_strerror(code)) }

/// A new, initialised loop; `freeLoop` closes and frees it.
func makeLoop() -> UnsafeMutablePointer<uv_loop_t> {
    let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
    // uv_loop_init fails only when the process is out of file descriptors or memory.
    let rc = uv_loop_init(loop)
    precondition(rc == 0, "uv_loop_init: \(uvError(rc))")
    return loop
}

func freeLoop(_ loop: UnsafeMutablePointer<uv_loop_t>) {
    // Handles closed in the last iteration need a few more turns to run their close callbacks.
    for _ in 0..<4 { _ = uv_run(loop, UV_RUN_NOWAIT) }
    // A handle still open means an owner that outlives the loop; leaking the loop is then safer
    // than freeing memory that handle points into (the process is about to exit anyway).
    if uv_loop_close(loop) == 0 { loop.deallocate() }
}

/// Closes a handle allocated with `.allocate(capacity: 1)` and frees it in the close callback.
/// `data` is cleared first so no late callback reaches a dead owner.
func closeAndFree<T>(_ handle: UnsafeMutablePointer<T>) {
    let base = UnsafeMutablePointer<uv_handle_t>(OpaquePointer(handle))
    base.pointee.data = nil
    uv_close(base) { handle in
        guard let handle else { return }
        UnsafeMutableRawPointer(handle).deallocate()
    }
}

/// A `uv_timer_t`; `fire` runs on each expiry.
final class LoopTimer {
    private var handle: UnsafeMutablePointer<uv_timer_t>?
    var fire: () -> Void

    init(loop: UnsafeMutablePointer<uv_loop_t>, fire: @escaping () -> Void = {}) {
        self.fire = fire
        let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        self.handle = handle
    }

    /// First expiry after `ms`, then every `repeatMs` (0: once).
    func start(ms: Int, repeatMs: Int = 0) {
        guard let handle else { return }
        uv_timer_start(handle, { h in
            guard let data = h?.pointee.data else { return }
            let timer = Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue()
            withExtendedLifetime(timer) { timer.fire() }
        }, UInt64(max(0, ms)), UInt64(max(0, repeatMs)))
    }

    func stop() {
        if let handle { uv_timer_stop(handle) }
    }

    func close() {
        guard let handle else { return }
        self.handle = nil
        closeAndFree(handle)
    }

    deinit { close() }
}

/// A `uv_async_t`: the one safe way for another thread to wake this loop.
final class LoopWakeup: @unchecked Sendable {
    // Set once before the loop runs, only read afterwards; `uv_async_send` is thread-safe.
    private let handle: UnsafeMutablePointer<uv_async_t>
    private var closed = false
    var fire: () -> Void = {}

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        handle = .allocate(capacity: 1)
        uv_async_init(loop, handle) { h in
            guard let data = h?.pointee.data else { return }
            let wakeup = Unmanaged<LoopWakeup>.fromOpaque(data).takeUnretainedValue()
            withExtendedLifetime(wakeup) { wakeup.fire() }
        }
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// From any thread.
    func send() { uv_async_send(handle) }

    /// On the loop's thread only.
    func close() {
        guard !closed else { return }
        closed = true
        closeAndFree(handle)
    }
}

/// SIGINT/SIGTERM delivered to the loop as ordinary callbacks.
final class LoopSignal {
    private var handle: UnsafeMutablePointer<uv_signal_t>?
    private let fire: (Int32) -> Void

    init(loop: UnsafeMutablePointer<uv_loop_t>, signal: Int32, fire: @escaping (Int32) -> Void) {
        self.fire = fire
        let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
        uv_signal_init(loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_signal_start(handle, { h, signum in
            guard let data = h?.pointee.data else { return }
            let me = Unmanaged<LoopSignal>.fromOpaque(data).takeUnretainedValue()
            withExtendedLifetime(me) { me.fire(signum) }
        }, signal)
        self.handle = handle
    }

    func close() {
        guard let handle else { return }
        self.handle = nil
        uv_signal_stop(handle)
        closeAndFree(handle)
    }

    deinit { close() }
}
