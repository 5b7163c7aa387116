/* Probes for the contention measurement (benchmarks/contention_kernel.py compiles and runs this).
 *
 *   contention_probe pingpong ITERS          two threads pinned to CPUs 0 and 1 bounce one cache line;
 *                                            prints the one-way hand-off in ns (half a round trip):
 *                                            min, 10th and 50th percentile over batches of 64
 *   contention_probe lock ITERS              one thread: an uncontended test-and-set lock/unlock pair
 *                                            around a list-node update; prints ns per pair
 *   contention_probe zap MODE NPROC ITERS SIZE_MB PROCS_FILE...
 *                                            NPROC zapper processes, process i pinned to CPU i and put
 *                                            into the cgroup whose procs file is PROCS_FILE[i]; each
 *                                            iteration: map SIZE_MB of 64 KiB-aligned MADV_HUGEPAGE
 *                                            memory, fault it in, wait for the others, time the zap
 *                                            (MODE first-page: MADV_DONTNEED of the first 4 KiB of each
 *                                            64 KiB; MODE munmap: munmap of the whole region), wait,
 *                                            time the munmap of what is left (first-page only).
 *                                            Prints "zap <proc> <iter> <zap_cpu_ns> <free_cpu_ns>
 *                                            <zap wall start> <end> <free wall start> <end>" lines
 *                                            (CPU time of the thread: its own work plus spinning on a
 *                                            lock, not the time it was descheduled).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) { perror("sched_setaffinity"); exit(2); }
}

/* ---- ping-pong ---- */
static _Alignas(64) _Atomic long line;
static long iters;

static void *pong(void *arg) {
    (void)arg;
    pin(1);
    for (long i = 0; i < iters; i++) {
        while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1) ;
        atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Round trips are timed in batches of 64: on a loaded machine a batch during which the other thread was
 * descheduled is long; the low percentiles are the batches in which both threads ran, i.e. the hand-off. */
static int pingpong(void) {
    pthread_t t;
    const long batch = 64;
    long nb = iters / batch;
    iters = nb * batch;
    double *per = malloc(sizeof(double) * nb);
    pin(0);
    pthread_create(&t, NULL, pong, NULL);
    for (long b = 0; b < nb; b++) {
        uint64_t t0 = now_ns();
        for (long i = b * batch; i < (b + 1) * batch; i++) {
            atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2) ;
        }
        per[b] = (double)(now_ns() - t0) / batch / 2.0;
    }
    pthread_join(t, NULL);
    qsort(per, nb, sizeof(double), cmp_double);
    printf("handoff_ns min %.2f p10 %.2f p50 %.2f batches %ld\n", per[0], per[nb / 10], per[nb / 2], nb);
    return 0;
}

/* ---- uncontended lock pair around a list update ---- */
struct node { struct node *next, *prev; };
static int lockpair(void) {
    static _Alignas(64) atomic_int lk;
    static struct node head = {&head, &head}, n;
    pin(0);
    uint64_t t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        while (atomic_exchange_explicit(&lk, 1, memory_order_acquire)) ;
        if (i & 1) { n.prev->next = n.next; n.next->prev = n.prev; n.next = n.prev = &n; }
        else { n.next = head.next; n.prev = &head; head.next->prev = &n; head.next = &n; }
        atomic_store_explicit(&lk, 0, memory_order_release);
    }
    uint64_t t1 = now_ns();
    printf("lock_ns %.2f\n", (double)(t1 - t0) / iters);
    return 0;
}

/* ---- zappers ---- */
struct barrier { _Atomic long arrived; };

static void barrier_wait(struct barrier *b, long nproc, long *round) {
    long target = ++*round * nproc;
    atomic_fetch_add(&b->arrived, 1);
    while (atomic_load(&b->arrived) < target) ;
}

static int zapper(int id, const char *mode, long nproc, long n, size_t size, const char *procs,
                  struct barrier *b) {
    FILE *f = fopen(procs, "w");
    if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f)) { perror(procs); return 2; }
    pin(id);
    const size_t folio = 64 * 1024, page = 4096;
    long round = 0;
    int first_page = strcmp(mode, "first-page") == 0;
    for (long it = 0; it < n; it++) {
        char *raw = mmap(NULL, size + folio, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) { perror("mmap"); return 2; }
        char *p = (char *)(((uintptr_t)raw + folio - 1) & ~(uintptr_t)(folio - 1));
        if (p > raw) munmap(raw, p - raw);
        size_t tail = (raw + size + folio) - (p + size);
        if (tail) munmap(p + size, tail);
        madvise(p, size, MADV_HUGEPAGE);
        for (size_t off = 0; off < size; off += page) p[off] = 1;
        barrier_wait(b, nproc, &round);
        uint64_t w0 = now_ns(), c0 = cpu_ns();
        if (first_page) {
            for (size_t off = 0; off < size; off += folio) madvise(p + off, page, MADV_DONTNEED);
        } else {
            munmap(p, size);
        }
        uint64_t c1 = cpu_ns(), w1 = now_ns();
        barrier_wait(b, nproc, &round);
        uint64_t w2 = now_ns(), c2 = cpu_ns();
        if (first_page) munmap(p, size);
        uint64_t c3 = cpu_ns(), w3 = now_ns();
        printf("zap %d %ld %llu %llu %llu %llu %llu %llu\n", id, it, (unsigned long long)(c1 - c0),
               (unsigned long long)(c3 - c2), (unsigned long long)w0, (unsigned long long)w1,
               (unsigned long long)w2, (unsigned long long)w3);
        barrier_wait(b, nproc, &round);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "pingpong") == 0) { iters = atol(argv[2]); return pingpong(); }
    if (argc >= 3 && strcmp(argv[1], "lock") == 0) { iters = atol(argv[2]); return lockpair(); }
    if (argc >= 6 && strcmp(argv[1], "zap") == 0) {
        long nproc = atol(argv[3]), n = atol(argv[4]);
        size_t size = (size_t)atol(argv[5]) << 20;
        if (argc != 6 + nproc) { fprintf(stderr, "need %ld procs files\n", nproc); return 2; }
        struct barrier *b = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        setvbuf(stdout, NULL, _IOFBF, 1 << 20);
        for (long i = 0; i < nproc; i++) {
            pid_t pid = fork();
            if (pid == 0) _exit(zapper((int)i, argv[2], nproc, n, size, argv[6 + i], b));
        }
        int rc = 0, st;
        while (wait(&st) > 0) if (!WIFEXITED(st) || WEXITSTATUS(st)) rc = 1;
        return rc;
    }
    fprintf(stderr, "usage: see the comment at the top of contention_probe.c\n");
    return 2;
}
