/* fileio.c: file helpers (see fileio.h). */

#include "fileio.h"

#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int trib_write_full(int fd, const void *data, size_t size)
{
	const char *p = data;

	while (size > 0) {
		ssize_t ret = write(fd, p, size);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			if (ret == 0)
				errno = EIO;
			return -1;
		}
		p += ret;
		size -= (size_t)ret;
	}
	return 0;
}

int trib_fsync_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, ret, saved;

	if (slash == NULL)
		dir = trib_strdup(".");
	else if (slash == path)
		dir = trib_strdup("/");
	else
		dir = trib_strndup(path, (size_t)(slash - path));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	saved = errno;
	free(dir);
	if (fd < 0) {
		errno = saved;
		return -1;
	}
	ret = fsync(fd);
	if (ret < 0 && errno == EINVAL)
		ret = 0;
	saved = errno;
	close(fd);
	errno = saved;
	return ret;
}

int trib_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
