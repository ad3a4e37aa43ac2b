#ifndef ITEST_H
#define ITEST_H

/* itest.h: support for integration tests run under
 * tests/harness/with-servers.sh: the servers' addresses from the
 * environment, the OAuth stand-in's control API, seeding, and running the
 * event loop with a deadline. */

#include "log.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>

struct itest_env {
	const char *dir, *ca, *host, *oauth_url, *harness, *python;
	unsigned int imaps_port, starttls_port;
	/* STARTTLS on 127.0.0.6: Dovecot treats 127.0.0.1 -> 127.0.0.1 as
	 * secure and would allow login before STARTTLS; this one does not,
	 * like a real provider. */
	const char *starttls_strict_host;
	unsigned int starttls_strict_port;
	const char *plain_host, *wronghost_host, *expired_host, *unknownca_host;
	unsigned int plain_port, wronghost_port, expired_port, unknownca_port;
	const char *user, *app_password, *user2, *app_password2;
	unsigned int inbox_count;
	const char *builddir;
};

/* Fails the whole program (exit 1, message) when a variable is missing:
 * the integration tests must run under with-servers.sh. */
const struct itest_env *itest_env(void);

/* The stand-in's control API. Tokens are malloc()ed. */
char *itest_mint(const char *user, unsigned int ttl_secs);
void itest_expire(const char *token);
void itest_revoke(const char *token);
/* Introspection calls the stand-in has answered so far. */
long itest_introspections(void);

/* Append count messages of about size bytes to the remote mailbox of
 * user, through the harness. Returns 0 on success. */
int itest_seed(const char *user, const char *mailbox, unsigned int count,
	       size_t size);

/* Run the loop until *flag is true or secs pass. Returns false on the
 * deadline. */
bool itest_run_until(struct trib_loop *loop, const bool *flag,
		     unsigned int secs);

/* A logger that keeps the last lines (tests assert on them) and prints
 * them when ITEST_VERBOSE is set. */
extern struct trib_logger itest_logger;
/* True if any logged line so far contains needle. */
bool itest_log_contains(const char *needle);
void itest_log_clear(void);

#endif
