#ifndef TRIB_CRASH_H
#define TRIB_CRASH_H

/* crash.h: crash points for crash tests.
 *
 * TRIB_CRASH_POINT("name") marks a place where a crash test may kill the
 * process. It compiles to nothing unless configure's --enable-crash-points
 * defined TRIB_CRASH_POINTS; then, when the environment variable
 * TRIBUTARY_CRASH_AT is "name" (the first time the point is reached) or
 * "name:N" (the Nth time), the process sends itself SIGKILL right there:
 * no atexit handlers, no stdio flush, nothing written after it, exactly
 * as `kill -9` would leave things. Tests choose their kill point this
 * way, never by timing.
 *
 * The names in use are listed in docs/crash-points.md. Names are
 * [a-z0-9-]; a point reached with another name does nothing. */

#include <stdbool.h>

#ifdef TRIB_CRASH_POINTS
void trib_crash_point(const char *name);
#define TRIB_CRASH_POINT(name) trib_crash_point(name)
#else
#define TRIB_CRASH_POINT(name) ((void)0)
#endif

/* Whether this build has crash points compiled in (for test drivers that
 * must skip without them). */
bool trib_crash_points_enabled(void);

#endif
