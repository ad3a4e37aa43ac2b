/* log.c: format and hand messages to the host's logger. */

#include "log.h"

#include <stdlib.h>

void trib_logv(const struct trib_logger *logger, enum trib_log_level level,
	       const char *fmt, va_list args)
{
	char *message;

	if (logger == NULL || logger->log == NULL || level < logger->min_level)
		return;
	message = trib_strdup_vprintf(fmt, args);
	logger->log(logger->context, level, message);
	free(message);
}

void trib_log(const struct trib_logger *logger, enum trib_log_level level,
	      const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	trib_logv(logger, level, fmt, args);
	va_end(args);
}

const char *trib_log_level_name(enum trib_log_level level)
{
	switch (level) {
	case TRIB_LOG_DEBUG:
		return "debug";
	case TRIB_LOG_INFO:
		return "info";
	case TRIB_LOG_WARNING:
		return "warning";
	case TRIB_LOG_ERROR:
		return "error";
	}
	return "unknown";
}
