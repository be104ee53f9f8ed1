/*
 * An LD_PRELOAD shim that refuses what clknetsim (a clock-and-network simulator that runs
 * time daemons unmodified) does not implement, so tests can show tsyncd does without it:
 *   - epoll: clknetsim advances simulated time only inside select()/poll();
 *   - socketpair(): asyncio's default self-pipe;
 *   - socket() with SOCK_CLOEXEC/SOCK_NONBLOCK in the type, or of a family other than AF_INET
 *     (no Unix or IPv6 sockets unless the simulation sets them up);
 *   - the FIONBIO, FIOCLEX and FIONCLEX ioctls on sockets.
 * Everything else passes through to the C library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

int epoll_create(int size) { (void)size; errno = ENOSYS; return -1; }
int epoll_create1(int flags) { (void)flags; errno = ENOSYS; return -1; }

int socketpair(int domain, int type, int protocol, int sv[2]) {
    (void)domain; (void)type; (void)protocol; (void)sv;
    errno = EOPNOTSUPP;
    return -1;
}

int socket(int domain, int type, int protocol) {
    static int (*real_socket)(int, int, int);
    if (!real_socket)
        real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    if (domain != AF_INET || (type & (SOCK_CLOEXEC | SOCK_NONBLOCK))) {
        errno = EINVAL;
        return -1;
    }
    return real_socket(domain, type, protocol);
}

int ioctl(int fd, unsigned long request, ...) {
    static int (*real_ioctl)(int, unsigned long, ...);
    struct stat st;
    va_list ap;
    void *arg;

    va_start(ap, request);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (!real_ioctl)
        real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    if ((request == FIONBIO || request == FIOCLEX || request == FIONCLEX) &&
        fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
        errno = EINVAL;
        return -1;
    }
    return real_ioctl(fd, request, arg);
}
