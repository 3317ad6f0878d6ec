/*
 * codi-init: the init `codi-adapter run` always runs under (src/run/pid1.ts), as PID 1 or not. Node
 * cannot make itself a child subreaper (prctl has no binding), and a process that is SIGKILLed can
 * clean up nothing, so the part of `run` that must outlive everything it started is this program:
 *   - it marks itself a child subreaper: every process below it whose parent dies (a daemon that
 *     double-forked, a `setsid` child of the app) is reparented to it, not to PID 1, and reaped here;
 *   - it runs its arguments as its one child, with CODI_INIT_PID set to its own pid (so `run` knows
 *     which process adopts its orphans) and a parent-death signal of SIGTERM (if this program dies,
 *     `run` stops gracefully);
 *   - it passes on the signals a container receives (TERM, INT, HUP, QUIT, USR1, USR2, WINCH), and
 *     treats its own parent's death as a SIGTERM (the parent-death signal it asks for itself);
 *   - when that child has exited, whatever is still below it (whatever `run` did not stop, or
 *     everything, if `run` was SIGKILLed) is SIGKILLed and reaped before it exits, so no descendant
 *     outlives it;
 *   - it exits with the child's status (128 + signal number when the child was killed).
 * usage: codi-init <command> [args...]
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long the final sweep may take: a process stuck in the kernel (D state) cannot die at once. */
#define SWEEP_MS 5000

static int forwarded(int sig) {
  switch (sig) {
  case SIGTERM: case SIGINT: case SIGHUP: case SIGQUIT: case SIGUSR1: case SIGUSR2: case SIGWINCH:
    return 1;
  default:
    return 0;
  }
}

/* The parent pid of `pid` from /proc/<pid>/stat (the field after the state, past the command name). */
static pid_t parent_of(const char *pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *close = strrchr(buf, ')');
  if (!close) return -1;
  char state;
  int ppid;
  if (sscanf(close + 1, " %c %d", &state, &ppid) != 2) return -1;
  return (pid_t)ppid;
}

/* SIGKILLs every process whose parent is this one; returns how many it found (-1 without /proc). */
static int kill_children(void) {
  DIR *proc = opendir("/proc");
  if (!proc) return -1;
  pid_t self = getpid();
  int found = 0;
  struct dirent *e;
  while ((e = readdir(proc)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    if (parent_of(e->d_name) != self) continue;
    kill((pid_t)atoi(e->d_name), SIGKILL);
    found++;
  }
  closedir(proc);
  return found;
}

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/*
 * Kills and reaps everything still below this process. Killing a child orphans its own children,
 * which the kernel reparents here (we are their subreaper): each round finds the next generation,
 * until nothing is left to wait for.
 */
static void sweep(void) {
  long deadline = now_ms() + SWEEP_MS;
  for (;;) {
    int found = kill_children();
    for (;;) {
      /* without /proc nothing more can be found: reap what has ended and leave */
      pid_t pid = waitpid(-1, NULL, WNOHANG);
      if (pid < 0 && errno == ECHILD && found <= 0) return;
      if (pid <= 0) break;
    }
    if (found < 0) return;
    if (now_ms() > deadline) {
      fprintf(stderr, "codi-init: processes below it did not die within %d ms; leaving them\n", SWEEP_MS);
      return;
    }
    struct timespec pause = {0, 10 * 1000000L};
    nanosleep(&pause, NULL);
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

  /* Our parent's death arrives as SIGTERM (taken below like any other); a parent already gone is the same. */
  pid_t parent = getppid();
  int orphaned = 0;
  if (parent > 1) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    orphaned = getppid() != parent;
  }

  pid_t self = getpid();
  pid_t child = fork();
  if (child < 0) {
    perror("codi-init: fork");
    return 3;
  }
  if (child == 0) {
    /* if we die, the child is asked to stop (it is reparented to whatever is above us) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != self) _exit(128 + SIGTERM);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)self);
    setenv("CODI_INIT_PID", pid, 1);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "codi-init: cannot execute %s: %s\n", argv[1], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  if (orphaned) kill(child, SIGTERM);

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&all, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      perror("codi-init: sigwaitinfo");
      kill(child, SIGKILL);
      sweep();
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
      sweep();
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    }
  }
}
