import CLibUV
import Wire

/// Sends one CancelRequest to a server on a fresh connection, as PostgreSQL requires, and reports
/// when the server has closed that connection — by then the server has acted on the cancel.
final class CancelForwarder: StreamDelegate {
    private let worker: Worker
    private let stream: Stream
    private let packet: [UInt8]
    private var onDone: (() -> Void)?

    init(worker: Worker, processID: Int32, secret: [UInt8], onDone: @escaping () -> Void) {
        self.worker = worker
        self.onDone = onDone
        stream = Stream(loop: worker.loop, chunks: worker.chunks)
        packet = StartupPacket.cancelRequest(processID: processID, secret: secret).encoded()
        stream.delegate = self
    }

    func start(address: [UInt8]) {
        worker.cancelForwarders[ObjectIdentifier(self)] = self
        let status = address.withUnsafeBytes { stream.connect(to: $0.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
        if status != 0 { finish() }
    }

    private func finish() {
        guard let done = onDone else { return }
        onDone = nil
        stream.close()
        worker.cancelForwarders.removeValue(forKey: ObjectIdentifier(self))
        done()
    }

    func stream(_ stream: Stream, didConnectWith status: Int32) {
        guard status == 0 else {
            worker.log.warn("cancel_forward_failed", ["error": String(cString: uv_strerror(status))])
            finish()
            return
        }
        stream.write(packet)
        stream.startReading()
    }

    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool { false }
    func stream(_ stream: Stream, didEndWith status: Int32) { finish() }
    func streamDidDrain(_ stream: Stream) {}
}
