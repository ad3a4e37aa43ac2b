/* error.c: error class names. */

#include "error.h"

const char *trib_error_class_name(enum trib_error_class class)
{
	switch (class) {
	case TRIB_OK:
		return "ok";
	case TRIB_ERR_TEMP:
		return "temporary";
	case TRIB_ERR_WAIT:
		return "wait";
	case TRIB_ERR_PERM:
		return "permanent";
	case TRIB_ERR_CANCELED:
		return "canceled";
	}
	return "unknown";
}
