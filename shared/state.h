#ifndef TRIB_STATE_H
#define TRIB_STATE_H

/* state.h: the sync state of one user, under <state_dir>/<user>/ (the
 * tributary_state_dir setting; never inside a mail home). No I/O happens
 * behind the caller's back and there is no event loop: open, change in
 * memory, commit when the caller decides (every N messages or T seconds),
 * close.
 *
 * Per account and remote folder it keeps: UIDVALIDITY; the cursor, the
 * highest UID up to which every message is delivered, rejected or
 * deliberately skipped; the UIDs above the cursor that are done already
 * (several LMTP sessions finish out of order: the cursor only moves over
 * a contiguous run, and what is done above it is never delivered again);
 * HIGHESTMODSEQ; the last UIDNEXT seen; the messages LMTP refused for good
 * (5xx), with reason and time, to be shown; and an index of dedupe keys
 * (state-index.c) that maps a message to the UID it was delivered under,
 * so that a UIDVALIDITY change re-maps instead of delivering again.
 *
 * Durability: changes accumulate in memory. trib_state_commit() appends
 * the new dedupe keys (fsync'd) and replaces the state file atomically
 * (temp file, fsync, rename, fsync of the directory). After a crash at any
 * instant the state on disk is the one of the last commit or of the one
 * being made, never a mix and never empty; a torn or corrupted state file
 * is refused with an error, never taken for a new user. A failed commit
 * (a full disk) leaves the previous state on disk untouched and keeps the
 * changes in memory, so a later commit can still write them. The formats
 * are in docs/state.md.
 *
 * Locking: the state of a user is open in one place at a time. An fcntl
 * write lock on <user>/lock (fcntl, not flock: it works over NFS) keeps
 * `tributary sync` and `tributary run`, or fetchers on two hosts sharing
 * the state dir, from working for one user at once; a second open of the
 * same user inside one process is refused too.
 *
 * Files are made 0600 and directories 0700; a symbolic link where a state
 * directory or file belongs is refused.
 *
 * Owns: everything reachable from a struct trib_state, the lock and its
 * file descriptors. Errors are one line naming the file and the cause,
 * owned by the state (valid until its next call or trib_state_close()). */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct trib_state;
struct trib_state_folder;

/* A dedupe key: 16 bytes of SHA-256 over the message's identity. */
#define TRIB_STATE_KEY_SIZE 16
struct trib_state_key {
	unsigned char hash[TRIB_STATE_KEY_SIZE];
};

/* A message LMTP rejected permanently. */
struct trib_state_rejected {
	uint32_t uidvalidity;
	uint32_t uid;
	int64_t time; /* when, seconds since the epoch */
	/* LMTP's reply, one printable line of at most
	 * TRIB_STATE_REASON_MAX bytes. */
	const char *reason;
};
#define TRIB_STATE_REASON_MAX 500

/* The longest remote folder name kept, in bytes. */
#define TRIB_STATE_FOLDER_NAME_MAX 1000

enum trib_state_uidvalidity_change {
	/* The same as before: nothing changed. */
	TRIB_STATE_UIDVALIDITY_SAME,
	/* The folder had none yet. */
	TRIB_STATE_UIDVALIDITY_FIRST,
	/* A new one: the UIDs known so far mean nothing now. A new
	 * generation of the dedupe index started (the old keys still match),
	 * the cursor, the done UIDs, HIGHESTMODSEQ and UIDNEXT start again
	 * from 0. Rejected messages stay listed under their UIDVALIDITY. */
	TRIB_STATE_UIDVALIDITY_CHANGED,
};

/* A user name that makes a safe directory name: 1 to 255 bytes of ASCII
 * letters, digits and ._@+-=, not starting with '.' or '-'. */
bool trib_state_valid_user(const char *user);

/* Lock and load the state of user under state_dir, making the
 * directories (0700) that are missing: state_dir itself (not its
 * parents), <user>/ and <user>/index/. A user seen for the first time has
 * an empty state. Returns 0 with *state_r set, or -1 with *error_r, a
 * static string valid until the next trib_state_open() call, e.g.
 * "state /var/lib/tributary/alice/lock: locked by pid 4242 on host mx1
 * (another tributary sync or run works for this user)". */
int trib_state_open(const char *state_dir, const char *user,
		    struct trib_state **state_r, const char **error_r);
/* Unlock and free. Changes not committed are lost (the caller commits
 * first). Sets *state to NULL; NULL is fine. */
void trib_state_close(struct trib_state **state);
/* Whether the last trib_state_open() failed because the user's lock is
 * held: by another process (a `tributary sync` by hand, another host) or
 * by an open state of this process. Such a failure is temporary. */
bool trib_state_open_was_locked(void);

/* Make every change since the last commit durable. Returns 0, or -1 with
 * *error_r (a full disk, an I/O error, an index file that went missing):
 * the state on disk is then the previous one, no temp file is left, and
 * the changes stay in memory for the next commit. (One exception: when
 * only the final fsync of the directory fails, the new state is in place
 * but not known to be durable; the state stays dirty, so the next commit
 * writes it again.) Does nothing when nothing changed. */
int trib_state_commit(struct trib_state *state, const char **error_r);
/* Whether there are changes not committed yet. */
bool trib_state_is_dirty(const struct trib_state *state);

const char *trib_state_user(const struct trib_state *state);
/* <state_dir>/<user> */
const char *trib_state_path(const struct trib_state *state);

/* The folder of account (a valid account name) named name (the remote
 * name, 1 to TRIB_STATE_FOLDER_NAME_MAX bytes without NUL), created empty
 * when it is not known yet; NULL when a name is invalid. Owned by the
 * state. */
struct trib_state_folder *trib_state_folder_get(struct trib_state *state,
						const char *account,
						const char *name);
/* The same, without creating: NULL when not known. */
struct trib_state_folder *trib_state_folder_find(struct trib_state *state,
						 const char *account,
						 const char *name);
/* Every known folder, in the order they were first created. */
unsigned int trib_state_folder_count(const struct trib_state *state);
struct trib_state_folder *trib_state_folder_at(struct trib_state *state,
					       unsigned int idx);
const char *trib_state_folder_account(const struct trib_state_folder *folder);
const char *trib_state_folder_name(const struct trib_state_folder *folder);

/* 0 until the first trib_state_folder_set_uidvalidity(). */
uint32_t trib_state_folder_uidvalidity(const struct trib_state_folder *folder);
/* Called with the UIDVALIDITY of every SELECT/STATUS. */
enum trib_state_uidvalidity_change
trib_state_folder_set_uidvalidity(struct trib_state_folder *folder,
				  uint32_t uidvalidity);

/* Everything <= the cursor is done. */
uint32_t trib_state_folder_cursor(const struct trib_state_folder *folder);
/* uid is at or below the cursor, or done above it. */
bool trib_state_folder_is_done(const struct trib_state_folder *folder,
			       uint32_t uid);
/* How many UIDs above the cursor are done (the cursor waits for the ones
 * in between). */
uint64_t trib_state_folder_done_above(const struct trib_state_folder *folder);

/* LMTP answered 250 for uid (or a UIDVALIDITY change found it delivered
 * already under an older UID). key: its dedupe key, recorded in the
 * current generation of the index; NULL when there is none. uid 0 is
 * ignored. */
void trib_state_folder_delivered(struct trib_state_folder *folder, uint32_t uid,
				 const struct trib_state_key *key);
/* UIDs first..last are done without a delivery: they do not exist (a gap
 * in the remote's UIDs) or are skipped on purpose. */
void trib_state_folder_skipped(struct trib_state_folder *folder, uint32_t first,
			       uint32_t last);
/* LMTP refused uid for good: it is recorded (to be shown) and done, so it
 * is neither retried forever nor skipped in silence. reason is copied, cut
 * to TRIB_STATE_REASON_MAX bytes, with control characters replaced. A
 * second rejection of the same UID replaces the first. */
void trib_state_folder_rejected(struct trib_state_folder *folder, uint32_t uid,
				time_t when, const char *reason);
/* Every recorded rejection, oldest first, valid until the next change of
 * the folder. */
const struct trib_state_rejected *
trib_state_folder_rejected_list(const struct trib_state_folder *folder,
				unsigned int *count_r);

/* Set HIGHESTMODSEQ only once everything it covers is done. */
uint64_t
trib_state_folder_highestmodseq(const struct trib_state_folder *folder);
void trib_state_folder_set_highestmodseq(struct trib_state_folder *folder,
					 uint64_t modseq);
uint32_t trib_state_folder_uidnext(const struct trib_state_folder *folder);
void trib_state_folder_set_uidnext(struct trib_state_folder *folder,
				   uint32_t uidnext);

/* ---- the dedupe index ---- */

/* The key of a message: its Message-ID header value exactly as given
 * (NULL or "" when it has none: then size and date alone identify it),
 * RFC822.SIZE and INTERNALDATE (seconds since the epoch). */
void trib_state_key_message(const char *message_id, uint64_t size,
			    int64_t internaldate, struct trib_state_key *key_r);
/* The key of a Gmail message: its X-GM-MSGID. */
void trib_state_key_gmail(uint64_t msgid, struct trib_state_key *key_r);

/* Look key up in every generation of the folder's index, newest record
 * first. Returns 1 with the UID it was delivered under and the
 * UIDVALIDITY of that generation, 0 when the key is unknown, -1 with
 * *error_r when the index cannot be read (a corrupted or missing file).
 * The first lookup reads the folder's index into memory (20 bytes a
 * key); before that, only the keys added since the last commit are held. */
int trib_state_folder_lookup(struct trib_state_folder *folder,
			     const struct trib_state_key *key,
			     uint32_t *uidvalidity_r, uint32_t *uid_r,
			     const char **error_r);
/* Keys recorded in the folder's index, every generation, duplicates
 * included. */
uint64_t trib_state_folder_key_count(const struct trib_state_folder *folder);
/* Rewrite the folder's index at the next commit, keeping only the newest
 * record of each key. (Commits also do it by themselves once an index
 * that is in memory holds as many replaced records as live ones.) */
void trib_state_folder_compact(struct trib_state_folder *folder);

#endif
