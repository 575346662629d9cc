/* Preloaded by test_cli_omp: SIGTERM to itself as docqa's restarted process (the one that
 * carries DOCQA_OMP_DEFAULT_NAME) loads, before its main has installed docqa's handlers, where
 * a `systemctl stop` just after the start lands. */
#include <signal.h>
#include <stdlib.h>

__attribute__((constructor)) static void sigterm_at_restart(void) {
    if (getenv("DOCQA_OMP_DEFAULT_NAME") != NULL && getenv("DQ_TEST_SIGTERM_AT_RESTART") != NULL)
        raise(SIGTERM);
}
