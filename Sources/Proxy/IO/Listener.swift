import CLibUV
import CShims
import Foundation

/// A listening TCP socket on one loop (SO_REUSEPORT, so each worker can bind the same address);
/// every accepted connection becomes a `Stream` handed to `onAccept`.
final class Listener {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let chunks: ChunkPool
    private let onAccept: (Stream) -> Void
    private var handle: UnsafeMutablePointer<uv_tcp_t>?

    init(loop: UnsafeMutablePointer<uv_loop_t>, chunks: ChunkPool, onAccept: @escaping (Stream) -> Void) {
        self.loop = loop
        self.chunks = chunks
        self.onAccept = onAccept
    }

    var isListening: Bool { handle != nil }

    /// Starts listening; on failure returns why, in words for the operator.
    func listen(host: String, port: Int, backlog: Int32) -> String? {
        let fd = cw_listen_socket(host, Int32(port), backlog)
        guard fd >= 0 else { return "cannot listen on \(host):\(port): \(String(cString: strerror(-fd)))" }
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_tcp_open(handle, uv_os_sock_t(fd))
        self.handle = handle
        let status = handle.withMemoryRebound(to: uv_stream_t.self, capacity: 1) { uv_listen($0, backlog, listenerCallback) }
        return status == 0 ? nil : "cannot listen on \(host):\(port): \(String(cString: uv_strerror(status)))"
    }

    /// Stops accepting; connections already accepted go on.
    func close() {
        guard let handle else { return }
        self.handle = nil
        handle.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
    }

    fileprivate func accept() {
        guard let handle else { return }
        let stream = Stream(loop: loop, chunks: chunks)
        let status = handle.withMemoryRebound(to: uv_stream_t.self, capacity: 1) { uv_accept($0, stream.streamHandle) }
        guard status == 0 else {
            stream.close()
            return
        }
        onAccept(stream)
    }
}

private func listenerCallback(_ server: UnsafeMutablePointer<uv_stream_t>?, _ status: Int32) {
    guard status == 0, let data = server?.pointee.data else { return }
    Unmanaged<Listener>.fromOpaque(data).takeUnretainedValue().accept()
}
