/* tls.c: OpenSSL client context and per-connection SSL setup. */

#include "tls.h"

#include "alloc.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct trib_tls_ctx {
	SSL_CTX *ssl_ctx;
	bool verify;
	char error[256];
};

static const char *openssl_error(char *buf, size_t size, const char *what)
{
	unsigned long err = ERR_get_error();
	char detail[200];

	if (err == 0) {
		snprintf(buf, size, "%s", what);
	} else {
		ERR_error_string_n(err, detail, sizeof(detail));
		snprintf(buf, size, "%s: %s", what, detail);
	}
	ERR_clear_error();
	return buf;
}

struct trib_tls_ctx *trib_tls_ctx_create(const struct trib_tls_settings *set,
					 const char **error_r)
{
	static char error[512];
	struct trib_tls_ctx *ctx;
	SSL_CTX *ssl_ctx;

	ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (ssl_ctx == NULL) {
		*error_r = openssl_error(error, sizeof(error),
					 "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF |
					     SSL_OP_NO_COMPRESSION |
					     SSL_OP_NO_RENEGOTIATION);
	if (set->ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ssl_ctx, set->ca_file,
						  NULL) != 1) {
			char what[300];

			snprintf(what, sizeof(what), "cannot load CA file %s",
				 set->ca_file);
			*error_r = openssl_error(error, sizeof(error), what);
			SSL_CTX_free(ssl_ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ssl_ctx) != 1) {
		*error_r = openssl_error(error, sizeof(error),
					 "cannot load the system CA store");
		SSL_CTX_free(ssl_ctx);
		return NULL;
	}
	SSL_CTX_set_verify(
		ssl_ctx, set->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);

	ctx = trib_calloc(1, sizeof(*ctx));
	ctx->ssl_ctx = ssl_ctx;
	ctx->verify = set->verify;
	return ctx;
}

void trib_tls_ctx_destroy(struct trib_tls_ctx **ctx)
{
	if (*ctx == NULL)
		return;
	SSL_CTX_free((*ctx)->ssl_ctx);
	free(*ctx);
	*ctx = NULL;
}

static bool host_is_ip_literal(const char *host)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, addr) == 1 ||
	       inet_pton(AF_INET6, host, addr) == 1;
}

SSL *trib_tls_ssl_new(struct trib_tls_ctx *ctx, const char *host,
		      const char **error_r)
{
	SSL *ssl = SSL_new(ctx->ssl_ctx);
	bool ok;

	if (ssl == NULL) {
		*error_r = openssl_error(ctx->error, sizeof(ctx->error),
					 "cannot create a TLS session");
		return NULL;
	}
	if (host_is_ip_literal(host)) {
		/* No SNI for addresses (RFC 6066 3). */
		ok = !ctx->verify || X509_VERIFY_PARAM_set1_ip_asc(
					     SSL_get0_param(ssl), host) == 1;
	} else {
		ok = SSL_set_tlsext_host_name(ssl, host) == 1 &&
		     (!ctx->verify || SSL_set1_host(ssl, host) == 1);
	}
	if (!ok) {
		*error_r = openssl_error(ctx->error, sizeof(ctx->error),
					 "cannot set the TLS host name");
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

const char *trib_tls_failure_reason(SSL *ssl, char *buf, unsigned int size)
{
	long verify = SSL_get_verify_result(ssl);
	unsigned long err = ERR_peek_last_error();

	if (verify != X509_V_OK) {
		snprintf(buf, size, "certificate verify failed: %s",
			 X509_verify_cert_error_string(verify));
		ERR_clear_error();
		return buf;
	}
	if (err != 0) {
		char detail[200];

		ERR_error_string_n(err, detail, sizeof(detail));
		snprintf(buf, size, "TLS handshake failed: %s", detail);
		ERR_clear_error();
		return buf;
	}
	snprintf(buf, size, "TLS handshake failed");
	return buf;
}

const char *trib_tls_describe(SSL *ssl, char *buf, unsigned int size)
{
	snprintf(buf, size, "%s %s", SSL_get_version(ssl),
		 SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
	return buf;
}
