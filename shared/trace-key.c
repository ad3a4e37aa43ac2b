/* trace-key.c: the trace key set: the key file's syntax, loading it with
 * strict checks, generating one atomically, and the HMACs made with the
 * keys. The key bytes never leave this file, and are wiped when freed. */

#include "trace.h"

#include "alloc.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_HEX_LEN (2 * TRIB_TRACE_KEY_SIZE)
/* A key file is a few lines; anything this big is not one. */
#define KEY_FILE_MAX (64 * 1024)
#define KEY_ID_LABEL "tributary-trace-key-id"
#define KEY_FILE_COMMENT                                                       \
	"# Tributary trace keys (docs/trace-header.md): one key per line,\n"   \
	"# 64 hex digits. The first signs; the others are older keys, still\n" \
	"# accepted when verifying. Keep it root:tributary-trace 0640.\n"

struct trace_key {
	unsigned char bytes[TRIB_TRACE_KEY_SIZE];
	char id[TRIB_TRACE_KEY_ID_LEN + 1];
};

struct trib_trace_keys {
	unsigned int count;
	struct trace_key keys[TRIB_TRACE_KEYS_MAX];
};

static char key_error[512];

/* Format the error into key_error, on one line (a path may hold control
 * characters). */
static TRIB_ATTR_PRINTF(1, 2) const char *key_fail(const char *fmt, ...)
{
	va_list args;
	char *p;

	va_start(args, fmt);
	vsnprintf(key_error, sizeof(key_error), fmt, args);
	va_end(args);
	for (p = key_error; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return key_error;
}

static void hex_write(char *dest, const unsigned char *data, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < size; i++) {
		dest[2 * i] = digits[data[i] >> 4];
		dest[2 * i + 1] = digits[data[i] & 0x0f];
	}
}

static void key_mac(const struct trace_key *key, const void *data, size_t size,
		    unsigned char mac_r[TRIB_TRACE_MAC_SIZE])
{
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), key->bytes, (int)sizeof(key->bytes), data, size,
		 mac_r, &len) == NULL ||
	    len != TRIB_TRACE_MAC_SIZE)
		abort();
}

static void key_set_id(struct trace_key *key)
{
	unsigned char mac[TRIB_TRACE_MAC_SIZE];

	key_mac(key, KEY_ID_LABEL, strlen(KEY_ID_LABEL), mac);
	hex_write(key->id, mac, TRIB_TRACE_KEY_ID_LEN / 2);
	key->id[TRIB_TRACE_KEY_ID_LEN] = '\0';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* One line of a key file (without its LF). Returns 0 or -1 with the
 * error in key_error. */
static int keys_parse_line(struct trib_trace_keys *keys, const char *line,
			   size_t len, unsigned int line_num, const char *name)
{
	struct trace_key *key;
	unsigned int i;
	size_t pos;

	while (len > 0 && is_blank(line[len - 1]))
		len--;
	while (len > 0 && is_blank(line[0])) {
		line++;
		len--;
	}
	if (len == 0 || line[0] == '#')
		return 0;
	for (pos = 0; pos < len; pos++) {
		if (trib_hex_value(line[pos]) < 0) {
			key_fail("trace key %s: line %u: bad syntax "
				 "(a key is %d hex digits)",
				 name, line_num, KEY_HEX_LEN);
			return -1;
		}
	}
	if (len != KEY_HEX_LEN) {
		key_fail("trace key %s: line %u: wrong key length: "
			 "%zu hex digits, expected %d",
			 name, line_num, len, KEY_HEX_LEN);
		return -1;
	}
	if (keys->count == TRIB_TRACE_KEYS_MAX) {
		key_fail("trace key %s: line %u: more than %d keys", name,
			 line_num, TRIB_TRACE_KEYS_MAX);
		return -1;
	}
	key = &keys->keys[keys->count];
	for (pos = 0; pos < TRIB_TRACE_KEY_SIZE; pos++) {
		key->bytes[pos] =
			(unsigned char)(trib_hex_value(line[2 * pos]) << 4 |
					trib_hex_value(line[2 * pos + 1]));
	}
	key_set_id(key);
	for (i = 0; i < keys->count; i++) {
		if (strcmp(keys->keys[i].id, key->id) == 0) {
			OPENSSL_cleanse(key, sizeof(*key));
			key_fail("trace key %s: line %u: key id %s repeats "
				 "an earlier key",
				 name, line_num, keys->keys[i].id);
			return -1;
		}
	}
	keys->count++;
	return 0;
}

int trib_trace_keys_parse(const char *text, size_t size, const char *name,
			  struct trib_trace_keys **keys_r, const char **error_r)
{
	struct trib_trace_keys *keys = trib_calloc(1, sizeof(*keys));
	unsigned int line_num = 0;
	size_t pos = 0;

	*keys_r = NULL;
	while (pos < size) {
		const char *line = text + pos;
		const char *lf = memchr(line, '\n', size - pos);
		size_t len = lf != NULL ? (size_t)(lf - line) : size - pos;

		pos += len + (lf != NULL ? 1 : 0);
		if (keys_parse_line(keys, line, len, ++line_num, name) < 0) {
			trib_trace_keys_destroy(&keys);
			*error_r = key_error;
			return -1;
		}
	}
	if (keys->count == 0) {
		trib_trace_keys_destroy(&keys);
		*error_r = key_fail("trace key %s: no key in the file", name);
		return -1;
	}
	*keys_r = keys;
	return 0;
}

void trib_trace_keys_destroy(struct trib_trace_keys **keys)
{
	if (*keys == NULL)
		return;
	OPENSSL_cleanse(*keys, sizeof(**keys));
	free(*keys);
	*keys = NULL;
}

unsigned int trib_trace_keys_count(const struct trib_trace_keys *keys)
{
	return keys->count;
}

const char *trib_trace_keys_id(const struct trib_trace_keys *keys,
			       unsigned int idx)
{
	return idx < keys->count ? keys->keys[idx].id : NULL;
}

bool trib_trace_keys_mac(const struct trib_trace_keys *keys, const char *key_id,
			 const void *data, size_t size,
			 unsigned char mac_r[TRIB_TRACE_MAC_SIZE])
{
	unsigned int i;

	if (keys->count == 0)
		return false;
	if (key_id == NULL) {
		key_mac(&keys->keys[0], data, size, mac_r);
		return true;
	}
	for (i = 0; i < keys->count; i++) {
		if (strcmp(keys->keys[i].id, key_id) == 0) {
			key_mac(&keys->keys[i], data, size, mac_r);
			return true;
		}
	}
	return false;
}

/* ---- loading ---- */

static const char *open_error(const char *path, int err)
{
	if (err == ENOENT)
		return key_fail("trace key %s: missing (`tributary init` "
				"creates it)",
				path);
	if (err == EACCES)
		return key_fail("trace key %s: cannot open: %s (the process "
				"needs the tributary-trace group, see "
				"mail_access_groups)",
				path, strerror(err));
	return key_fail("trace key %s: cannot open: %s", path, strerror(err));
}

static const char *mode_error(const char *path, mode_t mode)
{
	unsigned int perm = (unsigned int)(mode & 07777);

	if ((mode & S_IROTH) != 0)
		return key_fail("trace key %s: mode %04o is readable by "
				"everyone",
				path, perm);
	if ((mode & S_IWOTH) != 0)
		return key_fail("trace key %s: mode %04o is writable by "
				"everyone",
				path, perm);
	return key_fail("trace key %s: mode %04o gives everyone access", path,
			perm);
}

/* Read all of fd into buf (KEY_FILE_MAX + 1 bytes). Returns the size, or
 * -1 with the error set. */
static ssize_t read_key_file(int fd, const char *path, char *buf)
{
	size_t size = 0;
	ssize_t ret;

	for (;;) {
		ret = read(fd, buf + size, KEY_FILE_MAX + 1 - size);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			key_fail("trace key %s: read failed: %s", path,
				 strerror(errno));
			return -1;
		}
		if (ret == 0)
			return (ssize_t)size;
		size += (size_t)ret;
		if (size > KEY_FILE_MAX) {
			key_fail("trace key %s: too large for a key file "
				 "(over %d bytes)",
				 path, KEY_FILE_MAX);
			return -1;
		}
	}
}

int trib_trace_keys_load(const char *path, struct trib_trace_keys **keys_r,
			 const char **error_r)
{
	struct stat st;
	char *buf;
	ssize_t size;
	int fd, ret;

	*keys_r = NULL;
	/* O_NONBLOCK: a FIFO put in the key's place must not hang us. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		*error_r = open_error(path, errno);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = key_fail("trace key %s: fstat failed: %s", path,
				    strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = key_fail("trace key %s: not a regular file", path);
		close(fd);
		return -1;
	}
	if ((st.st_mode & (S_IROTH | S_IWOTH | S_IXOTH)) != 0) {
		*error_r = mode_error(path, st.st_mode);
		close(fd);
		return -1;
	}
	buf = trib_malloc(KEY_FILE_MAX + 1);
	size = read_key_file(fd, path, buf);
	close(fd);
	if (size < 0) {
		ret = -1;
		*error_r = key_error;
	} else {
		ret = trib_trace_keys_parse(buf, (size_t)size, path, keys_r,
					    error_r);
	}
	OPENSSL_cleanse(buf, KEY_FILE_MAX + 1);
	free(buf);
	return ret;
}

/* ---- generating ---- */

/* The file's text: the comment, then one hex line per key. Wipe it. */
static size_t key_file_text(char *text, size_t size,
			    const unsigned char *new_key,
			    const struct trib_trace_keys *keep)
{
	size_t len = strlen(KEY_FILE_COMMENT);
	unsigned int i, count = keep == NULL ? 0 : keep->count;

	if (count > TRIB_TRACE_KEYS_MAX - 1)
		count = TRIB_TRACE_KEYS_MAX - 1;
	if (len + (count + 1) * (KEY_HEX_LEN + 1) > size)
		abort();
	memcpy(text, KEY_FILE_COMMENT, len);
	for (i = 0; i <= count; i++) {
		hex_write(text + len,
			  i == 0 ? new_key : keep->keys[i - 1].bytes,
			  TRIB_TRACE_KEY_SIZE);
		len += KEY_HEX_LEN;
		text[len++] = '\n';
	}
	return len;
}

/* Write text to a new temporary file beside path; returns its name. */
static char *write_temp(const char *path, const char *text, size_t len,
			gid_t gid)
{
	char *tmp = trib_strdup_printf("%s.tmp-XXXXXX", path);
	int fd = mkstemp(tmp);

	if (fd >= 0)
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (fd < 0) {
		key_fail("trace key %s: cannot create a file beside it: %s",
			 path, strerror(errno));
		free(tmp);
		return NULL;
	}
	if (fchmod(fd, 0640) < 0 ||
	    (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0)) {
		key_fail("trace key %s: cannot set mode 0640 / group %ld: %s",
			 path, (long)gid, strerror(errno));
	} else if (trib_write_full(fd, text, len) < 0 || fsync(fd) < 0) {
		key_fail("trace key %s: write failed: %s", path,
			 strerror(errno));
	} else if (close(fd) < 0) {
		fd = -1;
		key_fail("trace key %s: write failed: %s", path,
			 strerror(errno));
	} else {
		return tmp;
	}
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return NULL;
}

/* Move tmp to path: without overwriting (link) or replacing (rename). */
static int install_temp(const char *tmp, const char *path, bool replace)
{
	int ret;

	if (replace) {
		if (rename(tmp, path) == 0)
			return 0;
		key_fail("trace key %s: rename failed: %s", path,
			 strerror(errno));
		unlink(tmp);
		return -1;
	}
	ret = link(tmp, path);
	if (ret < 0 && errno == EEXIST) {
		key_fail("trace key %s: already exists (not overwritten)",
			 path);
	} else if (ret < 0) {
		key_fail("trace key %s: link failed: %s", path,
			 strerror(errno));
	}
	unlink(tmp);
	return ret < 0 ? -1 : 0;
}

int trib_trace_key_generate(const char *path,
			    const struct trib_trace_keys *keep, gid_t gid,
			    const char **error_r)
{
	unsigned char key[TRIB_TRACE_KEY_SIZE];
	char text[sizeof(KEY_FILE_COMMENT) +
		  TRIB_TRACE_KEYS_MAX * (KEY_HEX_LEN + 1)];
	size_t len;
	char *tmp;
	int ret;

	if (RAND_bytes(key, sizeof(key)) != 1) {
		*error_r = key_fail("trace key %s: no random bytes "
				    "(RAND_bytes failed)",
				    path);
		return -1;
	}
	len = key_file_text(text, sizeof(text), key, keep);
	OPENSSL_cleanse(key, sizeof(key));
	tmp = write_temp(path, text, len, gid);
	OPENSSL_cleanse(text, sizeof(text));
	if (tmp == NULL) {
		*error_r = key_error;
		return -1;
	}
	ret = install_temp(tmp, path, keep != NULL);
	free(tmp);
	if (ret == 0 && trib_fsync_dir_of(path) < 0) {
		key_fail("trace key %s: fsync of its directory failed: %s",
			 path, strerror(errno));
		ret = -1;
	}
	if (ret < 0)
		*error_r = key_error;
	return ret;
}
