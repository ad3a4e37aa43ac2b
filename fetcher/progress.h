#ifndef PROGRESS_H
#define PROGRESS_H

/* progress.h: the one-line progress display of `tributary sync` on a
 * terminal: per folder, messages answered by LMTP out of the new ones,
 * bytes streamed out of their total, the rate and the time left:
 *
 *   alice/home INBOX: 123/1000 messages, 12.3/200.0 MB, 4.1 MB/s, ETA 0:46
 *
 * Drawn on stderr with a carriage return, at most ten times a second,
 * and wiped when the folder is done, so the summary lines stay as they
 * are without a terminal. Owns nothing but its label. */

#include "sync.h"

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

struct progress_bar {
	FILE *out;
	const char *user;
	bool drawn;
	struct timespec started, last_draw;
	const char *folder; /* the folder the clock runs for */
};

/* Whether stderr is a terminal worth drawing on (not TERM=dumb). */
bool progress_bar_wanted(void);
void progress_bar_init(struct progress_bar *bar, FILE *out, const char *user);
/* A sync_progress_callback_t; context is the bar. */
void progress_bar_update(const struct sync_progress *progress, void *context);

#endif
