/* state.c: one user's sync state: open, lock and file ownership, commit.
 * The folders are state-folder.c's, the file format state-file.c's, the
 * dedupe index state-index.c's. */

#include "state-private.h"

#include "crash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Ceiling of the state file read at open. */
#define STATE_FILE_MAX (64 * 1024 * 1024)

/* Open states of this process: a second open of one user would share
 * the fcntl lock (locks belong to the process) and its close would drop
 * it. */
struct open_state {
	struct open_state *next;
	struct trib_state *state;
	dev_t dev;
	ino_t ino;
};
static struct open_state *open_states;
static char open_error[1024];

void trib_state_set_error(struct trib_state *state, const char *fmt, ...)
{
	va_list args;

	free(state->error);
	va_start(args, fmt);
	state->error = trib_strdup_vprintf(fmt, args);
	va_end(args);
}

static TRIB_ATTR_PRINTF(1, 2) void set_open_error(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(open_error, sizeof(open_error), fmt, args);
	va_end(args);
}

/* s cut to 64 bytes, anything but printable ASCII as '?', for errors. */
static const char *printable(const char *s, char buf[static 68])
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < 64; i++)
		buf[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
	if (s[i] != '\0') {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

bool trib_state_valid_user(const char *user)
{
	size_t len = strlen(user);

	if (len == 0 || len > 255 || user[0] == '.' || user[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = user[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr("._@+=-", c) != NULL))
			return false;
	}
	return true;
}

/* ---- open ---- */

/* Open (making it when missing) the directory name under dir_fd (AT_FDCWD
 * for a path), refusing a symbolic link. *created_r: it was made. */
static int open_dir(int dir_fd, const char *name, const char *path,
		    bool *created_r)
{
	int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	struct stat st;
	int fd;

	*created_r = false;
	fd = openat(dir_fd, name, flags);
	if (fd < 0 && errno == ENOENT) {
		if (mkdirat(dir_fd, name, 0700) == 0)
			*created_r = true;
		else if (errno != EEXIST) {
			set_open_error("state %s: cannot create: %s", path,
				       strerror(errno));
			return -1;
		}
		fd = openat(dir_fd, name, flags);
	}
	if (fd >= 0)
		return fd;
	if ((errno == ELOOP || errno == ENOTDIR) &&
	    fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode)) {
		set_open_error("state %s: is a symbolic link (refused: state "
			       "directories must be real directories; point "
			       "tributary_state_dir at the real path)",
			       path);
	} else {
		set_open_error("state %s: cannot open: %s", path,
			       strerror(errno));
	}
	return -1;
}

/* Set by the last trib_state_open() (trib_state_open_was_locked()). */
static bool open_was_locked;

/* ---- ownership ----
 *
 * The daemon runs as the state_dir's owner (the tributary user). When
 * root runs a command (`tributary sync -u alice` from an admin's shell),
 * whatever it makes under state_dir is given to that owner, and what an
 * earlier root run left owned by root is given back, so the daemon can
 * go on with the state afterwards. */

void trib_state_own_fd(const struct trib_state *state, int fd)
{
	struct stat st;

	if (!state->chown_files || fstat(fd, &st) < 0 ||
	    (st.st_uid == state->owner_uid && st.st_gid == state->owner_gid))
		return;
	if (fchown(fd, state->owner_uid, state->owner_gid) < 0) {
		/* best effort: the owner's next open reports it */
	}
}

/* Root-owned entries of dir_fd (an earlier root run) go to the owner. */
static void own_entries(const struct trib_state *state, int dir_fd)
{
	struct dirent *d;
	struct stat st;
	DIR *dir;
	int fd = dup(dir_fd);

	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return;
	}
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (fstatat(dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    st.st_uid != 0 || S_ISLNK(st.st_mode))
			continue;
		if (fchownat(dir_fd, d->d_name, state->owner_uid,
			     state->owner_gid, AT_SYMLINK_NOFOLLOW) < 0) {
			/* best effort, as above */
		}
	}
	closedir(dir);
}

static void own_state_dir(struct trib_state *state)
{
	if (!state->chown_files)
		return;
	trib_state_own_fd(state, state->dir_fd);
	own_entries(state, state->dir_fd);
	if (state->index_fd >= 0)
		own_entries(state, state->index_fd);
}

/* Who holds the lock, as "pid 4242 on host mx1". */
static void lock_holder(int fd, char *buf, size_t size)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char content[256], host[200] = "";
	long file_pid = 0, pid = 0;
	ssize_t ret;

	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
		pid = (long)fl.l_pid;
	ret = pread(fd, content, sizeof(content) - 1, 0);
	if (ret > 0) {
		content[ret] = '\0';
		if (sscanf(content, "%ld %199[^ \n]", &file_pid, host) < 1)
			file_pid = 0;
	}
	/* Over NFS, F_GETLK may not know the pid: the file says who. */
	if (pid <= 0)
		pid = file_pid;
	if (pid > 0 && pid == file_pid && host[0] != '\0')
		snprintf(buf, size, "pid %ld on host %s", pid, host);
	else if (pid > 0)
		snprintf(buf, size, "pid %ld", pid);
	else
		snprintf(buf, size, "another process");
}

static int state_lock(struct trib_state *state)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char holder[300], host[200], line[256];
	struct stat st;
	int len;

	for (struct open_state *o = open_states; o != NULL; o = o->next) {
		if (fstat(state->dir_fd, &st) == 0 && st.st_dev == o->dev &&
		    st.st_ino == o->ino) {
			set_open_error("state %s: already open in this process",
				       state->path);
			open_was_locked = true;
			return -1;
		}
	}
	state->lock_fd =
		openat(state->dir_fd, STATE_LOCK_FILE,
		       O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (state->lock_fd >= 0)
		trib_state_own_fd(state, state->lock_fd);
	if (state->lock_fd < 0) {
		set_open_error("state %s/%s: cannot open: %s%s", state->path,
			       STATE_LOCK_FILE, strerror(errno),
			       errno == ELOOP ? " (a symbolic link: refused)"
					      : "");
		return -1;
	}
	if (fcntl(state->lock_fd, F_SETLK, &fl) < 0) {
		if (errno != EACCES && errno != EAGAIN) {
			set_open_error("state %s/%s: cannot lock: %s",
				       state->path, STATE_LOCK_FILE,
				       strerror(errno));
			return -1;
		}
		lock_holder(state->lock_fd, holder, sizeof(holder));
		set_open_error("state %s/%s: locked by %s (another tributary "
			       "sync or run works for this user)",
			       state->path, STATE_LOCK_FILE, holder);
		open_was_locked = true;
		return -1;
	}
	/* Say who holds it, for the next one who finds it locked. */
	if (gethostname(host, sizeof(host)) < 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	len = snprintf(line, sizeof(line), "%ld %s\n", (long)getpid(),
		       host[0] != '\0' ? host : "-");
	if (ftruncate(state->lock_fd, 0) < 0 || len <= 0 ||
	    pwrite(state->lock_fd, line, (size_t)len, 0) != len) {
		/* Only informative (a full disk): the lock is what counts. */
	}
	return 0;
}

static int state_load(struct trib_state *state)
{
	struct stat st;
	char *data;
	size_t done = 0;
	int fd;

	fd = openat(state->dir_fd, STATE_FILE,
		    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0; /* a new user */
	if (fd < 0) {
		set_open_error("state %s/%s: cannot open: %s%s", state->path,
			       STATE_FILE, strerror(errno),
			       errno == ELOOP ? " (a symbolic link: refused)"
					      : "");
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > STATE_FILE_MAX) {
		set_open_error("state %s/%s: not a regular file of at most "
			       "%d bytes",
			       state->path, STATE_FILE, STATE_FILE_MAX);
		close(fd);
		return -1;
	}
	data = trib_malloc((size_t)st.st_size + 1);
	while (done < (size_t)st.st_size) {
		ssize_t ret = read(fd, data + done, (size_t)st.st_size - done);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			set_open_error("state %s/%s: read: %s", state->path,
				       STATE_FILE,
				       ret < 0 ? strerror(errno)
					       : "file shrank while read");
			free(data);
			close(fd);
			return -1;
		}
		done += (size_t)ret;
	}
	close(fd);
	data[done] = '\0';
	if (trib_state_file_parse(state, data, done) < 0) {
		set_open_error(
			"state %s/%s: %s; refusing to start from empty, which "
			"would deliver every message again: restore the file "
			"or move it away",
			state->path, STATE_FILE, state->error);
		free(data);
		return -1;
	}
	free(data);
	return 0;
}

static bool index_file_referenced(struct trib_state *state, uint32_t id)
{
	for (unsigned int i = 0; i < state->folder_count; i++) {
		if (state->folders[i]->index.file_id == id)
			return true;
	}
	return false;
}

/* Leftovers of commits that never finished: the temp state file, index
 * files no folder names (written, or compacted away, by a commit that
 * crashed around its rename). */
static void state_cleanup(struct trib_state *state)
{
	struct dirent *d;
	DIR *dir;
	int fd;

	(void)unlinkat(state->dir_fd, STATE_TEMP_FILE, 0);
	fd = dup(state->index_fd);
	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return;
	}
	while ((d = readdir(dir)) != NULL) {
		char *end;
		unsigned long id;

		if (d->d_name[0] < '1' || d->d_name[0] > '9')
			continue;
		id = strtoul(d->d_name, &end, 10);
		if (*end != '\0' || id > UINT32_MAX ||
		    index_file_referenced(state, (uint32_t)id))
			continue;
		(void)unlinkat(state->index_fd, d->d_name, 0);
	}
	closedir(dir);
}

static void state_free(struct trib_state *state)
{
	for (unsigned int i = 0; i < state->folder_count; i++) {
		struct trib_state_folder *f = state->folders[i];

		for (unsigned int j = 0; j < f->rejected_count; j++)
			free((char *)f->rejected[j].reason);
		free(f->rejected);
		free(f->done);
		trib_state_index_free(&f->index);
		free(f->account);
		free(f->name);
		free(f);
	}
	free(state->folders);
	if (state->index_fd >= 0)
		close(state->index_fd);
	if (state->lock_fd >= 0)
		close(state->lock_fd); /* drops the lock */
	if (state->dir_fd >= 0)
		close(state->dir_fd);
	free(state->user);
	free(state->path);
	free(state->index_path);
	free(state->error);
	free(state);
}

int trib_state_open(const char *state_dir, const char *user,
		    struct trib_state **state_r, const char **error_r)
{
	struct trib_state *state;
	struct open_state *o;
	struct stat st;
	char buf[68];
	bool created;
	int top_fd;

	*state_r = NULL;
	*error_r = open_error;
	open_was_locked = false;
	if (!trib_state_valid_user(user)) {
		set_open_error("state: user name '%s' is not a safe directory "
			       "name (letters, digits and ._@+=- only, not "
			       "starting with '.' or '-')",
			       printable(user, buf));
		return -1;
	}
	top_fd = open_dir(AT_FDCWD, state_dir, state_dir, &created);
	if (top_fd < 0)
		return -1;

	state = trib_calloc(1, sizeof(*state));
	if (geteuid() == 0 && fstat(top_fd, &st) == 0 && st.st_uid != 0) {
		state->chown_files = true;
		state->owner_uid = st.st_uid;
		state->owner_gid = st.st_gid;
	}
	state->dir_fd = state->index_fd = state->lock_fd = -1;
	state->next_index_id = 1;
	state->user = trib_strdup(user);
	state->path = trib_strdup_printf("%s/%s", state_dir, user);
	state->index_path =
		trib_strdup_printf("%s/%s", state->path, STATE_INDEX_DIR);
	state->dir_fd = open_dir(top_fd, user, state->path, &created);
	if (state->dir_fd >= 0 && created)
		(void)fsync(top_fd);
	close(top_fd);
	if (state->dir_fd < 0 || state_lock(state) < 0)
		goto fail;
	state->index_fd = open_dir(state->dir_fd, STATE_INDEX_DIR,
				   state->index_path, &created);
	if (state->index_fd < 0)
		goto fail;
	if (created)
		(void)fsync(state->dir_fd);
	own_state_dir(state);
	if (state_load(state) < 0)
		goto fail;
	state_cleanup(state);
	if (fstat(state->dir_fd, &st) < 0) {
		set_open_error("state %s: %s", state->path, strerror(errno));
		goto fail;
	}
	o = trib_calloc(1, sizeof(*o));
	o->state = state;
	o->dev = st.st_dev;
	o->ino = st.st_ino;
	o->next = open_states;
	open_states = o;
	*state_r = state;
	*error_r = NULL;
	return 0;
fail:
	state_free(state);
	return -1;
}

void trib_state_close(struct trib_state **_state)
{
	struct trib_state *state = *_state;

	if (state == NULL)
		return;
	for (struct open_state **o = &open_states; *o != NULL;
	     o = &(*o)->next) {
		if ((*o)->state == state) {
			struct open_state *dead = *o;

			*o = dead->next;
			free(dead);
			break;
		}
	}
	state_free(state);
	*_state = NULL;
}

bool trib_state_open_was_locked(void)
{
	return open_was_locked;
}

bool trib_state_is_dirty(const struct trib_state *state)
{
	return state->dirty;
}

const char *trib_state_user(const struct trib_state *state)
{
	return state->user;
}

const char *trib_state_path(const struct trib_state *state)
{
	return state->path;
}

/* ---- commit ---- */

static int write_temp(struct trib_state *state, const char *data, size_t size)
{
	const char *what = "create";
	size_t half = size / 2, done = 0;
	int fd;

	TRIB_CRASH_POINT("state-before-temp");
	fd = openat(state->dir_fd, STATE_TEMP_FILE,
		    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		goto fail;
	trib_state_own_fd(state, fd);
	what = "write";
	while (done < size) {
		size_t chunk = (done < half ? half : size) - done;
		ssize_t ret = write(fd, data + done, chunk);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			if (ret == 0)
				errno = EIO;
			goto fail;
		}
		done += (size_t)ret;
		if (done == half)
			TRIB_CRASH_POINT("state-temp-mid");
	}
	TRIB_CRASH_POINT("state-temp-before-fsync");
	what = "fsync";
	if (fsync(fd) < 0)
		goto fail;
	what = "close";
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	trib_state_set_error(state,
			     "state %s/%s: %s failed: %s (the previous state "
			     "is kept; the changes stay in memory)",
			     state->path, STATE_TEMP_FILE, what,
			     strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static void commit_abort(struct trib_state *state)
{
	(void)unlinkat(state->dir_fd, STATE_TEMP_FILE, 0);
	for (unsigned int i = 0; i < state->folder_count; i++)
		trib_state_index_abort(state, &state->folders[i]->index);
}

int trib_state_commit(struct trib_state *state, const char **error_r)
{
	uint32_t next_id = state->next_index_id;
	uint32_t *obsolete;
	bool created = false;
	int dir_errno = 0;
	char *data;
	size_t size;

	*error_r = NULL;
	if (!state->dirty)
		return 0;
	for (unsigned int i = 0; i < state->folder_count; i++) {
		if (trib_state_index_prepare(state, &state->folders[i]->index,
					     &next_id, &created) < 0)
			goto fail;
	}
	if (created && fsync(state->index_fd) < 0) {
		trib_state_set_error(state,
				     "state %s: fsync failed: %s (the previous "
				     "state is kept; the changes stay in "
				     "memory)",
				     state->index_path, strerror(errno));
		goto fail;
	}
	data = trib_state_file_serialize(state, next_id, &size);
	if (write_temp(state, data, size) < 0) {
		free(data);
		goto fail;
	}
	free(data);
	TRIB_CRASH_POINT("state-before-rename");
	if (renameat(state->dir_fd, STATE_TEMP_FILE, state->dir_fd,
		     STATE_FILE) < 0) {
		trib_state_set_error(state,
				     "state %s/%s: rename to %s failed: %s "
				     "(the previous state is kept; the changes "
				     "stay in memory)",
				     state->path, STATE_TEMP_FILE, STATE_FILE,
				     strerror(errno));
		goto fail;
	}
	/* The new state is in place: from here on, no undoing. */
	TRIB_CRASH_POINT("state-before-dir-fsync");
	if (fsync(state->dir_fd) < 0)
		dir_errno = errno;
	obsolete = trib_calloc(state->folder_count + 1, sizeof(*obsolete));
	for (unsigned int i = 0; i < state->folder_count; i++)
		obsolete[i] =
			trib_state_index_finish(&state->folders[i]->index);
	state->next_index_id = next_id;
	/* A state not known to be durable is written again next time. */
	state->dirty = dir_errno != 0;
	TRIB_CRASH_POINT("state-after-commit");
	for (unsigned int i = 0; i < state->folder_count; i++) {
		char name[16];

		if (obsolete[i] == 0)
			continue;
		snprintf(name, sizeof(name), "%u", obsolete[i]);
		(void)unlinkat(state->index_fd, name, 0);
	}
	free(obsolete);
	if (dir_errno != 0) {
		trib_state_set_error(
			state,
			"state %s: fsync failed: %s (the new state "
			"is written but may not be durable yet)",
			state->path, strerror(dir_errno));
		*error_r = state->error;
		return -1;
	}
	return 0;
fail:
	commit_abort(state);
	*error_r = state->error;
	return -1;
}
