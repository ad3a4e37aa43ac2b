/* state-crash-driver.c: drives the state module through a fixed series of
 * batches for test-state-crash.sh, which kills it inside commits through
 * crash points (TRIBUTARY_CRASH_AT) and fills its disk.
 *
 * The state after batch B is a pure function of B, so whatever is on disk
 * can be named: "check" prints the B it holds, or fails when it matches
 * none (a torn, mixed or lost state).
 *
 *   state-crash-driver has-crash-points     exit 0 with them, 77 without
 *   state-crash-driver apply DIR B          the state must be B-1; apply
 *                                           batch B and commit it
 *   state-crash-driver apply-retry DIR B FILE
 *                                           the same, but when the commit
 *                                           fails: delete FILE, commit
 *                                           again (it must succeed)
 *   state-crash-driver check DIR            print the B the state is
 *
 * Exit: 0 done, 1 a wrong state or usage, 3 the commit failed (the error
 * on stderr). The user is "crash"; expected states are built in memory
 * in a scratch dir under TMPDIR. */

#include "alloc.h"
#include "crash.h"
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define USER "crash"
#define BATCHES 6
#define MAX_UID 1000
#define INBOX_MESSAGES 140
#define GMAIL_MESSAGES 40

static TRIB_ATTR_NORETURN void die(const char *what, const char *error)
{
	fprintf(stderr, "state-crash-driver: %s: %s\n", what, error);
	exit(1);
}

static void inbox_key(uint32_t m, struct trib_state_key *key_r)
{
	char msgid[64];

	snprintf(msgid, sizeof(msgid), "<%u@inbox.example>", m);
	trib_state_key_message(msgid, 1000 + m, 1600000000 + m, key_r);
}

static void inbox_delivered(struct trib_state_folder *f, uint32_t uid,
			    uint32_t m)
{
	struct trib_state_key key;

	inbox_key(m, &key);
	trib_state_folder_delivered(f, uid, &key);
}

static void gmail_delivered(struct trib_state_folder *f, uint32_t g)
{
	struct trib_state_key key;

	trib_state_key_gmail(900000 + g, &key);
	trib_state_folder_delivered(f, g, &key);
}

static void apply_batch(struct trib_state *st, unsigned int b)
{
	struct trib_state_folder *inbox, *archive, *gmail = NULL;
	struct trib_state_key key;
	const char *error;
	uint32_t uv, uid;

	inbox = trib_state_folder_get(st, "work", "INBOX");
	archive = trib_state_folder_get(st, "work", "Archive");
	if (b >= 2)
		gmail = trib_state_folder_get(st, "gmail", "[Gmail]/All Mail");
	switch (b) {
	case 1:
		trib_state_folder_set_uidvalidity(inbox, 1000);
		trib_state_folder_set_uidvalidity(archive, 77);
		/* Out of order, as parallel LMTP sessions finish; 30 waits
		 * for the next batch, 7 is refused. */
		for (uint32_t i = 0; i < 40; i++) {
			uint32_t m = i * 17 % 40 + 1;

			if (m == 7)
				trib_state_folder_rejected(inbox, 7, 100,
							   "550 5.7.1 refused");
			else if (m != 30)
				inbox_delivered(inbox, m, m);
		}
		for (uint32_t u = 1; u <= 10; u++)
			trib_state_folder_delivered(archive, u, NULL);
		trib_state_folder_set_highestmodseq(inbox, 1000);
		trib_state_folder_set_uidnext(inbox, 41);
		break;
	case 2:
		inbox_delivered(inbox, 30, 30);
		for (uint32_t i = 0; i < 40; i++) {
			uint32_t m = 41 + i * 13 % 40;

			if (m != 70)
				inbox_delivered(inbox, m, m);
		}
		trib_state_folder_set_uidvalidity(gmail, 5);
		for (uint32_t g = 1; g <= 20; g++)
			gmail_delivered(gmail, g);
		trib_state_folder_skipped(archive, 11, 20);
		trib_state_folder_set_highestmodseq(inbox, 2000);
		trib_state_folder_set_uidnext(inbox, 81);
		break;
	case 3:
		inbox_delivered(inbox, 70, 70);
		for (uint32_t i = 0; i < 40; i++) {
			uint32_t m = 81 + i * 7 % 40;

			if (m == 100)
				trib_state_folder_rejected(inbox, 100, 300,
							   "554 5.6.0 bad");
			else
				inbox_delivered(inbox, m, m);
		}
		trib_state_folder_set_highestmodseq(inbox, 3000);
		trib_state_folder_set_uidnext(inbox, 121);
		break;
	case 4:
		/* The server renumbered: message m is UID 500 + m now. */
		trib_state_folder_set_uidvalidity(inbox, 2000);
		for (uint32_t m = 1; m <= 120; m++) {
			int ret;

			inbox_key(m, &key);
			ret = trib_state_folder_lookup(inbox, &key, &uv, &uid,
						       &error);
			if (ret < 0)
				die("lookup", error);
			if (ret > 0 && uv == 1000 && uid == m)
				trib_state_folder_delivered(inbox, 500 + m,
							    &key);
			else
				trib_state_folder_rejected(inbox, 500 + m, 400,
							   "550 again");
		}
		trib_state_folder_skipped(inbox, 1, 500);
		trib_state_folder_compact(inbox);
		trib_state_folder_set_highestmodseq(inbox, 4000);
		trib_state_folder_set_uidnext(inbox, 621);
		break;
	case 5:
		for (uint32_t m = 140; m > 120; m--)
			inbox_delivered(inbox, 500 + m, m);
		for (uint32_t g = 21; g <= 40; g++)
			gmail_delivered(gmail, g);
		trib_state_folder_set_highestmodseq(inbox, 5000);
		trib_state_folder_set_uidnext(inbox, 641);
		break;
	case 6:
		/* Nothing for the index: only the state file changes. */
		trib_state_folder_set_highestmodseq(inbox, 6000);
		trib_state_folder_set_uidnext(inbox, 642);
		trib_state_folder_set_uidnext(archive, 21);
		break;
	}
}

/* Everything the state answers, as text. */
static char *dump(struct trib_state *st)
{
	struct trib_state_key key;
	const char *error;
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	if (out == NULL)
		die("open_memstream", strerror(errno));
	for (unsigned int i = 0; i < trib_state_folder_count(st); i++) {
		struct trib_state_folder *f = trib_state_folder_at(st, i);
		const struct trib_state_rejected *rej;
		bool gmail = strcmp(trib_state_folder_account(f), "gmail") == 0;
		unsigned int count;

		fprintf(out, "folder %s %s uidvalidity %u cursor %u\n",
			trib_state_folder_account(f), trib_state_folder_name(f),
			trib_state_folder_uidvalidity(f),
			trib_state_folder_cursor(f));
		fprintf(out, "uidnext %u modseq %llu\ndone",
			trib_state_folder_uidnext(f),
			(unsigned long long)trib_state_folder_highestmodseq(f));
		for (uint32_t u = trib_state_folder_cursor(f) + 1; u <= MAX_UID;
		     u++) {
			if (trib_state_folder_is_done(f, u))
				fprintf(out, " %u", u);
		}
		fprintf(out, "\n");
		rej = trib_state_folder_rejected_list(f, &count);
		for (unsigned int j = 0; j < count; j++) {
			fprintf(out, "rejected %u %u %lld %s\n",
				rej[j].uidvalidity, rej[j].uid,
				(long long)rej[j].time, rej[j].reason);
		}
		for (uint32_t m = 1;
		     m <= (gmail ? GMAIL_MESSAGES : INBOX_MESSAGES); m++) {
			uint32_t uv, uid;
			int ret;

			if (gmail)
				trib_state_key_gmail(900000 + m, &key);
			else
				inbox_key(m, &key);
			ret = trib_state_folder_lookup(f, &key, &uv, &uid,
						       &error);
			if (ret < 0)
				die("lookup", error);
			if (ret > 0)
				fprintf(out, "key %u %u %u\n", m, uv, uid);
		}
	}
	fclose(out);
	return text;
}

static void rm_tree(int dir_fd, const char *name)
{
	struct dirent *d;
	DIR *dir;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);

	if (fd < 0) {
		(void)unlinkat(dir_fd, name, 0);
		return;
	}
	dir = fdopendir(fd);
	if (dir == NULL)
		die("fdopendir", strerror(errno));
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			rm_tree(fd, d->d_name);
	}
	closedir(dir);
	(void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

/* The dumps of the states after batches 0..BATCHES, built in memory. */
static void expected_dumps(char *dumps[BATCHES + 1])
{
	const char *tmpdir = getenv("TMPDIR");
	char *scratch = trib_strdup_printf(
		"%s/state-crash-expect.XXXXXX",
		tmpdir != NULL && *tmpdir != '\0' ? tmpdir : "/tmp");
	struct trib_state *st;
	const char *error;

	if (mkdtemp(scratch) == NULL)
		die("mkdtemp", strerror(errno));
	if (trib_state_open(scratch, USER, &st, &error) < 0)
		die("scratch state", error);
	for (unsigned int b = 0; b <= BATCHES; b++) {
		if (b > 0)
			apply_batch(st, b);
		dumps[b] = dump(st);
	}
	trib_state_close(&st);
	rm_tree(AT_FDCWD, scratch);
	free(scratch);
}

/* The batch the state on disk is after, or -1. */
static int state_batch(struct trib_state *st)
{
	char *dumps[BATCHES + 1], *now = dump(st);
	int found = -1;

	expected_dumps(dumps);
	for (int b = 0; b <= BATCHES; b++) {
		if (found < 0 && strcmp(now, dumps[b]) == 0)
			found = b;
		free(dumps[b]);
	}
	if (found < 0)
		fprintf(stderr,
			"state-crash-driver: the state matches no "
			"batch:\n%s",
			now);
	free(now);
	return found;
}

static int cmd_apply(const char *dir, unsigned int b, const char *fill)
{
	struct trib_state *st;
	const char *error;
	int have;

	if (trib_state_open(dir, USER, &st, &error) < 0)
		die("open", error);
	have = state_batch(st);
	if (have != (int)b - 1) {
		fprintf(stderr,
			"state-crash-driver: state is after batch %d, "
			"not %u\n",
			have, b - 1);
		return 1;
	}
	/* Afresh, as a new process would: the indexes not in memory. */
	trib_state_close(&st);
	if (trib_state_open(dir, USER, &st, &error) < 0)
		die("open", error);
	apply_batch(st, b);
	if (trib_state_commit(st, &error) < 0) {
		fprintf(stderr, "state-crash-driver: commit failed: %s\n",
			error);
		if (fill == NULL) {
			trib_state_close(&st);
			return 3;
		}
		/* Room again: the changes kept in memory go through. */
		if (unlink(fill) < 0)
			die(fill, strerror(errno));
		if (trib_state_commit(st, &error) < 0) {
			fprintf(stderr,
				"state-crash-driver: commit failed again: "
				"%s\n",
				error);
			trib_state_close(&st);
			return 3;
		}
		printf("committed after a retry\n");
	}
	trib_state_close(&st);
	return 0;
}

static int cmd_check(const char *dir)
{
	struct trib_state *st;
	const char *error;
	int b;

	if (trib_state_open(dir, USER, &st, &error) < 0)
		die("open", error);
	b = state_batch(st);
	trib_state_close(&st);
	if (b < 0)
		return 1;
	printf("%d\n", b);
	return 0;
}

static unsigned int parse_batch(const char *arg)
{
	char *end;
	unsigned long b = strtoul(arg, &end, 10);

	if (*end != '\0' || b < 1 || b > BATCHES)
		die("batch", "must be 1..6");
	return (unsigned int)b;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "has-crash-points") == 0)
		return trib_crash_points_enabled() ? 0 : 77;
	if (argc == 4 && strcmp(argv[1], "apply") == 0)
		return cmd_apply(argv[2], parse_batch(argv[3]), NULL);
	if (argc == 5 && strcmp(argv[1], "apply-retry") == 0)
		return cmd_apply(argv[2], parse_batch(argv[3]), argv[4]);
	if (argc == 3 && strcmp(argv[1], "check") == 0)
		return cmd_check(argv[2]);
	fprintf(stderr, "usage: state-crash-driver has-crash-points | apply "
			"DIR B | apply-retry DIR B FILE | check DIR\n");
	return 1;
}
