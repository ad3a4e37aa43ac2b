#ifndef TRIB_TLS_H
#define TRIB_TLS_H

/* tls.h: client TLS policy on OpenSSL.
 *
 * A trib_tls_ctx is an SSL_CTX configured the one way Tributary connects:
 * TLS 1.2 or newer, the peer's certificate verified against the system
 * store or a configured CA file (SSL_VERIFY_PEER), and
 * SSL_OP_IGNORE_UNEXPECTED_EOF (IMAP and LMTP framing detect truncation
 * themselves). Each SSL made from it checks the host name
 * (SSL_set1_host) or the IP literal (X509_VERIFY_PARAM_set1_ip_asc) and
 * sends SNI only for names.
 *
 * verify = false is only ever set from one account's own setting, by
 * name; there is no global switch. */

#include <stdbool.h>

typedef struct ssl_st SSL;
struct trib_tls_ctx;

struct trib_tls_settings {
	/* PEM file of trusted CAs; NULL = the system store. */
	const char *ca_file;
	/* Verify the certificate and host name (default true). */
	bool verify;
};

struct trib_tls_ctx *trib_tls_ctx_create(const struct trib_tls_settings *set,
					 const char **error_r);
void trib_tls_ctx_destroy(struct trib_tls_ctx **ctx);

/* A new client SSL for host (a name or an IP literal). The caller owns
 * it (SSL_free, usually through BEV_OPT_CLOSE_ON_FREE). */
SSL *trib_tls_ssl_new(struct trib_tls_ctx *ctx, const char *host,
		      const char **error_r);

/* After a failed handshake: why, in one line, e.g. "certificate verify
 * failed: certificate has expired". Also drains OpenSSL's error queue. */
const char *trib_tls_failure_reason(SSL *ssl, char *buf, unsigned int size);

/* After the handshake: "TLSv1.3 TLS_AES_256_GCM_SHA384". */
const char *trib_tls_describe(SSL *ssl, char *buf, unsigned int size);

#endif
