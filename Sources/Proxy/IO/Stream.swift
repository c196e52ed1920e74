import CLibUV
import CShims
import Foundation

/// Who gets told what happens on a stream. Every call happens on the stream's loop thread.
protocol StreamDelegate: AnyObject {
    /// `bytes` live in `chunk`; return true to take ownership of the chunk (e.g. forward it),
    /// false to let the stream recycle it.
    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool
    /// End of stream or error (a negative libuv status). The stream is being closed.
    func stream(_ stream: Stream, didEndWith status: Int32)
    /// The write queue fell below the low-water mark after having been above the high-water mark.
    func streamDidDrain(_ stream: Stream)
    func stream(_ stream: Stream, didConnectWith status: Int32)
}

/// A libuv TCP handle and its buffers. The handle keeps the object alive (a retained pointer in
/// `handle.data`) until libuv's close callback, so no callback can outlive it.
final class Stream {
    static let highWater = 512 * 1024
    static let lowWater = 128 * 1024

    let handle: UnsafeMutablePointer<uv_tcp_t>
    /// The buffers reads land in and writes go out of, shared by the loop's streams.
    let chunks: ChunkPool
    weak var delegate: StreamDelegate?
    private(set) var isReading = false
    private(set) var isClosed = false
    private var wantsDrainNotice = false
    private var endReported = false
    /// A connect is in flight: a shutdown now would wait for it and then never run.
    private var isConnecting = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, chunks: ChunkPool) {
        self.chunks = chunks
        handle = .allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    var streamHandle: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self)
    }

    var writeQueueSize: Int { Int(uv_stream_get_write_queue_size(streamHandle)) }
    var isAboveHighWater: Bool { writeQueueSize > Self.highWater }

    func setNoDelay() { _ = cw_tcp_nodelay(handle) }

    /// "host:port" of the peer, for logs and SHOW CLIENTS.
    func peerAddress() -> String {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getpeername(handle, $0, &length) }
        }
        guard status == 0 else { return "?" }
        var name = [CChar](repeating: 0, count: 64)
        var port: UInt16 = 0
        let family = storage.ss_family
        withUnsafePointer(to: &storage) { pointer in
            if family == sa_family_t(AF_INET) {
                pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    _ = uv_ip4_name(address, &name, name.count)
                    port = UInt16(bigEndian: address.pointee.sin_port)
                }
            } else {
                pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    _ = uv_ip6_name(address, &name, name.count)
                    port = UInt16(bigEndian: address.pointee.sin6_port)
                }
            }
        }
        let text = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(text):\(port)"
    }

    func connect(to address: UnsafePointer<sockaddr>) -> Int32 {
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        let status = uv_tcp_connect(request, handle, address, streamConnectCallback)
        isConnecting = status == 0
        if status != 0 { request.deallocate() }
        return status
    }

    func startReading() {
        guard !isReading, !isClosed else { return }
        if uv_read_start(streamHandle, streamAllocCallback, streamReadCallback) == 0 { isReading = true }
    }

    func stopReading() {
        guard isReading, !isClosed else { return }
        uv_read_stop(streamHandle)
        isReading = false
    }

    /// Writes `length` bytes that sit in `chunk`'s data area; the stream owns the chunk afterwards.
    /// Tries a direct write first: when the socket takes everything (the common case) no write
    /// request is queued, which spares libuv a completion round and an epoll_ctl per message.
    func write(chunk: UnsafeMutableRawPointer, length: Int) {
        guard !isClosed else {
            chunks.give(chunk)
            return
        }
        let data = ChunkPool.data(chunk).assumingMemoryBound(to: CChar.self)
        var offset = 0
        if uv_stream_get_write_queue_size(streamHandle) == 0 {
            var direct = uv_buf_init(data, UInt32(length))
            let written = Int(uv_try_write(streamHandle, &direct, 1))
            if written == length {
                chunks.give(chunk)
                return
            }
            if written > 0 {
                offset = written
            } else if written != Int(UV_EAGAIN.rawValue) {
                chunks.give(chunk)
                reportEnd(Int32(written))
                return
            }
        }
        let request = chunk.assumingMemoryBound(to: uv_write_t.self)
        var buffer = uv_buf_init(data + offset, UInt32(length - offset))
        let status = uv_write(request, streamHandle, &buffer, 1, streamWriteCallback)
        if status != 0 {
            chunks.give(chunk)
            reportEnd(status)
            return
        }
        if isAboveHighWater { wantsDrainNotice = true }
    }

    /// Writes `bytes` straight from the array when the socket takes them all at once (the common
    /// case: a client's request on its way to a server is not copied again); what the socket does
    /// not take is copied into chunks and queued.
    func write(_ bytes: [UInt8]) {
        guard !isClosed, !bytes.isEmpty else { return }
        var offset = 0
        if uv_stream_get_write_queue_size(streamHandle) == 0 {
            let written = bytes.withUnsafeBytes { source in
                var direct = uv_buf_init(UnsafeMutablePointer(mutating: source.baseAddress!.assumingMemoryBound(to: CChar.self)),
                                         UInt32(source.count))
                return Int(uv_try_write(streamHandle, &direct, 1))
            }
            if written == bytes.count { return }
            if written > 0 {
                offset = written
            } else if written != Int(UV_EAGAIN.rawValue) {
                reportEnd(Int32(written))
                return
            }
        }
        while offset < bytes.count {
            let count = min(ChunkPool.capacity, bytes.count - offset)
            let chunk = chunks.take()
            bytes.withUnsafeBytes { source in
                ChunkPool.data(chunk).copyMemory(from: source.baseAddress! + offset, byteCount: count)
            }
            write(chunk: chunk, length: count)
            offset += count
        }
    }

    /// Flushes what is queued, then closes. For final error messages and cancel requests.
    func shutdownAndClose() {
        guard !isClosed else { return }
        // libuv queues a shutdown behind a pending connect but, once connected with nothing to
        // write, never runs it: the handle would stay open and keep its loop alive for ever
        // (the SIGTERM hang when a session was cut while its server link was connecting).
        // Nothing was sent on such a stream, so closing it at once loses nothing.
        if isConnecting {
            close()
            return
        }
        stopReading()
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        if uv_shutdown(request, streamHandle, streamShutdownCallback) != 0 {
            request.deallocate()
            close()
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        isReading = false
        handle.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, streamCloseCallback) }
    }

    fileprivate func didWrite(status: Int32) {
        if status < 0 && status != UV_ECANCELED.rawValue {
            reportEnd(status)
            return
        }
        if wantsDrainNotice && writeQueueSize < Self.lowWater {
            wantsDrainNotice = false
            delegate?.streamDidDrain(self)
        }
    }

    fileprivate func reportEnd(_ status: Int32) {
        guard !endReported else { return }
        endReported = true
        delegate?.stream(self, didEndWith: status)
        close()
    }

    fileprivate func didRead(_ count: Int, _ data: UnsafeMutableRawPointer?) {
        guard let data else {
            if count < 0 { reportEnd(Int32(count)) }
            return
        }
        let chunk = ChunkPool.chunk(fromData: data)
        if count > 0, !isClosed, let delegate {
            if !delegate.stream(self, didRead: UnsafeRawBufferPointer(start: data, count: count), chunk: chunk) {
                chunks.give(chunk)
            }
            return
        }
        chunks.give(chunk)
        if count < 0 { reportEnd(Int32(count)) }
    }

    fileprivate func didConnect(status: Int32) {
        isConnecting = false
        guard !isClosed else { return }
        delegate?.stream(self, didConnectWith: status)
    }

    fileprivate func didClose() {
        handle.deallocate()
        // Balances the retain taken in init; the object may go away right after this.
        Unmanaged.passUnretained(self).release()
    }

    @inline(__always) static func from(_ pointer: UnsafeMutableRawPointer?) -> Stream {
        Unmanaged<Stream>.fromOpaque(pointer!).takeUnretainedValue()
    }
}

private func streamAllocCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?, _ suggested: Int,
                                 _ buffer: UnsafeMutablePointer<uv_buf_t>?) {
    let stream = Stream.from(handle?.pointee.data)
    let chunk = stream.chunks.take()
    buffer?.pointee = uv_buf_init(ChunkPool.data(chunk).assumingMemoryBound(to: CChar.self), UInt32(ChunkPool.capacity))
}

private func streamReadCallback(_ handle: UnsafeMutablePointer<uv_stream_t>?, _ count: Int,
                                _ buffer: UnsafePointer<uv_buf_t>?) {
    let stream = Stream.from(handle?.pointee.data)
    stream.didRead(count, buffer.flatMap { UnsafeMutableRawPointer($0.pointee.base) })
}

private func streamWriteCallback(_ request: UnsafeMutablePointer<uv_write_t>?, _ status: Int32) {
    guard let request else { return }
    let stream = Stream.from(request.pointee.handle.pointee.data)
    stream.chunks.give(UnsafeMutableRawPointer(request))
    stream.didWrite(status: status)
}

private func streamConnectCallback(_ request: UnsafeMutablePointer<uv_connect_t>?, _ status: Int32) {
    guard let request else { return }
    let stream = Stream.from(request.pointee.handle.pointee.data)
    request.deallocate()
    stream.didConnect(status: status)
}

private func streamShutdownCallback(_ request: UnsafeMutablePointer<uv_shutdown_t>?, _ status: Int32) {
    guard let request else { return }
    let stream = Stream.from(request.pointee.handle.pointee.data)
    request.deallocate()
    stream.close()
}

private func streamCloseCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    Stream.from(handle?.pointee.data).didClose()
}
