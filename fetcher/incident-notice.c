/* incident-notice.c: the notice message of a reauthorization incident
 * (incident.h): a plain text message telling the user which account
 * stopped, since when, why and the command that fixes it, delivered over
 * LMTP behind a trace header whose id is the incident's; LMTP's answer
 * comes through a callback from the loop. */

#include "incident.h"

#include "account.h"
#include "alloc.h"
#include "lmtp-client.h"
#include "log.h"
#include "provider.h"
#include "trace.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The notice's lines are wrapped at this many bytes. */
#define NOTICE_WIDTH 72
/* How long LMTP may take to answer the notice. */
#define NOTICE_REPLY_TIMEOUT_SECS 60

static const char *provider_name(const struct trib_account *account)
{
	return account->provider != NULL ? account->provider->name : "imap";
}

/* The incident's start, for people: UTC. */
static void format_utc(int64_t when, char *buf, size_t size)
{
	time_t t = (time_t)when;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, size, "@%lld", (long long)when);
}

struct incident_notice {
	struct trib_lmtp_client *client;
	/* NULL once aborted */
	incident_notice_callback_t *callback;
	void *context;
};

static void notice_done(const struct trib_lmtp_reply *reply, void *context)
{
	struct incident_notice *n = context;
	incident_notice_callback_t *callback = n->callback;
	char *error = NULL;

	if (callback == NULL)
		return; /* incident_notice_abort() is destroying the client */
	if (reply->error_class != TRIB_OK)
		error = trib_strdup_printf(
			"notice not delivered: %s",
			reply->error != NULL ? reply->error : "LMTP failed");
	trib_lmtp_client_destroy(&n->client);
	context = n->context;
	free(n);
	callback(error, context);
	free(error);
}

/* This host's name for From and Message-ID; "localhost" when it is not a
 * plain domain name. */
static void host_name(char *buf, size_t size)
{
	buf[size - 1] = '\0';
	if (gethostname(buf, size) < 0 || buf[size - 1] != '\0')
		buf[0] = '\0'; /* none, or cut short */
	buf[size - 1] = '\0';
	if (buf[0] == '\0' || buf[0] == '.' || buf[0] == '-' ||
	    strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			"0123456789.-") != strlen(buf))
		snprintf(buf, size, "localhost");
}

static bool is_ascii(const char *str)
{
	for (const unsigned char *p = (const unsigned char *)str; *p != '\0';
	     p++) {
		if (*p >= 0x80)
			return false;
	}
	return true;
}

/* RFC 5322 date-time of now, in UTC. */
static void rfc5322_now(char *buf, size_t size)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed",
					    "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr",
					      "May", "Jun", "Jul", "Aug",
					      "Sep", "Oct", "Nov", "Dec" };
	time_t now = time(NULL);
	struct tm tm;

	if (gmtime_r(&now, &tm) == NULL) {
		snprintf(buf, size, "Thu, 01 Jan 1970 00:00:00 +0000");
		return;
	}
	snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d +0000",
		 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* text as lines of at most NOTICE_WIDTH bytes (a longer word gets a
 * line of its own), broken at spaces, each ended by CRLF. */
static void add_wrapped(struct evbuffer *buf, const char *text)
{
	size_t line = 0, word;

	for (const char *p = text; *p != '\0'; p += word) {
		while (*p == ' ')
			p++;
		word = strcspn(p, " ");
		if (word == 0)
			break;
		if (line > 0 && line + 1 + word > NOTICE_WIDTH) {
			evbuffer_add(buf, "\r\n", 2);
			line = 0;
		} else if (line > 0) {
			evbuffer_add(buf, " ", 1);
			line++;
		}
		evbuffer_add(buf, p, word);
		line += word;
	}
	evbuffer_add(buf, "\r\n", 2);
}

static void add_paragraph(struct evbuffer *buf, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void add_paragraph(struct evbuffer *buf, const char *fmt, ...)
{
	va_list args;
	char *text;

	va_start(args, fmt);
	text = trib_strdup_vprintf(fmt, args);
	va_end(args);
	add_wrapped(buf, text);
	evbuffer_add(buf, "\r\n", 2);
	free(text);
}

/* The notice after its trace header, CRLF line ends: the header fields,
 * then a body saying which account stopped, since when, why, the
 * command that fixes it, that nothing is lost and that it comes once. */
static void notice_add(struct evbuffer *buf, const struct incident *inc,
		       const struct incident_settings *set)
{
	const struct trib_account *a = set->account;
	const char *login = a->login != NULL ? a->login : "";
	char host[256], date[64], since[64];
	char *command = incident_command(set->user, a->name), *to;
	bool ascii;

	host_name(host, sizeof(host));
	rfc5322_now(date, sizeof(date));
	format_utc(inc->since, since, sizeof(since));
	to = strchr(set->user, '@') != NULL
		     ? trib_strdup(set->user)
		     : trib_strdup_printf("%s@%s", set->user, host);
	ascii = is_ascii(login) && is_ascii(inc->reason) && is_ascii(to);
	evbuffer_add_printf(
		buf,
		"From: \"Tributary\" <tributary@%s>\r\n"
		"To: <%s>\r\n"
		"Subject: Mail from your \"%s\" account has stopped: sign in "
		"again\r\n"
		"Date: %s\r\n"
		"Message-ID: <tributary.reauth.%s.%lld@%s>\r\n"
		"Auto-Submitted: auto-generated\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"Content-Transfer-Encoding: %s\r\n"
		"\r\n",
		host, to, a->name, date, a->name, (long long)inc->since, host,
		ascii ? "7bit" : "8bit");
	add_paragraph(buf,
		      "Tributary stopped fetching mail from your \"%s\" "
		      "account (%s, provider %s) on %s: the provider no "
		      "longer accepts its sign-in.",
		      a->name, login, provider_name(a), since);
	add_paragraph(buf, "Reason given: %s",
		      inc->reason[0] != '\0' ? inc->reason : "none");
	add_paragraph(buf, "To sign in again, run this command (or ask your "
			   "administrator to run it):");
	evbuffer_add_printf(buf, "    %s\r\n\r\n", command);
	add_paragraph(buf, "Nothing is lost: your mail waits on the remote "
			   "server, and Tributary fetches it as soon as the "
			   "account is authorized again.");
	add_wrapped(buf, "This message is sent once for this problem.");
	free(to);
	free(command);
}

struct incident_notice *
incident_notice_start(struct trib_loop *loop, const struct incident *inc,
		      const struct incident_settings *set,
		      incident_notice_callback_t *callback, void *context,
		      char **error_r)
{
	struct trib_lmtp_client_settings lmtp_set;
	struct trib_trace_fields fields;
	struct trib_lmtp_message *msg;
	struct incident_notice *n;
	struct evbuffer *buf;
	const char *error;
	char *line;
	size_t len;

	*error_r = NULL;
	memset(&fields, 0, sizeof(fields));
	fields.recipient = set->user;
	fields.account = set->account->name;
	fields.provider = provider_name(set->account);
	fields.folder = INCIDENT_NOTICE_FOLDER;
	fields.uidvalidity = (uint32_t)inc->since;
	fields.uid = 1;
	line = trib_trace_header_build(set->keys, &fields, &len, &error);
	if (line == NULL) {
		*error_r =
			trib_strdup_printf("notice: trace header: %s", error);
		return NULL;
	}
	memset(&lmtp_set, 0, sizeof(lmtp_set));
	lmtp_set.address = set->lmtp;
	lmtp_set.logger = set->logger;
	lmtp_set.reply_timeout_secs = NOTICE_REPLY_TIMEOUT_SECS;
	n = trib_calloc(1, sizeof(*n));
	n->callback = callback;
	n->context = context;
	n->client =
		trib_lmtp_client_create(loop, &lmtp_set, NULL, NULL, &error);
	if (n->client == NULL) {
		*error_r =
			trib_strdup_printf("notice: tributary_lmtp: %s", error);
		free(n);
		free(line);
		return NULL;
	}
	buf = evbuffer_new();
	evbuffer_add(buf, line, len);
	notice_add(buf, inc, set);
	/* the answer comes from the loop, never inside these calls */
	msg = trib_lmtp_message_begin(n->client, set->user,
				      evbuffer_get_length(buf), notice_done, n);
	trib_lmtp_message_write(msg, buf);
	trib_lmtp_message_finish(&msg);
	evbuffer_free(buf);
	free(line);
	return n;
}

void incident_notice_abort(struct incident_notice **_notice)
{
	struct incident_notice *n = *_notice;

	if (n == NULL)
		return;
	*_notice = NULL;
	n->callback = NULL;
	/* the message's callback fires (canceled) and sees no callback */
	trib_lmtp_client_destroy(&n->client);
	free(n);
}
