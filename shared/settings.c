/* settings.c: value syntaxes and key/value layers. */

#include "settings.h"

#include "alloc.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *pairs_get(void *context, const char *key)
{
	struct trib_settings_pairs *pairs = context;

	for (const char *const *kv = pairs->pairs; kv[0] != NULL; kv += 2) {
		if (strcmp(kv[0], key) == 0)
			return kv[1];
	}
	return NULL;
}

static const char *const *pairs_keys(void *context)
{
	struct trib_settings_pairs *pairs = context;

	return pairs->keys;
}

void trib_settings_pairs_layer(struct trib_settings_pairs *pairs,
			       const char *const *kv,
			       struct trib_settings_layer *layer_r)
{
	unsigned int n = 0;

	while (kv[n * 2] != NULL)
		n++;
	pairs->pairs = kv;
	pairs->keys = trib_calloc(n + 1, sizeof(char *));
	for (unsigned int i = 0; i < n; i++)
		pairs->keys[i] = kv[i * 2];
	layer_r->get = pairs_get;
	layer_r->keys = pairs_keys;
	layer_r->context = pairs;
}

void trib_settings_pairs_free(struct trib_settings_pairs *pairs)
{
	free(pairs->keys);
	pairs->keys = NULL;
}

bool trib_settings_parse_bool(const char *value, bool *bool_r)
{
	static const char *const yes[] = { "yes", "true", "1", "on" };
	static const char *const no[] = { "no", "false", "0", "off" };

	for (size_t i = 0; i < TRIB_N_ELEMENTS(yes); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*bool_r = true;
			return true;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*bool_r = false;
			return true;
		}
	}
	return false;
}

bool trib_settings_parse_uint(const char *value, unsigned int min,
			      unsigned int max, unsigned int *num_r)
{
	unsigned long num = 0;

	if (*value == '\0')
		return false;
	for (const char *p = value; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
		num = num * 10 + (unsigned long)(*p - '0');
		if (num > max)
			return false;
	}
	if (num < min)
		return false;
	*num_r = (unsigned int)num;
	return true;
}

static const struct {
	const char *names[4];
	unsigned int secs;
} time_units[] = {
	{ { "s", "sec", "secs", "second" }, 1 },
	{ { "m", "min", "mins", "minute" }, 60 },
	{ { "h", "hour", "hours", "hr" }, 3600 },
	{ { "d", "day", "days", NULL }, 86400 },
	{ { "w", "week", "weeks", NULL }, 7 * 86400 },
};

static bool time_unit(const char *unit, unsigned int *secs_r)
{
	size_t len = strlen(unit);

	if (len == 0) {
		*secs_r = 1;
		return true;
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(time_units); i++) {
		for (size_t j = 0; j < 4; j++) {
			const char *name = time_units[i].names[j];

			if (name == NULL)
				continue;
			/* "seconds", "minutes": a plural 's' is fine */
			if (strcasecmp(unit, name) == 0 ||
			    (len == strlen(name) + 1 && unit[len - 1] == 's' &&
			     strncasecmp(unit, name, len - 1) == 0)) {
				*secs_r = time_units[i].secs;
				return true;
			}
		}
	}
	return false;
}

bool trib_settings_parse_time(const char *value, unsigned int *secs_r)
{
	const unsigned long max = 30UL * 86400;
	unsigned long num = 0;
	unsigned int unit;
	const char *p = value;

	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		num = num * 10 + (unsigned long)(*p - '0');
		if (num > max)
			return false;
	}
	while (*p == ' ')
		p++;
	if (!time_unit(p, &unit) || num * unit > max)
		return false;
	*secs_r = (unsigned int)(num * unit);
	return true;
}

char **trib_settings_split_list(const char *value, unsigned int *count_r)
{
	unsigned int count = 0, alloc = 4;
	char **list = trib_calloc(alloc + 1, sizeof(char *));
	const char *p = value;

	while (*p != '\0') {
		const char *end = strchr(p, ',');
		const char *start = p;
		size_t len;

		if (end == NULL)
			end = p + strlen(p);
		while (start < end && isspace((unsigned char)*start))
			start++;
		len = (size_t)(end - start);
		while (len > 0 && isspace((unsigned char)start[len - 1]))
			len--;
		if (len > 0) {
			if (count == alloc) {
				alloc *= 2;
				list = trib_realloc(
					list, (alloc + 1) * sizeof(char *));
			}
			list[count++] = trib_strndup(start, len);
			list[count] = NULL;
		}
		p = *end == ',' ? end + 1 : end;
	}
	*count_r = count;
	return list;
}

void trib_strlist_free(char **list)
{
	if (list == NULL)
		return;
	for (char **p = list; *p != NULL; p++)
		free(*p);
	free(list);
}

bool trib_settings_valid_account_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 32)
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      *p == '_' || *p == '-'))
			return false;
	}
	return true;
}
