/*
 * codi-init: what `codi-adapter run` needs from an init when it finds itself PID 1 (a container started
 * without one). Node reaps only the children it spawned; an orphan reparented to PID 1 would stay a
 * zombie. So bin/run.js, as PID 1, starts `run` under this program, which
 *   - runs its arguments as its one child,
 *   - passes on the signals a container receives (TERM, INT, HUP, QUIT, USR1, USR2, WINCH),
 *   - reaps every process that ends up as its child (it is PID 1's child and marks itself a child
 *     subreaper, so orphans below it are reparented to it, not to PID 1),
 *   - exits with the child's status (128 + signal number when the child was killed).
 * usage: codi-init <command> [args...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int forwarded(int sig) {
  switch (sig) {
  case SIGTERM: case SIGINT: case SIGHUP: case SIGQUIT: case SIGUSR1: case SIGUSR2: case SIGWINCH:
    return 1;
  default:
    return 0;
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: codi-init <command> [args...]\n");
    return 2;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) perror("codi-init: prctl(PR_SET_CHILD_SUBREAPER)");

  /* Every signal is taken with sigwaitinfo below; the child gets the mask it would have had without us. */
  sigset_t all, previous;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &previous);

  pid_t child = fork();
  if (child < 0) {
    perror("codi-init: fork");
    return 3;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &previous, NULL);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "codi-init: cannot execute %s: %s\n", argv[1], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&all, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      perror("codi-init: sigwaitinfo");
      kill(child, SIGKILL);
      return 3;
    }
    if (forwarded(sig)) {
      kill(child, sig);
      continue;
    }
    if (sig != SIGCHLD) continue;
    /* SIGCHLD is not queued: one delivery may stand for several exits, so reap until nothing is left. */
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid != child) continue;
      /* Orphans still running are reparented on (as PID 1's child, to PID 1: run's own children are
         already stopped by then; whatever the app left behind ends with the container). */
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    }
  }
}
