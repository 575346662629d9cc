/* The CUDA backend's entry points in a build without CUDA (no nvcc at configure time): the
 * same functions, failing with a message that says so, so that callers need no #ifdef. */
#include "backend_cuda.h"

#include "dq_error.h"

#include <string.h>

DqBackend *dq_backend_cuda_new(int device, GError **err) {
    dq_fail(err, DQ_ERR_DEVICE,
            "cuda:%d: docqa was built without CUDA (configured with no nvcc found or with "
            "DOCQA_CUDA=OFF; install the CUDA toolkit and rebuild, or use --device cpu)",
            device);
    return NULL;
}

gboolean dq_backend_is_cuda(const DqBackend *be) {
    return FALSE;
}

gboolean dq_backend_cuda_check(DqBackend *be, GError **err) {
    return TRUE;
}

int dq_cuda_device_count(char **why) {
    if (why != NULL)
        *why = g_strdup("docqa was built without CUDA");
    return 0;
}

void dq_backend_cuda_set_graphs(DqBackend *be, gboolean on) {}

gboolean dq_backend_cuda_graph_stats(DqBackend *be, DqCudaGraphStats *out) {
    memset(out, 0, sizeof *out);
    return FALSE;
}
