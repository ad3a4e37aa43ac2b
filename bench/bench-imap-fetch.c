/* bench-imap-fetch: the raw IMAP limit of `make bench`.
 *
 * One TLS connection, AUTHENTICATE PLAIN, EXAMINE, one
 * `UID FETCH 1:* BODY.PEEK[]`, every literal read and thrown away, LOGOUT.
 * Blocking sockets, one 256 KiB read buffer, no parser beyond finding the
 * `{N}` at the end of a line: the least work a client can do to get every
 * byte of a folder over TLS. Written in C with OpenSSL so that the client
 * is not the bottleneck (a Python client would be).
 *
 *   bench-imap-fetch --host H --port P --ca-file CA --user U
 *                    --password-file F [--mailbox M]
 *
 * The certificate is verified against CA and the host name (or IP
 * address). Prints one JSON line: messages, bytes (literal bytes), seconds
 * of the FETCH. Exit 0, or 1 with a one-line error. */

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIMAP_READ_SIZE (256 * 1024)
#define BIMAP_LINE_MAX (64 * 1024)
#define BIMAP_LITERAL_MAX (1024ULL * 1024 * 1024)

struct bimap_conn {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	unsigned char buf[BIMAP_READ_SIZE];
	size_t pos, len;
	char line[BIMAP_LINE_MAX + 1];
	size_t line_len;
};

struct bimap_totals {
	unsigned long messages;
	unsigned long long bytes;
};

static void bimap_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void bimap_die(const char *fmt, ...)
{
	va_list args;
	unsigned long err = ERR_get_error();

	fputs("bench-imap-fetch: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	if (err != 0)
		fprintf(stderr, " (%s)", ERR_reason_error_string(err));
	fputc('\n', stderr);
	exit(1);
}

static double bimap_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int bimap_tcp_connect(const char *host, const char *port)
{
	struct addrinfo hints, *res, *ai;
	int fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		bimap_die("%s: %s", host, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		bimap_die("%s:%s: %s", host, port, strerror(errno));
	return fd;
}

static bool bimap_is_ip(const char *host)
{
	unsigned char addr[16];

	return inet_pton(AF_INET, host, addr) == 1 ||
	       inet_pton(AF_INET6, host, addr) == 1;
}

static void bimap_tls_start(struct bimap_conn *conn, const char *host,
			    const char *ca_file)
{
	X509_VERIFY_PARAM *param;

	conn->ctx = SSL_CTX_new(TLS_client_method());
	if (conn->ctx == NULL)
		bimap_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(conn->ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(conn->ctx, ca_file, NULL) != 1)
		bimap_die("cannot load the CA file %s", ca_file);
	SSL_CTX_set_verify(conn->ctx, SSL_VERIFY_PEER, NULL);
	conn->ssl = SSL_new(conn->ctx);
	if (conn->ssl == NULL)
		bimap_die("SSL_new failed");
	if (bimap_is_ip(host)) {
		param = SSL_get0_param(conn->ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
			bimap_die("bad IP address %s", host);
	} else {
		if (SSL_set1_host(conn->ssl, host) != 1 ||
		    SSL_set_tlsext_host_name(conn->ssl, host) != 1)
			bimap_die("cannot set the host name %s", host);
	}
	SSL_set_fd(conn->ssl, conn->fd);
	if (SSL_connect(conn->ssl) != 1)
		bimap_die("%s: TLS handshake failed: %s", host,
			  X509_verify_cert_error_string(
				  SSL_get_verify_result(conn->ssl)));
}

/* Refill the read buffer; dies on EOF or error. */
static void bimap_fill(struct bimap_conn *conn)
{
	int n = SSL_read(conn->ssl, conn->buf, sizeof(conn->buf));

	if (n <= 0)
		bimap_die("connection closed by the server (SSL error %d)",
			  SSL_get_error(conn->ssl, n));
	conn->pos = 0;
	conn->len = (size_t)n;
}

/* One line into conn->line, CRLF stripped. */
static const char *bimap_read_line(struct bimap_conn *conn)
{
	unsigned char *nl;
	size_t take;

	conn->line_len = 0;
	for (;;) {
		if (conn->pos == conn->len)
			bimap_fill(conn);
		nl = memchr(conn->buf + conn->pos, '\n', conn->len - conn->pos);
		take = (nl != NULL ? (size_t)(nl - conn->buf) + 1 : conn->len) -
		       conn->pos;
		if (conn->line_len + take > BIMAP_LINE_MAX)
			bimap_die("server line longer than %d bytes",
				  BIMAP_LINE_MAX);
		memcpy(conn->line + conn->line_len, conn->buf + conn->pos,
		       take);
		conn->line_len += take;
		conn->pos += take;
		if (nl != NULL)
			break;
	}
	while (conn->line_len > 0 && (conn->line[conn->line_len - 1] == '\n' ||
				      conn->line[conn->line_len - 1] == '\r'))
		conn->line_len--;
	conn->line[conn->line_len] = '\0';
	return conn->line;
}

static void bimap_skip(struct bimap_conn *conn, unsigned long long size)
{
	size_t take;

	while (size > 0) {
		if (conn->pos == conn->len)
			bimap_fill(conn);
		take = conn->len - conn->pos;
		if (take > size)
			take = (size_t)size;
		conn->pos += take;
		size -= take;
	}
}

static void bimap_write(struct bimap_conn *conn, const char *data)
{
	size_t len = strlen(data);

	if (SSL_write(conn->ssl, data, (int)len) != (int)len)
		bimap_die("write failed");
}

/* The `{N}` (or `{N+}`) a line ends with: 1 and its size, or 0. */
static int bimap_literal_size(const char *line, size_t len,
			      unsigned long long *size_r)
{
	const char *open;
	char *end;

	if (len < 3 || line[len - 1] != '}')
		return 0;
	open = line + len - 1;
	while (open > line && *open != '{')
		open--;
	if (*open != '{')
		return 0;
	errno = 0;
	*size_r = strtoull(open + 1, &end, 10);
	if (end == open + 1 || errno != 0 || (*end != '}' && *end != '+'))
		return 0;
	if (*size_r > BIMAP_LITERAL_MAX)
		bimap_die("literal of %llu bytes: over the limit", *size_r);
	return 1;
}

/* Read until the reply tagged `tag`; literals are counted and skipped.
 * Dies unless the reply is OK. */
static void bimap_wait(struct bimap_conn *conn, const char *tag,
		       struct bimap_totals *totals)
{
	size_t tag_len = strlen(tag);
	unsigned long long size;
	const char *line;

	for (;;) {
		line = bimap_read_line(conn);
		while (bimap_literal_size(line, conn->line_len, &size) == 1) {
			bimap_skip(conn, size);
			if (totals != NULL) {
				totals->messages++;
				totals->bytes += size;
			}
			line = bimap_read_line(conn);
		}
		if (strncmp(line, tag, tag_len) == 0 && line[tag_len] == ' ') {
			if (strncmp(line + tag_len + 1, "OK", 2) != 0)
				bimap_die("%s", line);
			return;
		}
	}
}

static char *bimap_read_password(const char *path)
{
	char buf[1024];
	FILE *f = fopen(path, "r");
	size_t len;

	if (f == NULL || fgets(buf, sizeof(buf), f) == NULL)
		bimap_die("cannot read the password from %s", path);
	fclose(f);
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	return strdup(buf);
}

static void bimap_authenticate(struct bimap_conn *conn, const char *user,
			       const char *password)
{
	size_t ulen = strlen(user), plen = strlen(password);
	size_t raw_len = ulen + plen + 2;
	unsigned char *raw = malloc(raw_len);
	char *b64 = malloc(4 * ((raw_len + 2) / 3) + 1);
	char *cmd;
	size_t cmd_len;

	if (raw == NULL || b64 == NULL)
		abort();
	raw[0] = '\0';
	memcpy(raw + 1, user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, password, plen);
	EVP_EncodeBlock((unsigned char *)b64, raw, (int)raw_len);
	cmd_len = strlen(b64) + 64;
	cmd = malloc(cmd_len);
	if (cmd == NULL)
		abort();
	snprintf(cmd, cmd_len, "a1 AUTHENTICATE PLAIN %s\r\n", b64);
	bimap_write(conn, cmd);
	OPENSSL_cleanse(raw, raw_len);
	OPENSSL_cleanse(b64, strlen(b64));
	OPENSSL_cleanse(cmd, cmd_len);
	free(raw);
	free(b64);
	free(cmd);
	bimap_wait(conn, "a1", NULL);
}

static void bimap_usage(void)
{
	fputs("usage: bench-imap-fetch --host H --port P --ca-file CA "
	      "--user U --password-file F [--mailbox M]\n",
	      stderr);
	exit(64);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "ca-file", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'u' },
		{ "password-file", required_argument, NULL, 'w' },
		{ "mailbox", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = NULL, *port = NULL, *ca_file = NULL, *user = NULL;
	const char *password_file = NULL, *mailbox = "INBOX";
	struct bimap_totals totals = { 0, 0 };
	struct bimap_conn *conn;
	char *password, cmd[1024];
	double t0, t1;
	int opt;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 'c':
			ca_file = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		case 'w':
			password_file = optarg;
			break;
		case 'm':
			mailbox = optarg;
			break;
		default:
			bimap_usage();
		}
	}
	if (host == NULL || port == NULL || ca_file == NULL || user == NULL ||
	    password_file == NULL || strpbrk(mailbox, "\"\\\r\n") != NULL)
		bimap_usage();
	password = bimap_read_password(password_file);

	conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		abort();
	conn->fd = bimap_tcp_connect(host, port);
	bimap_tls_start(conn, host, ca_file);
	if (strncmp(bimap_read_line(conn), "* OK", 4) != 0)
		bimap_die("bad greeting: %s", conn->line);
	bimap_authenticate(conn, user, password);
	OPENSSL_cleanse(password, strlen(password));
	free(password);

	snprintf(cmd, sizeof(cmd), "a2 EXAMINE \"%s\"\r\n", mailbox);
	bimap_write(conn, cmd);
	bimap_wait(conn, "a2", NULL);

	t0 = bimap_now();
	bimap_write(conn, "a3 UID FETCH 1:* BODY.PEEK[]\r\n");
	bimap_wait(conn, "a3", &totals);
	t1 = bimap_now();

	bimap_write(conn, "a4 LOGOUT\r\n");
	bimap_wait(conn, "a4", NULL);
	SSL_shutdown(conn->ssl);
	SSL_free(conn->ssl);
	SSL_CTX_free(conn->ctx);
	close(conn->fd);
	free(conn);

	printf("{\"messages\": %lu, \"bytes\": %llu, \"fetch_seconds\": "
	       "%.3f}\n",
	       totals.messages, totals.bytes, t1 - t0);
	return 0;
}
