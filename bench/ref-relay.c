/* bench/ref-relay.c - the relay benchmark's reference: the simplest fast TCP relay one
 * can write in C on Linux, to tell what the machine allows from what sockit costs.
 *
 * usage: ref-relay LISTEN_PORT TARGET_PORT [BYTES [splice|copy]]     (127.0.0.1 only)
 *
 * Accepts on 127.0.0.1:LISTEN_PORT, connects each client to 127.0.0.1:TARGET_PORT, and
 * moves each direction on a thread of its own, blocking: with splice(2) through a pipe of
 * BYTES (default 256 KiB), or with `copy`, read(2) into a buffer of BYTES and write(2) it
 * all out. No epoll, no runtime, no limits, no logging. A direction that ends shuts the
 * other side's sending down; the last of the two closes both sockets. Runs until killed.
 * build: cc -O2 -pthread -o ref-relay bench/ref-relay.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int bytes = 256 * 1024;
static int copy; /* read/write through a buffer instead of splice */

typedef struct {
    int client, target;
    int directions_left; /* atomically decremented; 0 closes both sockets */
} conn_t;

typedef struct { conn_t *conn; int from, to; } dir_t;

/* splice from -> pipe -> to until from ends or a side fails. */
static void splice_loop(int from, int to) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    fcntl(p[1], F_SETPIPE_SZ, bytes);
    for (;;) {
        ssize_t n = splice(from, NULL, p[1], NULL, (size_t)bytes, SPLICE_F_MOVE);
        if (n <= 0) break;
        while (n > 0) {
            ssize_t m = splice(p[0], NULL, to, NULL, (size_t)n, SPLICE_F_MOVE);
            if (m <= 0) goto done;
            n -= m;
        }
    }
done:
    close(p[0]);
    close(p[1]);
}

/* read from into a buffer, write it all to `to`, until from ends or a side fails. */
static void copy_loop(int from, int to) {
    char *buf = malloc((size_t)bytes);
    if (!buf) return;
    for (;;) {
        ssize_t n = read(from, buf, (size_t)bytes);
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t m = write(to, buf + off, (size_t)(n - off));
            if (m <= 0) goto done;
            off += m;
        }
    }
done:
    free(buf);
}

static void *one_way(void *arg) {
    dir_t *d = arg;
    if (copy) copy_loop(d->from, d->to);
    else splice_loop(d->from, d->to);
    shutdown(d->to, SHUT_WR);
    conn_t *c = d->conn;
    free(d);
    if (__atomic_sub_fetch(&c->directions_left, 1, __ATOMIC_ACQ_REL) == 0) {
        close(c->client);
        close(c->target);
        free(c);
    }
    return NULL;
}

static void start(conn_t *c, int from, int to) {
    dir_t *d = malloc(sizeof *d);
    pthread_t t;
    if (!d) { perror("malloc"); exit(1); }
    *d = (dir_t){c, from, to};
    if (pthread_create(&t, NULL, one_way, d) != 0) { perror("pthread_create"); exit(1); }
    pthread_detach(t);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT [BYTES [splice|copy]]\n", argv[0]);
        return 2;
    }
    if (argc > 3) bytes = atoi(argv[3]);
    if (argc > 4) copy = strcmp(argv[4], "copy") == 0;
    if (bytes <= 0) { fprintf(stderr, "BYTES must be positive\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in listen_at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    struct sockaddr_in target_at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    listen_at.sin_addr.s_addr = target_at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&listen_at, sizeof listen_at) || listen(l, 128)) {
        perror("bind/listen");
        return 1;
    }
    for (;;) {
        int client = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        int target = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (target < 0 || connect(target, (struct sockaddr *)&target_at, sizeof target_at)) {
            perror("connect");
            close(client);
            if (target >= 0) close(target);
            continue;
        }
        conn_t *c = malloc(sizeof *c);
        if (!c) { perror("malloc"); exit(1); }
        *c = (conn_t){client, target, 2};
        start(c, client, target);
        start(c, target, client);
    }
}
