/* Process-wide memory policy for docqa's commands (and the benchmarks that stand for them). */
#ifndef DQ_MEMORY_H
#define DQ_MEMORY_H

#include <glib.h>

/* Keeps page-sized buffers in the heap once freed (glibc; elsewhere nothing, FALSE). Every page
 * allocates and frees buffers of a page's size (15-20 MB: the decoded page, its aligned copy,
 * its tiles; a rendered PDF page), which glibc by default maps afresh or trims away on free,
 * so that each page paid again for faulting in zeroed memory. TRUE when the policy took. */
gboolean dq_memory_keep_page_buffers(void);

#endif
