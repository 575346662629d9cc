/* Device names ("cpu", "cpu-ref", "cuda", "cuda:I") to backends: the one place that knows them,
 * used by smolvlm_open and everything that takes a --device option. */
#include "backend_cuda.h"

#include "dq_error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

gboolean dq_device_parse(const char *device, int *cuda_index, GError **err) {
    if (device == NULL || strcmp(device, "cpu") == 0) {
        *cuda_index = -1; /* the fast CPU backend */
        return TRUE;
    }
    if (strcmp(device, "cpu-ref") == 0) {
        *cuda_index = -2; /* the float32 reference, the oracle the others are tested against */
        return TRUE;
    }
    if (strcmp(device, "cuda") == 0) {
        *cuda_index = 0;
        return TRUE;
    }
    if (strncmp(device, "cuda:", 5) == 0 && device[5] >= '0' && device[5] <= '9') {
        char *end = NULL;
        errno = 0;
        long i = strtol(device + 5, &end, 10);
        if (errno == 0 && *end == '\0' && i >= 0 && i < 1024) {
            *cuda_index = (int)i;
            return TRUE;
        }
    }
    return dq_fail(err, DQ_ERR_ARGS, "unknown device '%s' (expected cpu, cpu-ref, cuda or cuda:I)",
                   device);
}

DqBackend *dq_backend_open_device(const char *device, GError **err) {
    int index;
    if (!dq_device_parse(device, &index, err))
        return NULL;
    /* Set: dq_device_parse fails only through dq_fail, which the analyzer cannot see returns
     * FALSE. */
    // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
    if (index == -2)
        return dq_backend_cpu_new(err);
    return index < 0 ? dq_backend_cpu_fast_new(err) : dq_backend_cuda_new(index, err);
}
