/* Wall-clock timing and peak resident memory, for the per-stage numbers docqa reports; the
 * machine's clock, for leases. */
#ifndef DQ_CLOCK_H
#define DQ_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds. */
double dq_now_ms(void);

/* CPU time of this process, all its threads, in milliseconds: beside dq_now_ms, what a stage
 * cost where other work shares the cores (its wall time then grows, its CPU time hardly). */
double dq_cpu_ms(void);
/* CPU time of the calling thread, in milliseconds. */
double dq_thread_cpu_ms(void);

/* Unix time by this machine's clock, in microseconds and milliseconds: what a worker stamps its
 * leases with (the PostgreSQL store measures the server's clock against this one). */
int64_t dq_wall_us(void);
int64_t dq_wall_ms(void);

/* Tests: moves this process's dq_wall_* by `ms` from now on, standing for a machine whose clock
 * is off by that much. 0 puts it back. */
void dq_wall_clock_skew_for_test(int64_t ms);

/* Peak resident set size of this process in MiB (getrusage ru_maxrss). */
double dq_peak_rss_mb(void);

#endif
