/* Wall-clock timing and peak resident memory, for the per-stage numbers docqa reports. */
#ifndef DQ_CLOCK_H
#define DQ_CLOCK_H

/* Monotonic milliseconds. */
double dq_now_ms(void);

/* Peak resident set size of this process in MiB (getrusage ru_maxrss). */
double dq_peak_rss_mb(void);

#endif
