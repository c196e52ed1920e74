#include "cshims.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

void cw_write_stderr(const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t n = write(STDERR_FILENO, bytes, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        bytes += n;
        length -= (size_t)n;
    }
}

int cw_listen_socket(const char *host, int port, int backlog) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portText[16];
    snprintf(portText, sizeof portText, "%d", port);
    int rc = getaddrinfo(host, portText, &hints, &res);
    if (rc != 0 || res == NULL) return -EADDRNOTAVAIL;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { int e = errno; freeaddrinfo(res); return -e; }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        int e = errno; close(fd); freeaddrinfo(res); return -e;
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        int e = errno; close(fd); freeaddrinfo(res); return -e;
    }
    freeaddrinfo(res);
    if (listen(fd, backlog) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}

int cw_socket_port(int fd) {
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) return -errno;
    if (addr.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (addr.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return -EAFNOSUPPORT;
}

int cw_tcp_nodelay(uv_tcp_t *handle) { return uv_tcp_nodelay(handle, 1); }

int64_t cw_process_cpu_micros(void) {
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
    return (int64_t)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec
         + (int64_t)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec;
}

uint64_t cw_monotonic_nanos(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cw_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

int cw_lookup_user(const char *name, uint32_t *uid, uint32_t *gid) {
    struct passwd pwd, *result = NULL;
    char buffer[4096];
    if (getpwnam_r(name, &pwd, buffer, sizeof buffer, &result) != 0 || result == NULL) return -1;
    *uid = pwd.pw_uid;
    *gid = pwd.pw_gid;
    return 0;
}
