#ifndef TRIB_FILEIO_H
#define TRIB_FILEIO_H

/* fileio.h: the small file helpers the modules that write files
 * atomically share (state, vault, trace key, delivered record). Pure
 * libc; part of the plugins' slice too. */

#include <stddef.h>

/* write() all of data, going on after EINTR and short writes. 0, or -1
 * with errno (EIO when write() returned 0). */
int trib_write_full(int fd, const void *data, size_t size);

/* fsync() the directory holding path (so a new name in it is durable).
 * A file system that cannot fsync a directory (EINVAL) counts as done.
 * 0, or -1 with errno. */
int trib_fsync_dir_of(const char *path);

/* The value of a hex digit (either case), or -1. */
int trib_hex_value(char c);

#endif
