/* progress.c: the progress line of `tributary sync` (see progress.h). */

#include "progress.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_NS 100000000LL /* 0.1 s */

bool progress_bar_wanted(void)
{
	const char *term = getenv("TERM");

	return isatty(STDERR_FILENO) && term != NULL && term[0] != '\0' &&
	       strcmp(term, "dumb") != 0;
}

void progress_bar_init(struct progress_bar *bar, FILE *out, const char *user)
{
	memset(bar, 0, sizeof(*bar));
	bar->out = out;
	bar->user = user;
}

static int64_t elapsed_ns(const struct timespec *from,
			  const struct timespec *to)
{
	return (int64_t)(to->tv_sec - from->tv_sec) * 1000000000LL +
	       (to->tv_nsec - from->tv_nsec);
}

/* "12.3 MB" style, into buf */
static const char *size_str(uint64_t bytes, char *buf, size_t size)
{
	if (bytes < 1000ULL * 1000)
		snprintf(buf, size, "%.1f kB", bytes / 1000.0);
	else if (bytes < 1000ULL * 1000 * 1000)
		snprintf(buf, size, "%.1f MB", bytes / 1e6);
	else
		snprintf(buf, size, "%.2f GB", bytes / 1e9);
	return buf;
}

static const char *eta_str(double seconds, char *buf, size_t size)
{
	unsigned long s = seconds < 0 ? 0 : (unsigned long)(seconds + 0.5);

	if (s >= 3600)
		snprintf(buf, size, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, size, "%lu:%02lu", s / 60, s % 60);
	return buf;
}

static void wipe(struct progress_bar *bar)
{
	if (bar->drawn) {
		fputs("\r\033[K", bar->out);
		fflush(bar->out);
		bar->drawn = false;
	}
}

void progress_bar_update(const struct sync_progress *p, void *context)
{
	struct progress_bar *bar = context;
	char done[32], total[32], rate[32], eta[32];
	struct timespec now;
	double secs, bytes_per_sec;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (bar->folder != p->folder) {
		bar->folder = p->folder;
		bar->started = now;
		bar->last_draw.tv_sec = 0;
		bar->last_draw.tv_nsec = 0;
	}
	if (p->finished || p->total == 0) {
		wipe(bar);
		return;
	}
	if (bar->drawn &&
	    elapsed_ns(&bar->last_draw, &now) < PROGRESS_INTERVAL_NS)
		return;
	bar->last_draw = now;
	secs = elapsed_ns(&bar->started, &now) / 1e9;
	bytes_per_sec = secs > 0.2 ? p->bytes_streamed / secs : 0;
	fprintf(bar->out, "\r\033[K%s/%s %s: %u/%u messages, %s/%s", bar->user,
		p->account, p->folder, p->answered, p->total,
		size_str(p->bytes_streamed, done, sizeof(done)),
		size_str(p->bytes_total, total, sizeof(total)));
	if (bytes_per_sec > 0) {
		fprintf(bar->out, ", %s/s",
			size_str((uint64_t)bytes_per_sec, rate, sizeof(rate)));
		if (p->bytes_total > p->bytes_streamed)
			fprintf(bar->out, ", ETA %s",
				eta_str((p->bytes_total - p->bytes_streamed) /
						bytes_per_sec,
					eta, sizeof(eta)));
	}
	fflush(bar->out);
	bar->drawn = true;
}
