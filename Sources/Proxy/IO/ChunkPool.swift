import CLibUV

/// Fixed-size buffers that carry bytes from a socket read straight into a socket write on the
/// other side. Each chunk starts with the `uv_write_t` that writes it, so forwarding a chunk needs
/// no allocation and no copy; chunks go back to the pool in the write callback.
final class ChunkPool {
    static let capacity = 64 * 1024
    static let headerSize = (MemoryLayout<uv_write_t>.size + 63) & ~63
    private var free: [UnsafeMutableRawPointer] = []
    private let keepAtMost: Int

    init(keepAtMost: Int = 512) {
        self.keepAtMost = keepAtMost
        free.reserveCapacity(keepAtMost)
    }

    deinit {
        for chunk in free { chunk.deallocate() }
    }

    func take() -> UnsafeMutableRawPointer {
        if let chunk = free.popLast() { return chunk }
        return UnsafeMutableRawPointer.allocate(byteCount: Self.headerSize + Self.capacity, alignment: 64)
    }

    func give(_ chunk: UnsafeMutableRawPointer) {
        if free.count < keepAtMost {
            free.append(chunk)
        } else {
            chunk.deallocate()
        }
    }

    @inline(__always) static func data(_ chunk: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        chunk + headerSize
    }

    @inline(__always) static func chunk(fromData data: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        data - headerSize
    }
}
