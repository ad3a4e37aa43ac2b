#ifndef TRIB_SETTINGS_H
#define TRIB_SETTINGS_H

/* settings.h: reading Tributary's settings as Dovecot hands them over:
 * flat name = value strings, in layers (a user's userdb fields over the
 * global plugin {} settings), and the value syntaxes of docs/settings.md
 * (booleans, times, lists, names). No I/O: the fetcher fills the layers
 * from doveconf and the auth userdb protocol, the plugins (later) from
 * mail_user_plugin_getenv(). */

#include <stdbool.h>
#include <stddef.h>

struct trib_settings_layer {
	/* The value of key, or NULL. */
	const char *(*get)(void *context, const char *key);
	/* Every key of the layer, NULL-terminated; may be NULL when the
	 * layer cannot list (then unknown names cannot be reported). */
	const char *const *(*keys)(void *context);
	void *context;
};

/* A layer over a NULL-terminated array of key, value, key, value, ...
 * pairs (borrowed). */
struct trib_settings_pairs {
	const char *const *pairs;
	const char **keys; /* built by trib_settings_pairs_layer() */
};
void trib_settings_pairs_layer(struct trib_settings_pairs *pairs,
			       const char *const *kv,
			       struct trib_settings_layer *layer_r);
void trib_settings_pairs_free(struct trib_settings_pairs *pairs);

/* yes/no, true/false, 1/0, on/off; case-insensitive. */
bool trib_settings_parse_bool(const char *value, bool *bool_r);
/* "90", "90s", "5m", "5 mins", "1h", "1 hour", "2d", "1 week"; at most
 * 30 days. */
bool trib_settings_parse_time(const char *value, unsigned int *secs_r);
/* Decimal, no sign, within [min, max]. */
bool trib_settings_parse_uint(const char *value, unsigned int min,
			      unsigned int max, unsigned int *num_r);
/* Comma-separated, items trimmed, empty items dropped. The result is a
 * NULL-terminated array of malloc()ed strings; free with
 * trib_strlist_free(). */
char **trib_settings_split_list(const char *value, unsigned int *count_r);
void trib_strlist_free(char **list);
/* [a-z0-9_-]{1,32} */
bool trib_settings_valid_account_name(const char *name);

#endif
