#include "clock.h"

#include <sys/resource.h>
#include <time.h>

static int64_t wall_skew_us;

double dq_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double clock_ms(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double dq_cpu_ms(void) {
    return clock_ms(CLOCK_PROCESS_CPUTIME_ID);
}

double dq_thread_cpu_ms(void) {
    return clock_ms(CLOCK_THREAD_CPUTIME_ID);
}

int64_t dq_wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 +
           __atomic_load_n(&wall_skew_us, __ATOMIC_RELAXED);
}

int64_t dq_wall_ms(void) {
    return dq_wall_us() / 1000;
}

void dq_wall_clock_skew_for_test(int64_t ms) {
    __atomic_store_n(&wall_skew_us, ms * 1000, __ATOMIC_RELAXED);
}

double dq_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}
