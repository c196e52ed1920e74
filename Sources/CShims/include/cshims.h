#ifndef CAUSEWAY_CSHIMS_H
#define CAUSEWAY_CSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/// Writes a whole buffer to stderr in one write(2) so concurrent log lines never interleave.
void cw_write_stderr(const char *bytes, size_t length);

/// Creates a non-blocking TCP listening socket bound to host:port with SO_REUSEADDR and
/// SO_REUSEPORT set before bind, so every worker can bind the same address and the kernel
/// spreads accepted connections. Returns the fd, or -errno on failure.
int cw_listen_socket(const char *host, int port, int backlog);

/// The port a bound socket actually got (for port 0), or -errno.
int cw_socket_port(int fd);

/// Sets TCP_NODELAY on a libuv TCP handle's socket; proxies must not add Nagle delays.
int cw_tcp_nodelay(uv_tcp_t *handle);

/// Process CPU time (user+system) in microseconds, for per-transaction CPU figures.
int64_t cw_process_cpu_micros(void);

/// Monotonic clock in nanoseconds.
uint64_t cw_monotonic_nanos(void);

/// Ignores SIGPIPE process-wide: a peer that vanished must surface as EPIPE on write, not kill us.
void cw_ignore_sigpipe(void);

/// Blocks until the uid/gid of a named user are known; returns 0 and fills them, -1 if unknown.
int cw_lookup_user(const char *name, uint32_t *uid, uint32_t *gid);

#endif
