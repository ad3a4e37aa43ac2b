/* tributary-lmtp-keys.c: the plugin's settings accessor and its trace
 * keys: loaded on the first traced message, kept for the life of the
 * process, reloaded when the key file changes (a rotation needs no
 * Dovecot reload), and a problem with them logged once. */

#include "lib.h"
#include "mail-user.h"

#include "tributary-lmtp-plugin.h"

#include "trace.h"

#include <sys/stat.h>

struct keys_cache {
	char *path;
	/* the file the keys came from: reload when it differs */
	struct stat st;
	struct trib_trace_keys *keys;
	/* the last error logged, so that each is logged once */
	char *logged_error;
};

static struct keys_cache keys_cache;

const char *tributary_lmtp_setting(struct mail_user *user, const char *name,
				   const char *def)
{
	const char *value = mail_user_plugin_getenv(user, name);

	return value == NULL || value[0] == '\0' ? def : value;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void keys_cache_clear(void)
{
	trib_trace_keys_destroy(&keys_cache.keys);
	i_free(keys_cache.path);
	i_zero(&keys_cache.st);
}

const struct trib_trace_keys *tributary_lmtp_keys_get(struct mail_user *user,
						      struct event *event,
						      const char **error_r)
{
	const char *path, *error;
	struct trib_trace_keys *keys;
	struct stat st;
	bool have_st;

	path = tributary_lmtp_setting(user, "tributary_trace_key_file",
				      TRIBUTARY_LMTP_KEY_FILE_DEFAULT);
	have_st = stat(path, &st) == 0;
	if (keys_cache.keys != NULL && have_st &&
	    strcmp(keys_cache.path, path) == 0 &&
	    same_file(&st, &keys_cache.st))
		return keys_cache.keys;

	keys_cache_clear();
	if (trib_trace_keys_load(path, &keys, &error) < 0) {
		if (keys_cache.logged_error == NULL ||
		    strcmp(keys_cache.logged_error, error) != 0) {
			e_error(event,
				"%s: messages with a trace header are "
				"deferred (LMTP 451) until it is fixed",
				error);
			i_free(keys_cache.logged_error);
			keys_cache.logged_error = i_strdup(error);
		}
		*error_r = t_strdup(error);
		return NULL;
	}
	if (keys_cache.logged_error != NULL) {
		e_info(event, "trace key file %s loaded again", path);
		i_free(keys_cache.logged_error);
	}
	keys_cache.keys = keys;
	keys_cache.path = i_strdup(path);
	/* the stat before the load: if the file changed in between, the
	 * next message reloads it */
	if (have_st)
		keys_cache.st = st;
	return keys;
}

void tributary_lmtp_keys_deinit(void)
{
	keys_cache_clear();
	i_free(keys_cache.logged_error);
}
