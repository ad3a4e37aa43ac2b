/* imap-auth.c: LOGIN and AUTHENTICATE (SASL through sasl.c), never over
 * an unencrypted connection. */

#include "imap-client-private.h"

#include "alloc.h"
#include "conn.h"
#include "sasl.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct auth_request {
	struct trib_imap_client *client;
	struct trib_sasl_client *sasl;
	struct trib_imap_command_handlers handlers;
	trib_imap_callback_t *callback;
	void *context;
	char *sasl_error; /* what the server's error challenge said */
	bool oauth;	  /* XOAUTH2 or OAUTHBEARER */
};

static void auth_request_free(struct auth_request *req)
{
	trib_sasl_client_destroy(&req->sasl);
	free(req->sasl_error);
	free(req);
}

static void auth_finish(struct auth_request *req,
			const struct trib_imap_reply *reply)
{
	struct trib_imap_client *client = req->client;

	if (reply->status == TRIB_IMAP_STATUS_OK &&
	    client->state == IMAP_STATE_AUTHENTICATING)
		trib_imap_client_set_state(client, IMAP_STATE_AUTHENTICATED);
	else if (client->state == IMAP_STATE_AUTHENTICATING)
		trib_imap_client_set_state(client,
					   IMAP_STATE_NOT_AUTHENTICATED);
	req->callback(reply, req->context);
	auth_request_free(req);
}

static void auth_capability_done(const struct trib_imap_reply *reply,
				 void *context)
{
	struct auth_request *req = context;
	struct trib_imap_reply ok = {
		.status = TRIB_IMAP_STATUS_OK,
		.error_class = TRIB_OK,
		.text = "",
	};

	/* The login itself succeeded; a failed CAPABILITY after it is its
	 * own error. */
	auth_finish(req, reply->status == TRIB_IMAP_STATUS_OK ? &ok : reply);
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct auth_request *req = context;
	struct trib_imap_client *client = req->client;
	struct trib_imap_reply copy = *reply;
	char *error = NULL;

	if (reply->status == TRIB_IMAP_STATUS_OK) {
		bool had_caps = reply->code != NULL &&
				strcasecmp(reply->code, "CAPABILITY") == 0;

		trib_imap_client_set_state(client, IMAP_STATE_AUTHENTICATED);
		if (!had_caps) {
			/* Capabilities change after login (RFC 3501 6.2):
			 * ask before anyone relies on them. */
			static const char *const names[] = { "CAPABILITY",
							     NULL };

			req->handlers = (struct trib_imap_command_handlers){
				.done = auth_capability_done,
				.untagged_names = names,
			};
			trib_imap_client_caps_clear(client);
			trib_imap_client_move_to_front(
				client, trib_imap_client_command(
						client, "CAPABILITY",
						TRIB_IMAP_COMMAND_FLAG_BARRIER,
						&req->handlers, req));
			return;
		}
		auth_finish(req, reply);
		return;
	}
	if (reply->status == TRIB_IMAP_STATUS_NO) {
		/* Credentials refused: retrying the same ones cannot help. */
		copy.error_class = trib_imap_code_error_class(reply->code);
		if (copy.error_class == TRIB_ERR_TEMP && reply->code == NULL)
			copy.error_class = TRIB_ERR_PERM;
		if (req->sasl_error != NULL ||
		    (reply->code != NULL &&
		     strcasecmp(reply->code, "AUTHENTICATIONFAILED") == 0 &&
		     req->oauth)) {
			error = trib_strdup_printf(
				"%s: token rejected: %s%s%s", client->name,
				req->sasl_error != NULL ? req->sasl_error : "",
				req->sasl_error != NULL ? "; " : "",
				reply->error);
			copy.error = error;
		}
	}
	auth_finish(req, &copy);
	free(error);
}

static void auth_continuation(const char *text, void *context)
{
	struct auth_request *req = context;
	const char *error;
	char *response = NULL;

	if (req->sasl == NULL) {
		/* LOGIN never gets "+": the server is confused. */
		trib_imap_client_send_raw(req->client, "*");
		return;
	}
	switch (trib_sasl_client_step(req->sasl, text, &response, &error)) {
	case TRIB_SASL_STEP_CONTINUE:
		break;
	case TRIB_SASL_STEP_SERVER_ERROR:
		free(req->sasl_error);
		req->sasl_error = trib_strdup(error);
		break;
	case TRIB_SASL_STEP_FAILED:
		free(req->sasl_error);
		req->sasl_error = trib_strdup(error);
		break;
	}
	if (req->client->trace)
		trib_log(req->client->logger, TRIB_LOG_DEBUG, "%s: C: %s",
			 req->client->name,
			 response[0] == '\0' ? "(empty line)" : "<redacted>");
	trib_conn_write(req->client->conn, response, strlen(response));
	trib_conn_write(req->client->conn, "\r\n", 2);
	trib_secret_free(&response);
}

static struct auth_request *auth_request_new(struct trib_imap_client *client,
					     trib_imap_callback_t *callback,
					     void *context)
{
	struct auth_request *req = trib_calloc(1, sizeof(*req));

	req->client = client;
	req->callback = callback;
	req->context = context;
	req->handlers.done = auth_done;
	req->handlers.continuation = auth_continuation;
	return req;
}

/* Queue the auth command, or fail it (at flush time, so the callback
 * never runs inside the caller's call). */
static void auth_queue(struct trib_imap_client *client,
		       struct auth_request *req, const char *line,
		       const char *log_line, const char *refusal)
{
	struct trib_imap_command *cmd;

	cmd = trib_imap_client_command(client, line,
				       TRIB_IMAP_COMMAND_FLAG_BARRIER,
				       &req->handlers, req);
	cmd->log_line = trib_strdup(log_line);
	if (refusal != NULL && cmd->fail_error == NULL) {
		cmd->fail_class = TRIB_ERR_PERM;
		cmd->fail_error = trib_strdup(refusal);
	}
	if (refusal == NULL)
		trib_imap_client_set_state(client, IMAP_STATE_AUTHENTICATING);
}

static const char *auth_refusal(struct trib_imap_client *client)
{
	if (client->state != IMAP_STATE_NOT_AUTHENTICATED)
		return "not connected, or already logged in";
	if (!trib_imap_client_is_tls(client))
		return "refusing to send credentials over an unencrypted "
		       "connection";
	return NULL;
}

void trib_imap_client_login(struct trib_imap_client *client,
			    const char *username, const char *password,
			    trib_imap_callback_t *callback, void *context)
{
	struct auth_request *req = auth_request_new(client, callback, context);
	char quser[512], qpass[1024];
	const char *refusal = auth_refusal(client);
	char *line, *log_line;

	if (refusal == NULL &&
	    trib_imap_client_has_capability(client, "LOGINDISABLED"))
		refusal = "server disables LOGIN (LOGINDISABLED)";
	if (refusal == NULL &&
	    (trib_imap_quote(quser, sizeof(quser), username) < 0 ||
	     trib_imap_quote(qpass, sizeof(qpass), password) < 0))
		refusal = "user name or password holds characters LOGIN "
			  "cannot send (use AUTHENTICATE PLAIN)";
	if (refusal != NULL) {
		quser[0] = '\0';
		qpass[0] = '\0';
	}
	line = trib_strdup_printf("LOGIN %s %s", quser, qpass);
	log_line = trib_strdup_printf("LOGIN %s <redacted>", quser);
	auth_queue(client, req, line, log_line, refusal);
	OPENSSL_cleanse(qpass, sizeof(qpass));
	trib_secret_free(&line);
	free(log_line);
}

void trib_imap_client_authenticate(struct trib_imap_client *client,
				   const char *mech_name, const char *username,
				   const char *secret,
				   trib_imap_callback_t *callback,
				   void *context)
{
	struct auth_request *req = auth_request_new(client, callback, context);
	struct trib_sasl_params params = {
		.username = username,
		.secret = secret,
		.host = client->host,
		.port = client->port,
	};
	const char *refusal = auth_refusal(client);
	enum trib_sasl_mech mech;
	char cap[64];
	char *line = NULL, *log_line, *ir = NULL;
	const char *error;

	if (refusal == NULL && !trib_sasl_mech_parse(mech_name, &mech))
		refusal = "unknown SASL mechanism";
	snprintf(cap, sizeof(cap), "AUTH=%s", mech_name);
	if (refusal == NULL && !trib_imap_client_has_capability(client, cap)) {
		snprintf(client->error, sizeof(client->error),
			 "server does not offer %s", cap);
		refusal = client->error;
	}
	if (refusal == NULL) {
		req->oauth = mech != TRIB_SASL_PLAIN;
		req->sasl = trib_sasl_client_create(mech, &params, &error);
		if (req->sasl == NULL)
			refusal = error;
	}
	if (refusal == NULL &&
	    trib_imap_client_has_capability(client, "SASL-IR")) {
		ir = trib_sasl_client_initial_response(req->sasl);
		line = trib_strdup_printf("AUTHENTICATE %s %s",
					  trib_sasl_mech_name(mech), ir);
		trib_secret_free(&ir);
	} else {
		line = trib_strdup_printf("AUTHENTICATE %s", mech_name);
	}
	log_line = trib_strdup_printf(
		"AUTHENTICATE %s%s", mech_name,
		strchr(line, ' ') != strrchr(line, ' ') ? " <redacted>" : "");
	auth_queue(client, req, line, log_line, refusal);
	trib_secret_free(&line);
	free(log_line);
}
