#ifndef TRIBUTARY_LMTP_PLUGIN_H
#define TRIBUTARY_LMTP_PLUGIN_H

/* tributary-lmtp-plugin.h: the LMTP plugin lib95_tributary_lmtp_plugin.so
 * (module tributary_lmtp), which makes delivery of fetched mail exactly
 * once (DESIGN.md, data flow item 4; docs/decisions.md "The LMTP
 * plugin").
 *
 * It wraps lib-lda's delivery hook (mail_deliver_hook_set()), around
 * Pigeonhole's Sieve hook when Sieve is loaded: the loader sorts plugin
 * files by name, so 95 initialises after lib90_sieve_plugin.so and our
 * hook is the outer one. A message whose topmost X-Tributary-Trace header
 * verifies for the recipient is looked up in the user's delivered record
 * (shared/delivered.h): a duplicate is answered as delivered without
 * being stored and without Sieve; otherwise Sieve (or the default save)
 * delivers it and its trace id is marked. The record stays open from
 * the lookup to the mark: its claim on the id makes a second session
 * with the same message (a killed fetcher's transaction and its re-send)
 * wait, then find it marked. Any other message passes through
 * untouched.
 *
 * Settings (plugin {}, per-user userdb fields override them):
 *   tributary_trace_key_file  the trace keys (default
 *                             /etc/tributary/trace.key)
 *   tributary_delivered_path  the record (default ~/.tributary.delivered)
 *
 * Owns: the trace keys of this process (reloaded when the key file
 * changes), wiped at deinit. Borrows: Dovecot's delivery context; opens
 * the record for one delivery at a time. Only the four symbols below are
 * exported; the core slice it links is hidden. */

#include "lib.h"

struct mail_user;
struct module;
struct trib_trace_keys;

#define TRIBUTARY_LMTP_EXPORT __attribute__((visibility("default")))

TRIBUTARY_LMTP_EXPORT extern const char *tributary_lmtp_plugin_version;
TRIBUTARY_LMTP_EXPORT extern const char
	tributary_lmtp_plugin_binary_dependency[];
TRIBUTARY_LMTP_EXPORT void tributary_lmtp_plugin_init(struct module *module);
TRIBUTARY_LMTP_EXPORT void tributary_lmtp_plugin_deinit(void);

/* ---- settings (tributary-lmtp-keys.c) ---- */

#define TRIBUTARY_LMTP_KEY_FILE_DEFAULT "/etc/tributary/trace.key"

/* The user's value of a plugin setting, or def when unset or empty. */
const char *tributary_lmtp_setting(struct mail_user *user, const char *name,
				   const char *def);

/* The trace keys for user, loaded (or reloaded, when the file changed
 * since) from tributary_trace_key_file. NULL with *error_r (naming the
 * file) when they cannot be loaded; each new reason is logged once per
 * process, to event. Valid until the next call. */
const struct trib_trace_keys *tributary_lmtp_keys_get(struct mail_user *user,
						      struct event *event,
						      const char **error_r);
void tributary_lmtp_keys_deinit(void);

#endif
