#ifndef TRIB_DOVECONF_H
#define TRIB_DOVECONF_H

/* doveconf.h: Tributary's global settings from Dovecot's own parser. The
 * fetcher never reads Dovecot's configuration syntax: it runs
 * `doveconf -P [-c CONFIG] base_dir plugin` (argv only, no shell) and
 * reads the normalized "name = value" lines it prints. */

#include "settings.h"

struct doveconf {
	char *base_dir;
	/* plugin {} settings: key, value, ..., NULL, NULL */
	char **pairs;
	unsigned int count;
	struct trib_settings_pairs layer_pairs;
};

/* doveconf_bin NULL: "doveconf" from PATH; config NULL: Dovecot's
 * default. Returns -1 with *error_r (malloc()ed) naming the cause. */
int doveconf_load(const char *doveconf_bin, const char *config,
		  struct doveconf *conf_r, char **error_r);
/* A settings layer over the plugin settings (valid until free). */
void doveconf_layer(struct doveconf *conf, struct trib_settings_layer *layer_r);
void doveconf_free(struct doveconf *conf);

#endif
