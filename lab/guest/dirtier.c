/* Dirty a chosen amount of guest memory at a chosen rate, for migration tests.
 * usage: dirtier MIB RATE_MB_PER_S
 * Writes one byte per 4 KiB page, walking a MIB-sized buffer round and round,
 * so the page dirty rate seen by the hypervisor is about RATE MB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096UL

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: dirtier MIB RATE_MB_PER_S\n");
        return 2;
    }
    unsigned long mib = strtoul(argv[1], NULL, 10);
    double rate = strtod(argv[2], NULL);
    unsigned long pages = mib * 1024UL * 1024UL / PAGE;
    if (pages == 0 || rate <= 0) return 0;
    unsigned char *buf = malloc(pages * PAGE);
    if (!buf) { perror("malloc"); return 1; }
    memset(buf, 1, pages * PAGE);
    double pages_per_s = rate * 1e6 / PAGE;
    const double tick = 0.01;                 /* 10 ms slices */
    /* Each visit to a page writes the number of completed passes, so its content changes on
     * every visit: QEMU's dirty bitmap sees any write, but libvirt's page-sampling dirty-rate
     * calculation hashes page contents and would miss a rewrite of the same value. */
    unsigned long idx = 0, pass = 1;
    double next = now();
    for (;;) {
        unsigned long todo = (unsigned long)(pages_per_s * tick);
        if (todo == 0) todo = 1;
        for (unsigned long i = 0; i < todo; i++) {
            buf[idx * PAGE] = (unsigned char)pass;
            if (++idx == pages) {
                idx = 0;
                pass++;
            }
        }
        next += tick;
        double d = next - now();
        if (d > 0) {
            struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };
            nanosleep(&ts, NULL);
        } else if (d < -tick) {
            /* Fell behind (vCPU throttled or descheduled): drop the missed slices instead of
             * bursting, like a CPU-bound workload that simply gets less done when throttled. */
            next = now();
        }
    }
}
