/* userconf.c: what the commands that read Dovecot's settings share: a
 * userdb reply turned into the user's accounts, and JSON string lists. */

#include "cli.h"

#include "account.h"
#include "alloc.h"
#include "userdb.h"

#include <json-c/json.h>
#include <stdlib.h>

void cli_accounts_from_userdb(const struct trib_userdb_user *user,
			      const char *name,
			      const struct trib_settings_layer *global,
			      const struct trib_global_settings *globals,
			      struct trib_account_list *list_r)
{
	const char **kv = trib_calloc(user->count * 2 + 2, sizeof(char *));
	struct trib_settings_pairs pairs;
	struct trib_settings_layer layer;

	for (unsigned int i = 0; i < user->count; i++) {
		kv[i * 2] = user->fields[i].key;
		kv[i * 2 + 1] = user->fields[i].value;
	}
	trib_settings_pairs_layer(&pairs, kv, &layer);
	trib_account_list_load(name, &layer, global, globals, list_r);
	trib_settings_pairs_free(&pairs);
	free(kv);
}

json_object *cli_json_strings(char *const *items, unsigned int count)
{
	json_object *arr = json_object_new_array();

	for (unsigned int i = 0; i < count; i++)
		json_object_array_add(arr, json_object_new_string(items[i]));
	return arr;
}
