/* bench/ref-relay.c - the relay benchmark's reference: the simplest fast TCP relay one
 * can write in C on Linux, to tell what the machine allows from what sockit costs.
 *
 * usage: ref-relay LISTEN_PORT TARGET_PORT [PIPE_BYTES]     (127.0.0.1 only)
 *
 * Accepts on 127.0.0.1:LISTEN_PORT, connects each client to 127.0.0.1:TARGET_PORT, and
 * moves each direction on a thread of its own with blocking splice(2) through a pipe of
 * PIPE_BYTES (default 256 KiB, sockit relay's default --buffer): no epoll, no runtime, no
 * copies, no limits, no logging. A direction that ends shuts the other side's sending
 * down; the last of the two closes both sockets. Runs until killed.
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
#include <sys/socket.h>
#include <unistd.h>

static int pipe_bytes = 256 * 1024;

typedef struct {
    int client, target;
    int directions_left; /* atomically decremented; 0 closes both sockets */
} conn_t;

typedef struct { conn_t *conn; int from, to; } dir_t;

static void *one_way(void *arg) {
    dir_t *d = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        fcntl(p[1], F_SETPIPE_SZ, pipe_bytes);
        for (;;) {
            ssize_t n = splice(d->from, NULL, p[1], NULL, (size_t)pipe_bytes, SPLICE_F_MOVE);
            if (n <= 0) break;
            while (n > 0) {
                ssize_t m = splice(p[0], NULL, d->to, NULL, (size_t)n, SPLICE_F_MOVE);
                if (m <= 0) goto done;
                n -= m;
            }
        }
    done:
        close(p[0]);
        close(p[1]);
    }
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
        fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT [PIPE_BYTES]\n", argv[0]);
        return 2;
    }
    if (argc > 3) pipe_bytes = atoi(argv[3]);
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
