/*
 * cgfence-fd-holder CONTROL AGENT: keeps the seccomp notify fds of exec-fenced containers
 * alive across daemon restarts, and is runc's seccomp agent socket, so that a container can
 * always hand over a new fd (`runc exec`) whether the daemon is up or not.
 *
 * Why a separate process: the kernel fails every notified syscall with ENOSYS once the last
 * holder of a notify fd closes it, so the fds must outlive a crashed or upgraded daemon.
 *
 * It decides nothing. While a daemon is connected (it sent GET), it only holds and forwards:
 * the daemon answers every notification. While none is, it answers an exec CONTINUE: the
 * exec then goes on to the kernel exec fence, which kills a forbidden program before its
 * first instruction, as it does on a node without the notify path. So a daemon restart
 * never blocks a container's execs; it only turns its EACCES answers into kills until the
 * next daemon takes over (GET). Any other notified syscall is one of cgfence's seccomp
 * denials and gets EPERM, as the daemon would answer it, and is counted for the next daemon
 * to record (DENIED, protocol.h).
 *
 * Started by the daemon; returns once it listens (or at once when a holder already answers
 * on CONTROL). It exits when it holds nothing and nobody is connected, when told to (QUIT),
 * or when no daemon connects in its first minute. A held fd whose container is gone (its
 * filter has no task left: POLLHUP) is closed on its own.
 */
#define _GNU_SOURCE
#include "protocol.h"
#include "runc-state.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS	 8
#define MAX_CONNS	 64
#define STARTUP_GRACE_MS 60000

struct deny_count {
	uint32_t arch;
	int nr;
	unsigned long long count;
};

struct held {
	unsigned long long serial;
	int pid;
	int fd;
	char key[FDH_MAX_KEY + 1];
	/* Denials answered while no daemon was connected, for the next one to record. */
	struct deny_count denied[FDH_MAX_KINDS];
	int ndenied;
};

struct conn {
	int fd;
	char *buf;
	size_t len;
	int notify_fd;
};

static struct held *held;
static size_t nheld, capheld;
static int clients[MAX_CLIENTS];
static size_t nclients;
static struct conn conns[MAX_CONNS];
static size_t nconns;
static int daemon_fd = -1;  /* the client that took over with GET */
static int ever_taken_over; /* a probe that connects and leaves is no daemon */
static unsigned long long next_serial = 1;
static struct seccomp_notif_sizes sizes;
static int table_fd = -1;
static struct fdh_slot *table; /* shared with the daemon: see protocol.h */

/* ---- sockets ---- */

static int addr_of(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa->sun_path, path);
	return 0;
}

static int listen_on(const char *path, int type, char *why, size_t n)
{
	struct sockaddr_un sa;
	struct stat st;
	int s = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0 || addr_of(path, &sa)) {
		snprintf(why, n, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* a dead holder's: the probe in main found nobody answering */
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) || listen(s, 64)) {
		snprintf(why, n, "cannot listen on %s: %s", path, strerror(errno));
		close(s);
		return -1;
	}
	return s;
}

static int send_fd_msg(int sock, const char *text, int fd)
{
	struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		msg.msg_control = u.buf;
		msg.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -1 : 0;
}

/* Collects SCM_RIGHTS fds of one message into fds (at most max; the rest are closed). */
static int take_fds(struct msghdr *msg, int *fds, int max)
{
	int n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int j = 0; j < k; j++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + j * sizeof(int), sizeof(int));
			if (n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

static int is_notify_fd(int fd)
{
	char link[64], target[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = '\0';
	return strcmp(target, "anon_inode:seccomp notify") == 0;
}

/* ---- held fds ---- */

static void drop_at(size_t i)
{
	close(held[i].fd);
	held[i] = held[--nheld];
}

static void drop_serial(unsigned long long serial)
{
	for (size_t i = 0; i < nheld; i++)
		if (held[i].serial == serial) {
			drop_at(i);
			return;
		}
}

static struct held *put(unsigned long long serial, int pid, const char *key, int fd)
{
	drop_serial(serial);
	if (nheld == capheld) {
		size_t cap = capheld ? capheld * 2 : 64;
		struct held *n = realloc(held, cap * sizeof(*held));
		if (!n) {
			close(fd);
			return NULL;
		}
		held = n;
		capheld = cap;
	}
	struct held *h = &held[nheld++];
	h->serial = serial;
	h->pid = pid;
	h->fd = fd;
	h->ndenied = 0;
	memset(h->denied, 0, sizeof(h->denied));
	snprintf(h->key, sizeof(h->key), "%s", key);
	if (serial >= next_serial)
		next_serial = serial + 1;
	return h;
}

/*
 * The exec syscalls, the only ones the profile routes here to be let on (seccomp-profile.ts):
 * every other notified syscall is one cgfence's seccomp rules deny. By the audit arch and
 * number the kernel reports (x32 is AUDIT_ARCH_X86_64 with __X32_SYSCALL_BIT in nr).
 */
static const struct {
	uint32_t arch;
	int nr;
} exec_syscalls[] = {
	{ AUDIT_ARCH_X86_64, 59 },
	{ AUDIT_ARCH_X86_64, 322 }, /* execve, execveat */
	{ AUDIT_ARCH_X86_64, 0x40000000 | 520 },
	{ AUDIT_ARCH_X86_64, 0x40000000 | 545 }, /* x32 */
	{ AUDIT_ARCH_I386, 11 },
	{ AUDIT_ARCH_I386, 358 },
	{ AUDIT_ARCH_AARCH64, 221 },
	{ AUDIT_ARCH_AARCH64, 281 },
	{ AUDIT_ARCH_ARM, 11 },
	{ AUDIT_ARCH_ARM, 387 },
};

static int is_exec(uint32_t arch, int nr)
{
	for (size_t i = 0; i < sizeof(exec_syscalls) / sizeof(exec_syscalls[0]); i++)
		if (exec_syscalls[i].arch == arch && exec_syscalls[i].nr == nr)
			return 1;
	return 0;
}

/*
 * No daemon. An exec goes on (CONTINUE) to the kernel exec fence, which judges what really
 * runs. Anything else is a cgfence seccomp denial and fails with EPERM, as the daemon would
 * answer it: fail closed, never CONTINUE (that would run the denied syscall).
 */
static void count_denial(struct held *h, uint32_t arch, int nr)
{
	for (int i = 0; i < h->ndenied; i++)
		if (h->denied[i].arch == arch && h->denied[i].nr == nr) {
			h->denied[i].count++;
			return;
		}
	if (h->ndenied == FDH_MAX_KINDS - 1) {
		/* The last slot takes every further kind: counted, not named. */
		arch = 0;
		nr = -1;
		if (h->denied[FDH_MAX_KINDS - 1].count == 0)
			h->denied[FDH_MAX_KINDS - 1] = (struct deny_count){ 0, -1, 0 };
		h->denied[FDH_MAX_KINDS - 1].count++;
		return;
	}
	h->denied[h->ndenied++] = (struct deny_count){ arch, nr, 1 };
}

static void answer_unattended(struct held *h)
{
	int fd = h->fd;
	uint8_t req[512], resp[512];
	if (sizes.seccomp_notif > sizeof(req) || sizes.seccomp_notif_resp > sizeof(resp))
		return;
	memset(req, 0, sizeof(req));
	if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
		return; /* ENOENT: the caller went away meanwhile */
	const struct seccomp_notif *n = (const struct seccomp_notif *)req;
	memset(resp, 0, sizeof(resp));
	struct seccomp_notif_resp *r = (struct seccomp_notif_resp *)resp;
	r->id = n->id;
	const int exec = is_exec(n->data.arch, n->data.nr);
	if (exec)
		r->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	else
		r->error = -EPERM;
	if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0)
		return; /* gone too: nothing was answered */
	if (!exec)
		count_denial(h, n->data.arch, n->data.nr); /* for the next daemon's records (GET) */
}

/* The daemon died between receiving notifications and answering them: answer them. */
static void rescue_in_flight(void)
{
	if (!table)
		return;
	for (size_t i = 0; i < nheld; i++) {
		struct fdh_slot *slot = &table[held[i].serial % FDH_SLOTS];
		if ((slot->serial & ~FDH_SLOT_DENY) != held[i].serial)
			continue;
		uint8_t resp[512];
		if (sizes.seccomp_notif_resp > sizeof(resp))
			return;
		for (uint64_t id = slot->id; id - slot->id < FDH_PROBE; id++) {
			uint64_t probe = id;
			if (ioctl(held[i].fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &probe))
				continue; /* not received, answered, or no such id */
			memset(resp, 0, sizeof(resp));
			struct seccomp_notif_resp *r = (struct seccomp_notif_resp *)resp;
			r->id = id;
			/* The slot's own id is of the kind it says. One received after the slot's last
			 * write is of no known kind: EPERM, since CONTINUE would run a denied syscall. */
			if (id == slot->id && !(slot->serial & FDH_SLOT_DENY))
				r->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
			else
				r->error = -EPERM;
			if (ioctl(held[i].fd, SECCOMP_IOCTL_NOTIF_SEND, resp)) { /* answered meanwhile */
			}
		}
	}
	memset(table, 0, FDH_SLOTS * sizeof(*table));
}

/* ---- connections ---- */

static void close_conn(size_t i)
{
	close(conns[i].fd);
	if (conns[i].notify_fd >= 0)
		close(conns[i].notify_fd);
	free(conns[i].buf);
	conns[i] = conns[--nconns];
}

/* runc 1.1 sends the state and the fd in one sendmsg, then closes when it exits: the
 * delivery is complete as soon as the JSON is. Returns 1 when the conn is done. */
static int read_conn(struct conn *c)
{
	for (;;) {
		char buf[16384];
		union {
			char b[CMSG_SPACE(sizeof(int) * 4)];
			struct cmsghdr align;
		} u;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr msg = {
			.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
		};
		ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 0 : 1;
		int fds[4];
		int k = take_fds(&msg, fds, 4);
		for (int j = 0; j < k; j++) {
			if (c->notify_fd < 0)
				c->notify_fd = fds[j];
			else
				close(fds[j]); /* one fd per state: anything more is not runc's */
		}
		if (n == 0)
			return 1;
		if (c->len + (size_t)n > RUNC_STATE_MAX)
			return 1;
		char *nb = realloc(c->buf, c->len + (size_t)n + 1);
		if (!nb)
			return 1;
		c->buf = nb;
		memcpy(c->buf + c->len, buf, (size_t)n);
		c->len += (size_t)n;

		char key[FDH_MAX_KEY + 1] = "";
		int pid = 0;
		const char *why;
		int st = runc_state_parse(c->buf, c->len, key, sizeof(key), &pid, &why);
		if (st == 0)
			continue;
		if (st == 1 && c->notify_fd >= 0 && is_notify_fd(c->notify_fd)) {
			struct held *h = put(next_serial, pid, key, c->notify_fd);
			c->notify_fd = -1;
			if (h && daemon_fd >= 0) {
				char line[FDH_MAX_MSG];
				snprintf(line, sizeof(line), "NEW %llu %d %s", h->serial, h->pid, h->key);
				send_fd_msg(daemon_fd, line, h->fd); /* a failure shows as the daemon's hangup */
			}
		}
		return 1;
	}
}

static void drop_client(size_t i)
{
	if (clients[i] == daemon_fd) {
		daemon_fd = -1;
		rescue_in_flight();
	}
	close(clients[i]);
	clients[i] = clients[--nclients];
}

/* Returns -1 when the client is gone, 1 on QUIT. */
static int serve(int sock)
{
	char text[FDH_MAX_MSG + 1];
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = text, .iov_len = FDH_MAX_MSG };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	int fds[4];
	int nfds = take_fds(&msg, fds, 4);

	unsigned long long serial;
	int pid, off = 0;
	if (sscanf(text, "PUT %llu %d %n", &serial, &pid, &off) == 2 && off > 0 && nfds >= 1 &&
	    strlen(text + off) <= FDH_MAX_KEY && is_notify_fd(fds[0])) {
		put(serial, pid, text + off, fds[0]);
		for (int j = 1; j < nfds; j++)
			close(fds[j]);
		return 0;
	}
	for (int j = 0; j < nfds; j++)
		close(fds[j]);
	if (sscanf(text, "DROP %llu", &serial) == 1) {
		drop_serial(serial);
	} else if (!strcmp(text, "GET")) {
		char line[FDH_MAX_MSG];
		for (size_t i = 0; i < nheld; i++) {
			snprintf(line, sizeof(line), "FD %llu %d %s", held[i].serial, held[i].pid, held[i].key);
			if (send_fd_msg(sock, line, held[i].fd))
				return -1;
			/* A daemon of before these messages ignores them (no fd, not FD/END). */
			for (int k = 0; k < held[i].ndenied || (k == FDH_MAX_KINDS - 1 && held[i].denied[k].count);
			     k++) {
				struct deny_count *d = &held[i].denied[k];
				snprintf(line, sizeof(line), "DENIED %llu %u %d %llu", held[i].serial, d->arch, d->nr,
					 d->count);
				if (send_fd_msg(sock, line, -1))
					return -1;
			}
			held[i].ndenied = 0;
			held[i].denied[FDH_MAX_KINDS - 1].count = 0;
		}
		snprintf(line, sizeof(line), "END %zu %d", nheld, FDH_VERSION);
		if (send_fd_msg(sock, line, table_fd))
			return -1;
		if (daemon_fd >= 0 && daemon_fd != sock)
			rescue_in_flight(); /* a second daemon took over from a live first one */
		daemon_fd = sock;
		ever_taken_over = 1;
	} else if (!strcmp(text, "QUIT")) {
		return 1;
	}
	return 0;
}

static int run(int control, int agent)
{
	for (;;) {
		size_t base = 2 + nclients + nconns;
		size_t n = base + nheld;
		struct pollfd *p = calloc(n, sizeof(*p));
		if (!p)
			return 1;
		p[0].fd = control;
		p[0].events = POLLIN;
		p[1].fd = agent;
		p[1].events = POLLIN;
		for (size_t i = 0; i < nclients; i++) {
			p[2 + i].fd = clients[i];
			p[2 + i].events = POLLIN;
		}
		for (size_t i = 0; i < nconns; i++) {
			p[2 + nclients + i].fd = conns[i].fd;
			p[2 + nclients + i].events = POLLIN;
		}
		/* With a daemon, only POLLHUP (the container is gone); without, notifications too. */
		for (size_t i = 0; i < nheld; i++) {
			p[base + i].fd = held[i].fd;
			p[base + i].events = daemon_fd < 0 ? POLLIN : 0;
		}
		int r = poll(p, n, ever_taken_over ? -1 : STARTUP_GRACE_MS);
		if (r < 0 && errno != EINTR) {
			free(p);
			return 1;
		}
		if (r == 0) {
			free(p);
			return 0; /* no daemon ever came */
		}
		size_t nc = nclients, nk = nconns, nh = nheld;
		int quit = 0;
		/* Each group from the back, so that swap-removal keeps the earlier indexes valid. */
		for (size_t i = nh; i-- > 0;) {
			short re = p[base + i].revents;
			if (re & POLLIN)
				answer_unattended(&held[i]);
			else if (re & (POLLHUP | POLLERR | POLLNVAL))
				drop_at(i);
		}
		for (size_t i = nk; i-- > 0;)
			if (p[2 + nc + i].revents && read_conn(&conns[i]))
				close_conn(i);
		for (size_t i = nc; i-- > 0;) {
			if (!p[2 + i].revents)
				continue;
			int s = (p[2 + i].revents & POLLIN) ? serve(clients[i]) : -1;
			if (s == 1)
				quit = 1;
			if (s != 0)
				drop_client(i);
		}
		if (p[0].revents & POLLIN) {
			int c = accept4(control, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0) {
				if (nclients == MAX_CLIENTS) {
					close(c);
				} else {
					clients[nclients++] = c;
				}
			}
		}
		if (p[1].revents & POLLIN) {
			int c = accept4(agent, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (c >= 0) {
				if (nconns == MAX_CONNS)
					close(c); /* runc reports it; it retries with the next exec */
				else
					conns[nconns++] =
						(struct conn){ .fd = c, .buf = NULL, .len = 0, .notify_fd = -1 };
			}
		}
		free(p);
		if (quit) {
			while (nheld)
				drop_at(nheld - 1);
			return 0;
		}
		if (ever_taken_over && nclients == 0 && nheld == 0 && nconns == 0)
			return 0;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: cgfence-fd-holder CONTROL_SOCKET AGENT_SOCKET\n");
		return 2;
	}
	const char *control_path = argv[1], *agent_path = argv[2];
	struct sockaddr_un sa;
	if (addr_of(control_path, &sa) || strlen(agent_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "cgfence-fd-holder: %s: %s\n", control_path, strerror(ENAMETOOLONG));
		return 1;
	}
	int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(probe);
		return 0; /* one holder per socket: the running one keeps its fds */
	}
	if (probe >= 0)
		close(probe);
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes)) {
		fprintf(stderr, "cgfence-fd-holder: seccomp(SECCOMP_GET_NOTIF_SIZES): %s\n", strerror(errno));
		return 1;
	}

	int ready[2];
	if (pipe2(ready, O_CLOEXEC)) {
		fprintf(stderr, "cgfence-fd-holder: pipe: %s\n", strerror(errno));
		return 1;
	}
	pid_t child = fork();
	if (child < 0) {
		fprintf(stderr, "cgfence-fd-holder: fork: %s\n", strerror(errno));
		return 1;
	}
	if (child > 0) {
		close(ready[1]);
		char why[512];
		ssize_t n;
		do
			n = read(ready[0], why, sizeof(why) - 1);
		while (n < 0 && errno == EINTR);
		if (n == 1 && why[0] == 'R')
			return 0;
		why[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "cgfence-fd-holder: %s\n", n > 0 ? why : "exited before it listened");
		return 1;
	}

	/* The daemon's session and signals are not ours: a kill of its process group or a
	 * hangup of its terminal must not take the fds with it. */
	close(ready[0]);
	setsid();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	umask(077);
	if (chdir("/")) { /* nothing depends on the cwd */
	}

	char why[512];
	int control = listen_on(control_path, SOCK_SEQPACKET, why, sizeof(why));
	int agent = control < 0 ? -1 : listen_on(agent_path, SOCK_STREAM, why, sizeof(why));
	if (agent < 0) {
		if (write(ready[1], why, strlen(why)) < 0) { /* nothing more to say it with */
		}
		return 1;
	}
	table_fd = memfd_create("cgfence-notify-in-flight", MFD_CLOEXEC);
	if (table_fd >= 0 && ftruncate(table_fd, FDH_SLOTS * sizeof(struct fdh_slot)) == 0) {
		void *m = mmap(NULL, FDH_SLOTS * sizeof(struct fdh_slot), PROT_READ | PROT_WRITE, MAP_SHARED, table_fd,
			       0);
		if (m != MAP_FAILED)
			table = m;
	}
	int devnull = open("/dev/null", O_RDWR);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		if (devnull > 2)
			close(devnull);
	}
	if (write(ready[1], "R", 1) != 1) { /* the starter died; serve anyway */
	}
	close(ready[1]);
	int rc = run(control, agent);
	unlink(agent_path);
	unlink(control_path);
	close(agent);
	close(control);
	return rc;
}
