#ifndef TRIB_LOG_H
#define TRIB_LOG_H

/* log.h: the library never prints. It reports through a trib_logger
 * that its host (the daemon, the CLI, a test, a Dovecot plugin) hands it.
 * A NULL logger drops everything. Messages never contain secrets: protocol
 * traces redact credentials before they reach here. */

#include "alloc.h"

enum trib_log_level {
	TRIB_LOG_DEBUG,
	TRIB_LOG_INFO,
	TRIB_LOG_WARNING,
	TRIB_LOG_ERROR,
};

struct trib_logger {
	/* message is one line without a trailing newline. */
	void (*log)(void *context, enum trib_log_level level,
		    const char *message);
	void *context;
	/* Messages below this level are not formatted at all. */
	enum trib_log_level min_level;
};

void trib_log(const struct trib_logger *logger, enum trib_log_level level,
	      const char *fmt, ...) TRIB_ATTR_PRINTF(3, 4);
void trib_logv(const struct trib_logger *logger, enum trib_log_level level,
	       const char *fmt, va_list args) TRIB_ATTR_PRINTF(3, 0);
const char *trib_log_level_name(enum trib_log_level level);

#endif
