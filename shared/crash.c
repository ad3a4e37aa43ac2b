/* crash.c: crash points selected by TRIBUTARY_CRASH_AT. */

#include "crash.h"

#ifdef TRIB_CRASH_POINTS

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRASH_ENV "TRIBUTARY_CRASH_AT"
#define CRASH_NAME_MAX 128

static struct {
	bool parsed;
	bool armed;
	char name[CRASH_NAME_MAX];
	unsigned long nth;  /* the Nth time the point is reached, from 1 */
	unsigned long seen; /* times reached so far */
} crash;

/* "name" or "name:N" with N >= 1; anything else arms nothing. */
static void crash_parse(void)
{
	const char *value = getenv(CRASH_ENV);
	const char *colon;
	size_t len;
	char *end;

	crash.parsed = true;
	if (value == NULL || *value == '\0')
		return;
	colon = strchr(value, ':');
	len = colon != NULL ? (size_t)(colon - value) : strlen(value);
	if (len == 0 || len >= sizeof(crash.name))
		return;
	crash.nth = 1;
	if (colon != NULL) {
		if (colon[1] < '1' || colon[1] > '9')
			return;
		crash.nth = strtoul(colon + 1, &end, 10);
		if (*end != '\0')
			return;
	}
	memcpy(crash.name, value, len);
	crash.name[len] = '\0';
	crash.armed = true;
}

void trib_crash_point(const char *name)
{
	if (!crash.parsed)
		crash_parse();
	if (!crash.armed || strcmp(name, crash.name) != 0)
		return;
	if (++crash.seen < crash.nth)
		return;
	kill(getpid(), SIGKILL);
	/* Not reached; should SIGKILL ever be refused, still die here. */
	_exit(137);
}

bool trib_crash_points_enabled(void)
{
	return true;
}

#else

bool trib_crash_points_enabled(void)
{
	return false;
}

#endif
