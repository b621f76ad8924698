/* reaper COMMAND [ARG...]: runs COMMAND (a lab host's libvirtd) as its child and reaps, at once, every process
 * that ends below it.
 *
 * libvirtd starts each QEMU as a daemon: QEMU's parent exits and QEMU is handed to the nearest "child
 * subreaper", else to PID 1. On a real host PID 1 (systemd) reaps a QEMU that ended at once; on this machine
 * PID 1 reaps only now and then (about once a second), and libvirt waits until the QEMU it stopped is gone
 * from the process table: every `virsh destroy` and every migration's last step (the source QEMU stopped)
 * waited up to a second more, and the moves that overlapped ended together, at PID 1's next sweep. As the
 * subreaper of its host, this reaps QEMUs as systemd would. Static, so that it runs on every lab stack.
 *
 * It exits with COMMAND's status once COMMAND and every process handed to it have ended. */
#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: reaper COMMAND [ARG...]\n");
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("reaper: prctl(PR_SET_CHILD_SUBREAPER)");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("reaper: fork");
        return 1;
    }
    if (child == 0) {
        execvp(argv[1], argv + 1);
        perror("reaper: exec");
        _exit(127);
    }
    int code = 0;
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return code; /* ECHILD: nothing left below */
        }
        if (pid == child)
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
}
