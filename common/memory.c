#include "memory.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

gboolean dq_memory_keep_page_buffers(void) {
#ifdef __GLIBC__
    /* Both are needed: buffers up to 32 MB (glibc's largest mmap threshold) from the heap, and
     * up to 512 MB of free heap kept rather than trimmed (a GPU worker's 8 preparing threads
     * hold about 60 MB each). Larger buffers (KV caches, the model's scratch) are still mapped
     * on their own. scripts/bench-prep.sh: 15 -> 22-24 pages/s a thread, 32 -> 44 on two. */
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1;
#else
    return FALSE;
#endif
}
