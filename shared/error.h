#ifndef TRIB_ERROR_H
#define TRIB_ERROR_H

/* error.h: the few error classes that say what to do next.
 *
 * Functions that can fail return -1/0/1 (or a class) and hand back a
 * one-line error string through `const char **error_r`; the string names
 * the host or account and the cause, and is owned by the object that
 * failed (valid until its next call or its destruction). */

enum trib_error_class {
	TRIB_OK = 0,
	/* Retry later: network trouble, server 5xx, LMTP 4xx, timeout. */
	TRIB_ERR_TEMP,
	/* The peer asked us to slow down (THROTTLED, 429): back off longer. */
	TRIB_ERR_WAIT,
	/* Retrying will not help until a person acts: bad credentials,
	 * revoked token, certificate refused, message rejected. */
	TRIB_ERR_PERM,
	/* The operation was abandoned: connection closed, object destroyed. */
	TRIB_ERR_CANCELED,
};

/* "ok", "temporary", "wait", "permanent", "canceled" */
const char *trib_error_class_name(enum trib_error_class class);

#endif
