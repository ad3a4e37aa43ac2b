/* bench-spawn: run one command and report its wall time and rusage.
 *
 * Why not measure from the Python driver: at exec(), Linux folds the
 * high-water RSS of the address space being replaced into the process's
 * maxrss, so a child forked (or vforked, or posix_spawned) from a 40 MB
 * Python process reports at least 40 MB in ru_maxrss. Forked from this
 * small program, a child's peak RSS is its own (this program's ~1 MB is
 * the floor).
 *
 *   bench-spawn RESULT_FILE COMMAND [ARGS...]
 *
 * COMMAND inherits stdin, stdout and stderr. RESULT_FILE gets one JSON
 * line: exit (the exit status, or 128+N for signal N), wall_s, user_s,
 * sys_s and maxrss_kb (wait4() of the child: its own and its waited-for
 * descendants'). Exit: 0 when the result was written, 1 otherwise. */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double bspawn_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double bspawn_tv(const struct timeval *tv)
{
	return tv->tv_sec + tv->tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct rusage ru;
	double t0, t1;
	int status, code;
	pid_t pid;
	FILE *out;

	if (argc < 3) {
		fputs("usage: bench-spawn RESULT_FILE COMMAND [ARGS...]\n",
		      stderr);
		return 64;
	}
	out = fopen(argv[1], "w");
	if (out == NULL) {
		fprintf(stderr, "bench-spawn: %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	t0 = bspawn_now();
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "bench-spawn: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		fclose(out);
		execvp(argv[2], argv + 2);
		fprintf(stderr, "bench-spawn: %s: %s\n", argv[2],
			strerror(errno));
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "bench-spawn: wait4: %s\n",
				strerror(errno));
			return 1;
		}
	}
	t1 = bspawn_now();
	code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	fprintf(out,
		"{\"exit\": %d, \"wall_s\": %.6f, \"user_s\": %.6f, "
		"\"sys_s\": %.6f, \"maxrss_kb\": %ld}\n",
		code, t1 - t0, bspawn_tv(&ru.ru_utime), bspawn_tv(&ru.ru_stime),
		ru.ru_maxrss);
	return fclose(out) == 0 ? 0 : 1;
}
