/* itest.c: integration test support (see itest.h). */

#include "itest.h"

#include "alloc.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static struct itest_env env;
static bool env_loaded;

static const char *need(const char *name)
{
	const char *value = getenv(name);

	if (value == NULL || value[0] == '\0') {
		fprintf(stderr,
			"itest: %s is not set: run the integration tests "
			"through tests/harness/with-servers.sh (make check "
			"does)\n",
			name);
		exit(1);
	}
	return value;
}

static unsigned int need_uint(const char *name)
{
	return (unsigned int)strtoul(need(name), NULL, 10);
}

const struct itest_env *itest_env(void)
{
	const char *srcdir;
	static char harness[4096];

	if (env_loaded)
		return &env;
	env.dir = need("TRIB_TEST_DIR");
	env.ca = need("TRIB_TEST_CA");
	env.host = need("TRIB_TEST_HOST");
	env.imaps_port = need_uint("TRIB_TEST_IMAPS_PORT");
	env.starttls_port = need_uint("TRIB_TEST_IMAP_STARTTLS_PORT");
	env.starttls_strict_host = need("TRIB_TEST_IMAP_STARTTLS_STRICT_HOST");
	env.starttls_strict_port =
		need_uint("TRIB_TEST_IMAP_STARTTLS_STRICT_PORT");
	env.plain_host = need("TRIB_TEST_IMAP_PLAIN_HOST");
	env.plain_port = need_uint("TRIB_TEST_IMAP_PLAIN_PORT");
	env.wronghost_host = need("TRIB_TEST_WRONGHOST_HOST");
	env.wronghost_port = need_uint("TRIB_TEST_WRONGHOST_PORT");
	env.expired_host = need("TRIB_TEST_EXPIRED_HOST");
	env.expired_port = need_uint("TRIB_TEST_EXPIRED_PORT");
	env.unknownca_host = need("TRIB_TEST_UNKNOWNCA_HOST");
	env.unknownca_port = need_uint("TRIB_TEST_UNKNOWNCA_PORT");
	env.oauth_url = need("TRIB_TEST_OAUTH_URL");
	env.user = need("TRIB_TEST_USER");
	env.app_password = need("TRIB_TEST_APP_PASSWORD");
	env.user2 = need("TRIB_TEST_USER2");
	env.app_password2 = need("TRIB_TEST_APP_PASSWORD2");
	env.inbox_count = need_uint("TRIB_TEST_INBOX_COUNT");
	srcdir = getenv("top_srcdir");
	snprintf(harness, sizeof(harness), "%s/tests/harness/harness.py",
		 srcdir != NULL ? srcdir : ".");
	env.harness = harness;
	env.python = getenv("PYTHON3") != NULL ? getenv("PYTHON3") : "python3";
	env.builddir =
		getenv("top_builddir") != NULL ? getenv("top_builddir") : ".";
	env_loaded = true;
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return &env;
}

/* ---- control API over HTTPS (test CA, verification on) ---- */

struct body {
	char *data;
	size_t len;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	struct body *body = ctx;
	size_t n = size * nmemb;

	body->data = trib_realloc(body->data, body->len + n + 1);
	memcpy(body->data + body->len, ptr, n);
	body->len += n;
	body->data[body->len] = '\0';
	return n;
}

static json_object *control(const char *method, const char *path,
			    const char *json_body)
{
	const struct itest_env *e = itest_env();
	struct body body = { NULL, 0 };
	struct curl_slist *headers = NULL;
	char url[1024];
	json_object *result;
	long status = 0;
	CURL *curl = curl_easy_init();
	CURLcode rc;

	snprintf(url, sizeof(url), "%s%s", e->oauth_url, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, e->ca);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
	if (strcmp(method, "POST") == 0) {
		headers = curl_slist_append(headers,
					    "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS,
				 json_body != NULL ? json_body : "{}");
	}
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK || status != 200) {
		fprintf(stderr, "itest: %s %s failed: %s (HTTP %ld)\n", method,
			path, curl_easy_strerror(rc), status);
		exit(1);
	}
	result = json_tokener_parse(body.data != NULL ? body.data : "");
	free(body.data);
	if (result == NULL) {
		fprintf(stderr, "itest: %s %s: bad JSON\n", method, path);
		exit(1);
	}
	return result;
}

char *itest_mint(const char *user, unsigned int ttl_secs)
{
	char req[512];
	json_object *resp, *token;
	char *copy;

	snprintf(req, sizeof(req), "{\"user\": \"%s\", \"ttl\": %u}", user,
		 ttl_secs);
	resp = control("POST", "/control/mint", req);
	if (!json_object_object_get_ex(resp, "access_token", &token)) {
		fprintf(stderr, "itest: mint: no access_token\n");
		exit(1);
	}
	copy = trib_strdup(json_object_get_string(token));
	json_object_put(resp);
	return copy;
}

static void token_op(const char *path, const char *token)
{
	char req[1024];

	snprintf(req, sizeof(req), "{\"token\": \"%s\"}", token);
	json_object_put(control("POST", path, req));
}

void itest_expire(const char *token)
{
	token_op("/control/expire", token);
}

void itest_revoke(const char *token)
{
	token_op("/control/revoke", token);
}

long itest_introspections(void)
{
	json_object *resp = control("GET", "/control/stats", NULL), *n;
	long count = -1;

	if (json_object_object_get_ex(resp, "introspections", &n))
		count = (long)json_object_get_int64(n);
	json_object_put(resp);
	return count;
}

int itest_seed(const char *user, const char *mailbox, unsigned int count,
	       size_t size)
{
	const struct itest_env *e = itest_env();
	char *cmd;
	int status;

	cmd = trib_strdup_printf("'%s' '%s' seed '%s' --user '%s' --mailbox "
				 "'%s' --count %u --size %zu >/dev/null",
				 e->python, e->harness, e->dir, user, mailbox,
				 count, size);
	status = system(cmd);
	free(cmd);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- loop with a deadline ---- */

struct run_state {
	struct trib_loop *loop;
	const bool *flag;
	bool timed_out;
};

static void run_check(evutil_socket_t fd, short what, void *ctx)
{
	struct run_state *state = ctx;

	(void)fd;
	if ((what & EV_TIMEOUT) != 0 && *state->flag)
		trib_loop_break(state->loop);
}

static void run_deadline(evutil_socket_t fd, short what, void *ctx)
{
	struct run_state *state = ctx;

	(void)fd;
	(void)what;
	state->timed_out = true;
	trib_loop_break(state->loop);
}

bool itest_run_until(struct trib_loop *loop, const bool *flag,
		     unsigned int secs)
{
	struct run_state state = { loop, flag, false };
	struct timeval deadline = { (time_t)secs, 0 };
	struct timeval tick = { 0, 5000 };
	struct event *ev_deadline, *ev_tick;

	if (*flag)
		return true;
	ev_deadline = evtimer_new(trib_loop_base(loop), run_deadline, &state);
	ev_tick = event_new(trib_loop_base(loop), -1, EV_PERSIST, run_check,
			    &state);
	evtimer_add(ev_deadline, &deadline);
	event_add(ev_tick, &tick);
	while (!*flag && !state.timed_out)
		event_base_loop(trib_loop_base(loop), EVLOOP_ONCE);
	event_free(ev_deadline);
	event_free(ev_tick);
	return *flag;
}

/* ---- logger ---- */

#define LOG_LINES 256
static char *log_lines[LOG_LINES];
static unsigned int log_next;

static void itest_log(void *context, enum trib_log_level level,
		      const char *message)
{
	(void)context;
	if (getenv("ITEST_VERBOSE") != NULL)
		fprintf(stderr, "[%s] %s\n", trib_log_level_name(level),
			message);
	free(log_lines[log_next % LOG_LINES]);
	log_lines[log_next % LOG_LINES] = trib_strdup(message);
	log_next++;
}

struct trib_logger itest_logger = {
	.log = itest_log,
	.min_level = TRIB_LOG_DEBUG,
};

bool itest_log_contains(const char *needle)
{
	for (unsigned int i = 0; i < LOG_LINES; i++) {
		if (log_lines[i] != NULL &&
		    strstr(log_lines[i], needle) != NULL)
			return true;
	}
	return false;
}

void itest_log_clear(void)
{
	for (unsigned int i = 0; i < LOG_LINES; i++) {
		free(log_lines[i]);
		log_lines[i] = NULL;
	}
	log_next = 0;
}
