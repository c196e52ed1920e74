// libuv plumbing shared by the monitor's loop-thread classes.

import CLibUV
import CShims

/// The proxy's monotonic clock, in nanoseconds.
@inline(__always)
func monotonicNanos() -> UInt64 { cw_monotonic_nanos() }

/// libuv's message for an error code.
func uvError(_ code: Int32) -> String {
    String(cString: uv_strerror(code))
}

/// Closes a handle allocated with `UnsafeMutablePointer<T>.allocate`; its memory is freed in the
/// close callback, never before. Clears `data` first so no callback reaches a dead owner.
func closeAndFree<T>(_ handle: UnsafeMutablePointer<T>) {
    let base = UnsafeMutablePointer<uv_handle_t>(OpaquePointer(handle))
    base.pointee.data = nil
    uv_close(base, freeHandleOnClose)
}

private func freeHandleOnClose(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    guard let handle else { return }
    UnsafeMutableRawPointer(handle).deallocate()
}

/// A `uv_timer_t` owned by one object; `fire` runs on each expiry.
final class LoopTimer {
    private var handle: UnsafeMutablePointer<uv_timer_t>?
    private let fire: () -> Void

    init(loop: UnsafeMutablePointer<uv_loop_t>, fire: @escaping () -> Void) {
        self.fire = fire
        let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        // uv_timer_init cannot fail.
        uv_timer_init(loop, handle)
        self.handle = handle
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// (Re)arms the timer: first expiry after `timeoutMs`, then every `repeatMs` (0: once).
    func start(timeoutMs: Int, repeatMs: Int = 0) {
        guard let handle else { return }
        uv_timer_start(handle, loopTimerFired, UInt64(max(0, timeoutMs)), UInt64(max(0, repeatMs)))
    }

    func stop() {
        guard let handle else { return }
        uv_timer_stop(handle)
    }

    func close() {
        guard let handle else { return }
        self.handle = nil
        closeAndFree(handle)
    }

    deinit { close() }

    fileprivate func fired() { fire() }
}

private func loopTimerFired(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    guard let data = handle?.pointee.data else { return }
    let timer = Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue()
    withExtendedLifetime(timer) { timer.fired() }
}
