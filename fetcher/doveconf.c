/* doveconf.c: run doveconf, read its normalized output. */

#include "doveconf.h"

#include "alloc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DOVECONF_OUTPUT_MAX (1024 * 1024)

struct capture {
	char *data;
	size_t len;
	bool truncated;
};

static void capture_add(struct capture *c, const char *buf, size_t n)
{
	if (c->len + n > DOVECONF_OUTPUT_MAX) {
		c->truncated = true;
		return;
	}
	c->data = trib_realloc(c->data, c->len + n + 1);
	memcpy(c->data + c->len, buf, n);
	c->len += n;
	c->data[c->len] = '\0';
}

/* Read both pipes to EOF. */
static void read_pipes(int out_fd, int err_fd, struct capture *out,
		       struct capture *err)
{
	struct pollfd fds[2] = { { out_fd, POLLIN, 0 }, { err_fd, POLLIN, 0 } };
	struct capture *caps[2] = { out, err };
	char buf[4096];
	int open_fds = 2;

	while (open_fds > 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (fds[i].fd < 0 || fds[i].revents == 0)
				continue;
			n = read(fds[i].fd, buf, sizeof(buf));
			if (n > 0) {
				capture_add(caps[i], buf, (size_t)n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			fds[i].fd = -1;
			open_fds--;
		}
	}
}

static int run_doveconf(const char *bin, const char *config,
			struct capture *out, struct capture *err,
			char **error_r)
{
	const char *argv[8];
	int out_pipe[2], err_pipe[2], status, n = 0;
	pid_t pid;

	argv[n++] = bin;
	argv[n++] = "-P";
	if (config != NULL) {
		argv[n++] = "-c";
		argv[n++] = config;
	}
	argv[n++] = "base_dir";
	argv[n++] = "plugin";
	argv[n] = NULL;

	if (pipe(out_pipe) < 0 || pipe(err_pipe) < 0) {
		*error_r = trib_strdup_printf("pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		*error_r = trib_strdup_printf("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		dup2(out_pipe[1], STDOUT_FILENO);
		dup2(err_pipe[1], STDERR_FILENO);
		close(out_pipe[0]);
		close(err_pipe[0]);
		close(out_pipe[1]);
		close(err_pipe[1]);
		execvp(bin, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(out_pipe[1]);
	close(err_pipe[1]);
	read_pipes(out_pipe[0], err_pipe[0], out, err);
	close(out_pipe[0]);
	close(err_pipe[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *msg = err->data != NULL ? err->data : "";
		size_t len = strcspn(msg, "\n");

		*error_r = trib_strdup_printf(
			"%s failed (exit %d): %.*s", bin,
			WIFEXITED(status) ? WEXITSTATUS(status) : -1, (int)len,
			msg);
		return -1;
	}
	if (out->truncated) {
		*error_r = trib_strdup_printf("%s printed more than %d bytes",
					      bin, DOVECONF_OUTPUT_MAX);
		return -1;
	}
	return 0;
}

static void add_pair(struct doveconf *conf, const char *key, size_t klen,
		     const char *value)
{
	conf->pairs = trib_realloc(conf->pairs,
				   (conf->count * 2 + 4) * sizeof(char *));
	conf->pairs[conf->count * 2] = trib_strndup(key, klen);
	conf->pairs[conf->count * 2 + 1] = trib_strdup(value);
	conf->count++;
	conf->pairs[conf->count * 2] = NULL;
	conf->pairs[conf->count * 2 + 1] = NULL;
}

/* "name = value" lines; "plugin {" ... "}" holds the plugin settings. */
static int parse_output(char *text, struct doveconf *conf, char **error_r)
{
	bool in_plugin = false;
	char *line, *next, *eq;

	for (line = text; line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		while (*line == ' ')
			line++;
		if (*line == '\0')
			continue;
		if (strcmp(line, "plugin {") == 0) {
			in_plugin = true;
			continue;
		}
		if (strcmp(line, "}") == 0) {
			in_plugin = false;
			continue;
		}
		eq = strstr(line, " =");
		if (eq == NULL) {
			*error_r = trib_strdup_printf(
				"doveconf printed an unexpected line: %.80s",
				line);
			return -1;
		}
		if (in_plugin) {
			add_pair(conf, line, (size_t)(eq - line),
				 eq[2] == ' ' ? eq + 3 : eq + 2);
		} else if (strncmp(line, "base_dir =", 10) == 0) {
			free(conf->base_dir);
			conf->base_dir =
				trib_strdup(eq[2] == ' ' ? eq + 3 : eq + 2);
		}
	}
	return 0;
}

int doveconf_load(const char *doveconf_bin, const char *config,
		  struct doveconf *conf_r, char **error_r)
{
	struct capture out = { NULL, 0, false }, err = { NULL, 0, false };
	int ret;

	memset(conf_r, 0, sizeof(*conf_r));
	conf_r->pairs = trib_calloc(2, sizeof(char *));
	ret = run_doveconf(doveconf_bin != NULL ? doveconf_bin : "doveconf",
			   config, &out, &err, error_r);
	if (ret == 0)
		ret = parse_output(out.data != NULL ? out.data : "", conf_r,
				   error_r);
	if (ret == 0 && conf_r->base_dir == NULL)
		conf_r->base_dir = trib_strdup("/run/dovecot");
	/* plugin settings may hold secrets */
	if (out.data != NULL)
		OPENSSL_cleanse(out.data, out.len);
	free(out.data);
	free(err.data);
	if (ret < 0)
		doveconf_free(conf_r);
	return ret;
}

void doveconf_layer(struct doveconf *conf, struct trib_settings_layer *layer_r)
{
	trib_settings_pairs_free(&conf->layer_pairs);
	trib_settings_pairs_layer(&conf->layer_pairs,
				  (const char *const *)conf->pairs, layer_r);
}

void doveconf_free(struct doveconf *conf)
{
	for (unsigned int i = 0; i < conf->count * 2; i++)
		trib_secret_free(&conf->pairs[i]);
	free(conf->pairs);
	free(conf->base_dir);
	trib_settings_pairs_free(&conf->layer_pairs);
	memset(conf, 0, sizeof(*conf));
}
