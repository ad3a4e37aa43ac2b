/* bench-lmtp-deliver: the raw LMTP limit of `make bench`.
 *
 * Delivers the message files named in a list (one path a line: the
 * remote Dovecot's maildir files of the benchmark folder, so the same
 * bytes the fetchers get) to one recipient over LMTP, pipelined: per
 * message `MAIL FROM:<>`, `RCPT TO:<rcpt>`, `BDAT n LAST` and the message
 * (LF line ends turned into CRLF, as IMAP would have sent them), up to
 * --window messages in flight before the oldest one's replies are read.
 * With --sessions N, N processes each deliver every Nth message over their
 * own LMTP session, side by side.
 *
 *   bench-lmtp-deliver (--socket PATH | --host H --port P) --rcpt R
 *                      --list FILE [--sessions N] [--window W]
 *
 * Needs the server's CHUNKING (Dovecot's LMTP has it). Blocking I/O is
 * safe: the replies a window can produce fit in the socket buffers.
 * Prints one JSON line (messages, bytes, seconds); exit 0 when every
 * message got 250, 1 otherwise. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLMTP_READ_SIZE (64 * 1024)
#define BLMTP_LINE_MAX 4096
#define BLMTP_MESSAGE_MAX (256 * 1024 * 1024)
#define BLMTP_WINDOW_MAX 1024

struct blmtp_settings {
	const char *socket_path, *host, *port, *rcpt, *list;
	unsigned int sessions, window;
};

struct blmtp_conn {
	int fd;
	char buf[BLMTP_READ_SIZE];
	size_t pos, len;
	char line[BLMTP_LINE_MAX + 1];
	/* one message, CRLF line ends, behind its command lines */
	char *out;
	size_t out_size;
};

static void blmtp_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void blmtp_die(const char *fmt, ...)
{
	va_list args;

	fputs("bench-lmtp-deliver: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	exit(1);
}

static double blmtp_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int blmtp_connect(const struct blmtp_settings *set)
{
	union {
		struct sockaddr sa;
		struct sockaddr_un un;
	} addr;
	struct addrinfo hints, *res, *ai;
	int fd = -1, rc;

	if (set->socket_path != NULL) {
		memset(&addr, 0, sizeof(addr));
		addr.un.sun_family = AF_UNIX;
		if (strlen(set->socket_path) >= sizeof(addr.un.sun_path))
			blmtp_die("socket path too long");
		memcpy(addr.un.sun_path, set->socket_path,
		       strlen(set->socket_path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, &addr.sa, sizeof(addr.un)) < 0)
			blmtp_die("%s: %s", set->socket_path, strerror(errno));
		return fd;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(set->host, set->port, &hints, &res);
	if (rc != 0)
		blmtp_die("%s: %s", set->host, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		blmtp_die("%s:%s: %s", set->host, set->port, strerror(errno));
	return fd;
}

static const char *blmtp_read_line(struct blmtp_conn *conn)
{
	size_t n = 0;
	ssize_t got;
	char c;

	for (;;) {
		if (conn->pos == conn->len) {
			got = read(conn->fd, conn->buf, sizeof(conn->buf));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				blmtp_die("LMTP connection closed");
			conn->pos = 0;
			conn->len = (size_t)got;
		}
		c = conn->buf[conn->pos++];
		if (c == '\n')
			break;
		if (n == BLMTP_LINE_MAX)
			blmtp_die("LMTP line too long");
		conn->line[n++] = c;
	}
	if (n > 0 && conn->line[n - 1] == '\r')
		n--;
	conn->line[n] = '\0';
	return conn->line;
}

/* One reply (multi-line ones too); its code. */
static int blmtp_read_reply(struct blmtp_conn *conn, bool *chunking_r)
{
	const char *line;

	for (;;) {
		line = blmtp_read_line(conn);
		if (strlen(line) < 3)
			blmtp_die("bad LMTP reply: %s", line);
		if (chunking_r != NULL && strncmp(line + 4, "CHUNKING", 8) == 0)
			*chunking_r = true;
		if (line[3] != '-')
			return atoi(line);
	}
}

static void blmtp_write(int fd, const char *data, size_t size)
{
	ssize_t n;

	while (size > 0) {
		n = write(fd, data, size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			blmtp_die("LMTP write failed: %s", strerror(errno));
		data += n;
		size -= (size_t)n;
	}
}

/* Read a message file, LF -> CRLF, behind the three command lines;
 * returns the body size (the BDAT size). */
static size_t blmtp_send_message(struct blmtp_conn *conn, const char *rcpt,
				 const char *path)
{
	char head[512], *raw, *p;
	size_t body = 0, head_len, raw_len, i;
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		blmtp_die("%s: %s", path, strerror(errno));
	if (st.st_size > BLMTP_MESSAGE_MAX)
		blmtp_die("%s: over %d bytes", path, BLMTP_MESSAGE_MAX);
	raw_len = (size_t)st.st_size;
	raw = malloc(raw_len + 1);
	if (raw == NULL)
		abort();
	for (i = 0; i < raw_len;) {
		ssize_t n = read(fd, raw + i, raw_len - i);
		if (n <= 0)
			blmtp_die("%s: short read", path);
		i += (size_t)n;
	}
	close(fd);
	for (i = 0; i < raw_len; i++)
		body += raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r') ? 2
									 : 1;
	head_len = (size_t)snprintf(head, sizeof(head),
				    "MAIL FROM:<>\r\nRCPT TO:<%s>\r\n"
				    "BDAT %zu LAST\r\n",
				    rcpt, body);
	if (head_len >= sizeof(head))
		blmtp_die("recipient too long");
	if (conn->out_size < head_len + body) {
		free(conn->out);
		conn->out_size = head_len + body;
		conn->out = malloc(conn->out_size);
		if (conn->out == NULL)
			abort();
	}
	memcpy(conn->out, head, head_len);
	p = conn->out + head_len;
	for (i = 0; i < raw_len; i++) {
		if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
			*p++ = '\r';
		*p++ = raw[i];
	}
	free(raw);
	blmtp_write(conn->fd, conn->out, head_len + body);
	return body;
}

/* MAIL, RCPT and BDAT LAST replies of one message: 0 when all are 2xx. */
static int blmtp_read_message_replies(struct blmtp_conn *conn)
{
	int failed = 0;

	for (int i = 0; i < 3; i++) {
		int code = blmtp_read_reply(conn, NULL);
		if (code < 200 || code > 299) {
			fprintf(stderr, "bench-lmtp-deliver: %s\n", conn->line);
			failed = 1;
		}
	}
	return failed;
}

static char **blmtp_read_list(const char *path, unsigned int *count_r)
{
	FILE *f = fopen(path, "r");
	char **paths = NULL, line[4096];
	unsigned int count = 0, alloc = 0;

	if (f == NULL)
		blmtp_die("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '\0')
			continue;
		if (count == alloc) {
			alloc = alloc == 0 ? 1024 : alloc * 2;
			paths = realloc(paths, alloc * sizeof(*paths));
			if (paths == NULL)
				abort();
		}
		paths[count] = strdup(line);
		if (paths[count] == NULL)
			abort();
		count++;
	}
	fclose(f);
	*count_r = count;
	return paths;
}

/* One LMTP session delivering paths[first], paths[first + step], ...
 * Returns the number of messages that failed; adds the bytes sent. */
static unsigned int blmtp_session(const struct blmtp_settings *set,
				  char **paths, unsigned int count,
				  unsigned int first, unsigned int step,
				  unsigned long long *bytes_r)
{
	struct blmtp_conn *conn = calloc(1, sizeof(*conn));
	unsigned int next = first, inflight = 0, failed = 0;
	bool chunking = false;

	if (conn == NULL)
		abort();
	conn->fd = blmtp_connect(set);
	if (blmtp_read_reply(conn, NULL) != 220)
		blmtp_die("LMTP greeting: %s", conn->line);
	blmtp_write(conn->fd, "LHLO bench\r\n", 12);
	if (blmtp_read_reply(conn, &chunking) != 250)
		blmtp_die("LHLO: %s", conn->line);
	if (!chunking)
		blmtp_die("the LMTP server offers no CHUNKING");
	while (next < count || inflight > 0) {
		if (next < count && inflight < set->window) {
			*bytes_r += blmtp_send_message(conn, set->rcpt,
						       paths[next]);
			next += step;
			inflight++;
			continue;
		}
		failed += (unsigned int)blmtp_read_message_replies(conn);
		inflight--;
	}
	blmtp_write(conn->fd, "QUIT\r\n", 6);
	(void)blmtp_read_reply(conn, NULL);
	close(conn->fd);
	free(conn->out);
	free(conn);
	return failed;
}

static void blmtp_usage(void)
{
	fputs("usage: bench-lmtp-deliver (--socket PATH | --host H --port P) "
	      "--rcpt R --list FILE [--sessions N] [--window W]\n",
	      stderr);
	exit(64);
}

static void blmtp_parse_args(int argc, char **argv, struct blmtp_settings *set)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "rcpt", required_argument, NULL, 'r' },
		{ "list", required_argument, NULL, 'l' },
		{ "sessions", required_argument, NULL, 'n' },
		{ "window", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	memset(set, 0, sizeof(*set));
	set->sessions = 1;
	set->window = 32;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			set->socket_path = optarg;
			break;
		case 'h':
			set->host = optarg;
			break;
		case 'p':
			set->port = optarg;
			break;
		case 'r':
			set->rcpt = optarg;
			break;
		case 'l':
			set->list = optarg;
			break;
		case 'n':
			set->sessions = (unsigned int)atoi(optarg);
			break;
		case 'w':
			set->window = (unsigned int)atoi(optarg);
			break;
		default:
			blmtp_usage();
		}
	}
	if ((set->socket_path == NULL &&
	     (set->host == NULL || set->port == NULL)) ||
	    set->rcpt == NULL || set->list == NULL || set->sessions == 0 ||
	    set->sessions > 64 || set->window == 0 ||
	    set->window > BLMTP_WINDOW_MAX ||
	    strpbrk(set->rcpt, "<>\r\n") != NULL)
		blmtp_usage();
}

int main(int argc, char **argv)
{
	struct blmtp_settings set;
	unsigned long long bytes = 0;
	unsigned int count, failed = 0;
	char **paths;
	double t0, t1;
	int status, pipes[64][2];
	pid_t pids[64];

	blmtp_parse_args(argc, argv, &set);
	paths = blmtp_read_list(set.list, &count);
	t0 = blmtp_now();
	if (set.sessions == 1) {
		failed = blmtp_session(&set, paths, count, 0, 1, &bytes);
	} else {
		/* one child per session; each writes "failed bytes" back */
		for (unsigned int i = 0; i < set.sessions; i++) {
			if (pipe(pipes[i]) < 0)
				blmtp_die("pipe: %s", strerror(errno));
			pids[i] = fork();
			if (pids[i] < 0)
				blmtp_die("fork: %s", strerror(errno));
			if (pids[i] == 0) {
				unsigned long long b = 0;
				unsigned int f;
				char msg[64];
				int len;

				close(pipes[i][0]);
				f = blmtp_session(&set, paths, count, i,
						  set.sessions, &b);
				len = snprintf(msg, sizeof(msg), "%u %llu\n", f,
					       b);
				blmtp_write(pipes[i][1], msg, (size_t)len);
				_exit(0);
			}
			close(pipes[i][1]);
		}
		for (unsigned int i = 0; i < set.sessions; i++) {
			char msg[64] = "";
			unsigned long long b = 0;
			unsigned int f = 0;
			ssize_t n = read(pipes[i][0], msg, sizeof(msg) - 1);

			if (waitpid(pids[i], &status, 0) < 0 ||
			    !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
			    n <= 0 || sscanf(msg, "%u %llu", &f, &b) != 2)
				blmtp_die("session %u failed", i);
			close(pipes[i][0]);
			failed += f;
			bytes += b;
		}
	}
	t1 = blmtp_now();
	for (unsigned int i = 0; i < count; i++)
		free(paths[i]);
	free(paths);
	printf("{\"messages\": %u, \"failed\": %u, \"bytes\": %llu, "
	       "\"seconds\": %.3f, \"sessions\": %u}\n",
	       count, failed, bytes, t1 - t0, set.sessions);
	return failed == 0 ? 0 : 1;
}
