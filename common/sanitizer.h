#ifndef DQ_SANITIZER_H
#define DQ_SANITIZER_H

/* DQ_UNDER_ASAN: built with AddressSanitizer (-DDOCQA_SANITIZE=ON, the fuzz builds). */
#if defined(__SANITIZE_ADDRESS__)
#define DQ_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DQ_UNDER_ASAN 1
#endif
#endif

#ifdef DQ_UNDER_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* Our worker processes leave by _exit (their parent's atexit handlers are not theirs), which
 * skips LeakSanitizer's check at exit: they call this first, so that what they leak is reported
 * (and kills them) as in any other process. Nothing outside sanitizer builds. */
static inline void dq_sanitizer_check_leaks(void) {
#ifdef DQ_UNDER_ASAN
    __lsan_do_leak_check();
#endif
}

#endif
