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
        let pools = runtime.pools.snapshot().compactMap { entry -> ([(String, String)], PoolRegistry.Counts)? in
            guard settings.slots.indices.contains(entry.key.backend) else { return nil }
            return ([("backend", settings.slots[entry.key.backend].name), ("database", entry.key.database),
                     ("user", entry.key.user)], entry.counts)
        }
        family("causeway_pool_server_connections", "gauge",
               "Server connections of each pool (backend, database, user) by state: active (a client holds it), idle, reset (being reset for the next client), login.")
        for (labels, counts) in pools {
            for (state, value) in [("active", counts.active), ("idle", counts.idle), ("reset", counts.resetting),
                                   ("login", counts.loggingIn)] {
                sample("causeway_pool_server_connections", labels + [("state", state)], String(value))
            }
        }
        family("causeway_pool_clients_waiting", "gauge", "Clients waiting for a connection of a full pool.")
        for (labels, counts) in pools {
            sample("causeway_pool_clients_waiting", labels, String(counts.waitingSince.count))
        }
        family("causeway_pool_wait_seconds", "histogram", "How long clients waited for a connection of a full pool.")
        for (labels, counts) in pools {
            var cumulative = 0
            for (position, bound) in PoolRegistry.waitBounds.enumerated() {
                cumulative += counts.waitBuckets[position]
                sample("causeway_pool_wait_seconds_bucket", labels + [("le", String(bound))], String(cumulative))
            }
            cumulative += counts.waitBuckets[PoolRegistry.waitBounds.count]
            sample("causeway_pool_wait_seconds_bucket", labels + [("le", "+Inf")], String(cumulative))
            sample("causeway_pool_wait_seconds_sum", labels, String(counts.waitSeconds))
            sample("causeway_pool_wait_seconds_count", labels, String(cumulative))
        }
        family("causeway_pool_wait_timeouts_total", "counter", "Waits that ended in query_wait_timeout (SQLSTATE 53300).")
        for (labels, counts) in pools {
            sample("causeway_pool_wait_timeouts_total", labels, String(counts.waitTimeouts))
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
    private let chunks = ChunkPool()
    private var listener: Listener?
    private var connections: [ObjectIdentifier: MetricsConnection] = [:]
    let log: Log

    init(runtime: ProxyRuntime, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.runtime = runtime
        log = runtime.log("metrics")
        listener = Listener(loop: loop, chunks: chunks) { [unowned self] stream in
            let connection = MetricsConnection(server: self, stream: stream)
            connections[ObjectIdentifier(connection)] = connection
            stream.startReading()
        }
    }

    func start(_ address: ListenAddress) throws {
        if let problem = listener?.listen(host: address.host, port: address.port, backlog: 64) {
            throw ProxyStartError("metrics: \(problem)")
        }
        log.info("listening", ["address": "\(address.host):\(address.port)"])
    }

    func stop() {
        listener?.close()
        listener = nil
        for connection in connections.values { connection.close() }
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

/// One HTTP request on the proxy's own stream code: read the head (bounded), answer, close.
final class MetricsConnection: StreamDelegate {
    unowned let server: MetricsServer
    let stream: Stream
    private var request: [UInt8] = []
    private var answered = false
    private var closed = false

    init(server: MetricsServer, stream: Stream) {
        self.server = server
        self.stream = stream
        stream.delegate = self
    }

    func stream(_ stream: Stream, didRead bytes: UnsafeRawBufferPointer, chunk: UnsafeMutableRawPointer) -> Bool {
        guard !answered else { return false }
        request.append(contentsOf: bytes)
        let text = String(decoding: request, as: UTF8.self)
        if text.contains("\r\n\r\n") || text.contains("\n\n") {
            answer(server.response(for: text))
        } else if request.count > 8192 {
            answer(MetricsServer.http(status: "431 Request Header Fields Too Large", body: "request too large\n"))
        }
        return false
    }

    func stream(_ stream: Stream, didEndWith status: Int32) { close() }
    func streamDidDrain(_ stream: Stream) {}
    func stream(_ stream: Stream, didConnectWith status: Int32) {}

    private func answer(_ text: String) {
        answered = true
        stream.write(Array(text.utf8))
        close()
    }

    /// Flushes what was written, then closes.
    func close() {
        guard !closed else { return }
        closed = true
        stream.delegate = nil
        stream.shutdownAndClose()
        server.finished(self)
    }
}
