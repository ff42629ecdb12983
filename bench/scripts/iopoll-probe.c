// What Linux answers to polled IO (IORING_SETUP_IOPOLL) on this machine's devices: the
// experiment behind coring's `Builder::iopoll` (see src/driver/iopoll.rs and README,
// "Polled IO"). No liburing needed:
//
//   cc -O1 -o /tmp/iopoll-probe bench/scripts/iopoll-probe.c && /tmp/iopoll-probe [DIR...]
//
// For each DIR (default: /tmp and /dev/shm) it writes a 4 KiB file with O_DIRECT, then on
// a fresh IOPOLL ring submits one polled READ and one polled WRITE of it, polling with
// io_uring_enter(GETEVENTS, min_complete 0) until the completion appears (at most 2 s),
// and prints each completion's result and how long it took. Then it queues a NOP and an
// ASYNC_CANCEL on an IOPOLL ring and tries IORING_REGISTER_SYNC_CANCEL there.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct ring {
  int fd;
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
};

static int setup(struct ring *r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_IOPOLL;
  r->fd = syscall(__NR_io_uring_setup, 8, &p);
  if (r->fd < 0) { perror("io_uring_setup(IOPOLL)"); return -1; }
  char *sq = mmap(0, p.sq_off.array + p.sq_entries * 4, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
                  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
  r->sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED) { perror("mmap"); return -1; }
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (void *)(cq + p.cq_off.cqes);
  return 0;
}

static void push(struct ring *r, const struct io_uring_sqe *e) {
  unsigned t = *r->sq_tail, i = t & *r->sq_mask;
  r->sqes[i] = *e;
  r->sq_array[i] = i;
  __atomic_store_n(r->sq_tail, t + 1, __ATOMIC_RELEASE);
}

static int enter(struct ring *r, unsigned submit, unsigned flags) {
  int ret = syscall(__NR_io_uring_enter, r->fd, submit, 0, flags, NULL, 0);
  return ret < 0 ? -errno : ret;
}

static int reap(struct ring *r, const char *what) {
  int n = 0;
  while (*r->cq_head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
    struct io_uring_cqe *c = &r->cqes[*r->cq_head & *r->cq_mask];
    printf("  %s: user_data %llu, res %d (%s)\n", what, (unsigned long long)c->user_data,
           c->res, c->res < 0 ? strerror(-c->res) : "ok");
    __atomic_store_n(r->cq_head, *r->cq_head + 1, __ATOMIC_RELEASE);
    n++;
  }
  return n;
}

static long us_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0->tv_sec) * 1000000 + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

static void polled(const char *path, int fd, void *buf, int op, const char *name) {
  struct ring r;
  if (setup(&r)) return;
  struct io_uring_sqe e;
  memset(&e, 0, sizeof e);
  e.opcode = op; e.fd = fd; e.addr = (uint64_t)buf; e.len = 4096; e.user_data = 7;
  push(&r, &e);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int s = enter(&r, 1, 0);
  printf("%s: polled %s submitted (enter -> %d)\n", path, name, s);
  long polls = 0;
  int n = reap(&r, "completion at submission");
  while (n == 0 && us_since(&t0) < 2000000) {
    int g = enter(&r, 0, IORING_ENTER_GETEVENTS);
    if (g < 0) printf("  enter(GETEVENTS) -> %d\n", g);
    polls++;
    n = reap(&r, "completion after polling");
  }
  printf("  after %ld polls, %ld us\n", polls, us_since(&t0));
  close(r.fd);
}

int main(int argc, char **argv) {
  const char *defaults[] = {"/tmp", "/dev/shm"};
  const char **dirs = argc > 1 ? (const char **)argv + 1 : defaults;
  int ndirs = argc > 1 ? argc - 1 : 2;
  void *buf;
  if (posix_memalign(&buf, 4096, 4096)) return 1;
  memset(buf, 'x', 4096);
  for (int i = 0; i < ndirs; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/iopoll-probe.%d", dirs[i], (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
    if (fd < 0) { printf("%s: open(O_DIRECT): %s\n", path, strerror(errno)); continue; }
    if (pwrite(fd, buf, 4096, 0) != 4096) perror("pwrite");
    polled(path, fd, buf, IORING_OP_READ, "READ");
    polled(path, fd, buf, IORING_OP_WRITE, "WRITE");
    close(fd);
    unlink(path);
  }
  struct ring r;
  if (setup(&r)) return 1;
  struct io_uring_sqe e;
  memset(&e, 0, sizeof e);
  e.opcode = IORING_OP_NOP; e.user_data = 1;
  push(&r, &e);
  memset(&e, 0, sizeof e);
  e.opcode = IORING_OP_ASYNC_CANCEL; e.addr = 7; e.user_data = 2;
  push(&r, &e);
  printf("IOPOLL ring: NOP (user_data 1) and ASYNC_CANCEL (user_data 2): enter -> %d\n",
         enter(&r, 2, IORING_ENTER_GETEVENTS));
  reap(&r, "completion");
  enter(&r, 0, IORING_ENTER_GETEVENTS);
  reap(&r, "completion");
  struct io_uring_sync_cancel_reg sc;
  memset(&sc, 0, sizeof sc);
  sc.addr = 7; sc.timeout.tv_sec = 1;
  int rc = syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_SYNC_CANCEL, &sc, 1);
  printf("IOPOLL ring: REGISTER_SYNC_CANCEL of nothing -> %d (%s)\n", rc,
         rc < 0 ? strerror(errno) : "ok");
  return 0;
}
