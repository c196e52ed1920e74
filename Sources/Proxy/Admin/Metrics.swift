import CLibUV
import CShims
import Foundation
import Router

/// Prometheus text exposition of the proxy's state (GET /metrics).
enum MetricsText {
    static func render(runtime: ProxyRuntime, topology: Topology) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
            let rendered = labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
            out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(rendered)} \(value)\n"
        }
        let settings = runtime.settings
        let shown = settings.visibleIndexes.map { ($0, settings.slots[$0]) }
        family("causeway_backend_up", "gauge", "1 when the monitor reaches the backend.")
        for (index, slot) in shown {
            let status = slot.removed ? nil : topology.backend(at: index)
            sample("causeway_backend_up", [("backend", slot.name), ("role", status?.role.rawValue ?? "unknown")],
                   status?.health == .up ? "1" : "0")
        }
        family("causeway_backend_draining", "gauge", "1 while the backend is being drained.")
        for (index, slot) in shown {
            sample("causeway_backend_draining", [("backend", slot.name)], topology.backend(at: index)?.draining == true ? "1" : "0")
        }
        family("causeway_backend_lag_seconds", "gauge", "Replication lag measured on the proxy's clock.")
        for (index, slot) in shown {
            guard let status = topology.backend(at: index) else { continue }
            sample("causeway_backend_lag_seconds", [("backend", slot.name)], String(status.lagMs / 1000))
        }
        family("causeway_backend_lag_bytes", "gauge", "WAL bytes the replica has not replayed.")
        for (index, slot) in shown {
            guard let status = topology.backend(at: index) else { continue }
            sample("causeway_backend_lag_bytes", [("backend", slot.name)], String(status.lagBytes))
        }
        family("causeway_backend_server_connections", "gauge", "Open server connections per backend.")
        for (_, slot) in shown {
            sample("causeway_backend_server_connections", [("backend", slot.name)],
                   String(slot.counters.serverConnections.load(ordering: .relaxed)))
        }
        family("causeway_backend_sessions", "gauge", "Sessions using the backend.")
        for (_, slot) in shown {
            sample("causeway_backend_sessions", [("backend", slot.name)], String(slot.counters.sessions.load(ordering: .relaxed)))
        }
        family("causeway_queries_total", "counter", "Request units sent, by backend and kind.")
        for (_, slot) in shown {
            sample("causeway_queries_total", [("backend", slot.name), ("kind", "read")], String(slot.counters.reads.load(ordering: .relaxed)))
            sample("causeway_queries_total", [("backend", slot.name), ("kind", "write")], String(slot.counters.writes.load(ordering: .relaxed)))
        }
        family("causeway_routing_decisions_total", "counter", "Routing decisions by reason.")
        for (reason, count) in runtime.stats.routeCounts() {
            sample("causeway_routing_decisions_total", [("reason", reason.rawValue)], String(count))
        }
        family("causeway_retries_total", "counter", "Replica reads re-run elsewhere without the client noticing.")
        sample("causeway_retries_total", [], String(runtime.stats.retries.load(ordering: .relaxed)))
        family("causeway_errors_total", "counter", "ErrorResponses sent to clients: relayed from servers, or the proxy's own by SQLSTATE.")
        sample("causeway_errors_total", [("source", "server")], String(runtime.stats.serverErrors.load(ordering: .relaxed)))
        for (sqlState, count) in runtime.stats.proxyErrorCounts() {
            sample("causeway_errors_total", [("source", "proxy"), ("sqlstate", sqlState)], String(count))
        }
        family("causeway_config_generation", "gauge", "Configurations applied since start (0 = the one read at start; RELOAD and SIGHUP add one).")
        sample("causeway_config_generation", [], String(settings.generation))
        family("causeway_client_connections", "gauge", "Client connections now.")
        sample("causeway_client_connections", [], String(runtime.counters.clientConnections.load(ordering: .relaxed)))
        family("causeway_client_connections_total", "counter", "Client sessions that logged in.")
        sample("causeway_client_connections_total", [], String(runtime.stats.totalClients.load(ordering: .relaxed)))
        family("causeway_auth_failures_total", "counter", "Client logins refused.")
        sample("causeway_auth_failures_total", [], String(runtime.stats.authFailures.load(ordering: .relaxed)))
        family("causeway_topology_generation", "counter", "Cluster snapshots published by the monitor.")
        sample("causeway_topology_generation", [], String(topology.generation))
        return out
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// A deliberately small HTTP/1.0 responder on the control thread's loop: GET /metrics only.
final class MetricsServer {
    private let runtime: ProxyRuntime
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private var listener: UnsafeMutablePointer<uv_tcp_t>?
    private var connections: [ObjectIdentifier: MetricsConnection] = [:]
    let log: Log

    init(runtime: ProxyRuntime, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.runtime = runtime
        self.loop = loop
        log = runtime.log("metrics")
    }

    func start(_ address: ListenAddress) throws {
        let fd = cw_listen_socket(address.host, Int32(address.port), 64)
        guard fd >= 0 else {
            throw ProxyStartError("cannot listen for metrics on \(address.host):\(address.port): \(String(cString: strerror(-fd)))")
        }
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_tcp_open(handle, uv_os_sock_t(fd))
        _ = handle.withMemoryRebound(to: uv_stream_t.self, capacity: 1) { uv_listen($0, 64, metricsConnectionCallback) }
        listener = handle
        log.info("listening", ["address": "\(address.host):\(address.port)"])
    }

    func stop() {
        if let listener {
            self.listener = nil
            listener.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, freeHandleCallback) }
        }
        for connection in connections.values { connection.close() }
    }

    fileprivate func accept() {
        guard let listener else { return }
        let connection = MetricsConnection(server: self, loop: loop)
        let status = listener.withMemoryRebound(to: uv_stream_t.self, capacity: 1) { uv_accept($0, connection.stream) }
        guard status == 0 else {
            connection.close()
            return
        }
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    func finished(_ connection: MetricsConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
    }

    func response(for request: String) -> String {
        let line = request.prefix { $0 != "\r" && $0 != "\n" }
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0] == "GET" else {
            return Self.http(status: "405 Method Not Allowed", body: "only GET /metrics is served\n")
        }
        guard parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") else {
            return Self.http(status: "404 Not Found", body: "only GET /metrics is served\n")
        }
        return Self.http(status: "200 OK", body: MetricsText.render(runtime: runtime, topology: runtime.topology()),
                         type: "text/plain; version=0.0.4; charset=utf-8")
    }

    static func http(status: String, body: String, type: String = "text/plain; charset=utf-8") -> String {
        "HTTP/1.0 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    }
}

/// One HTTP request: read the head (bounded), answer, close.
final class MetricsConnection {
    unowned let server: MetricsServer
    let handle: UnsafeMutablePointer<uv_tcp_t>
    private var request: [UInt8] = []
    private var answered = false
    private var closed = false

    init(server: MetricsServer, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.server = server
        handle = .allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    var stream: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self)
    }

    func start() {
        uv_read_start(stream, metricsAllocCallback, metricsReadCallback)
    }

    fileprivate func received(_ bytes: UnsafeRawBufferPointer) {
        guard !answered else { return }
        request.append(contentsOf: bytes)
        let text = String(decoding: request, as: UTF8.self)
        if text.contains("\r\n\r\n") || text.contains("\n\n") {
            answer(server.response(for: text))
        } else if request.count > 8192 {
            answer(MetricsServer.http(status: "431 Request Header Fields Too Large", body: "request too large\n"))
        }
    }

    private func answer(_ text: String) {
        answered = true
        uv_read_stop(stream)
        let bytes = Array(text.utf8)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        request.pointee.data = buffer
        var uvBuffer = uv_buf_init(buffer.assumingMemoryBound(to: CChar.self), UInt32(bytes.count))
        if uv_write(request, stream, &uvBuffer, 1, metricsWriteCallback) != 0 {
            buffer.deallocate()
            request.deallocate()
            close()
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        server.finished(self)
        handle.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { uv_close($0, metricsCloseCallback) }
    }

    static func from(_ pointer: UnsafeMutableRawPointer?) -> MetricsConnection {
        Unmanaged<MetricsConnection>.fromOpaque(pointer!).takeUnretainedValue()
    }
}

private func metricsConnectionCallback(_ server: UnsafeMutablePointer<uv_stream_t>?, _ status: Int32) {
    guard status == 0, let data = server?.pointee.data else { return }
    Unmanaged<MetricsServer>.fromOpaque(data).takeUnretainedValue().accept()
}

private func metricsAllocCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?, _ suggested: Int, _ buffer: UnsafeMutablePointer<uv_buf_t>?) {
    let memory = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 1)
    buffer?.pointee = uv_buf_init(memory.assumingMemoryBound(to: CChar.self), 4096)
}

private func metricsReadCallback(_ handle: UnsafeMutablePointer<uv_stream_t>?, _ count: Int, _ buffer: UnsafePointer<uv_buf_t>?) {
    let memory = buffer.flatMap { UnsafeMutableRawPointer($0.pointee.base) }
    defer { memory?.deallocate() }
    let connection = MetricsConnection.from(handle?.pointee.data)
    if count > 0, let memory {
        connection.received(UnsafeRawBufferPointer(start: memory, count: count))
    } else if count < 0 {
        connection.close()
    }
}

private func metricsWriteCallback(_ request: UnsafeMutablePointer<uv_write_t>?, _ status: Int32) {
    guard let request else { return }
    request.pointee.data?.deallocate()
    let connection = MetricsConnection.from(request.pointee.handle.pointee.data)
    request.deallocate()
    connection.close()
}

private func metricsCloseCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    guard let handle else { return }
    Unmanaged<MetricsConnection>.fromOpaque(handle.pointee.data).release()
    handle.deallocate()
}
