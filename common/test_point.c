#include "test_point.h"
#include "text.h"

#include <glib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static const int held_signals[] = {SIGINT, SIGTERM, SIGHUP};
static volatile sig_atomic_t held_by;

static void on_held_signal(int sig) {
    held_by = sig;
}

void dq_test_point(const char *point) {
    static gint used;
    const char *want = g_getenv("DOCQA_TEST_PAUSE_AT");
    if (want == NULL || strcmp(want, point) != 0 || !g_atomic_int_compare_and_exchange(&used, 0, 1))
        return;
    struct sigaction sa, saved[G_N_ELEMENTS(held_signals)];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_held_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < G_N_ELEMENTS(held_signals); i++)
        sigaction(held_signals[i], &sa, &saved[i]);
    dq_print_line(stderr, "docqa: test: paused at %s (pid %d)", point, (int)getpid());
    fflush(stderr);
    /* Polled rather than pause()d: in a process with threads (a worker's heartbeat) the signal
     * may run its handler on another thread, and this one would sleep on. */
    while (held_by == 0)
        g_usleep(1000);
    for (size_t i = 0; i < G_N_ELEMENTS(held_signals); i++)
        sigaction(held_signals[i], &saved[i], NULL);
    raise(held_by);
}
