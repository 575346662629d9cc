/* Built when the SmolVLM engine (model/) is not part of this build yet: `docqa run` then says so
 * instead of pretending. jobs/answerer_smolvlm.c replaces this file once the engine exists. */
#include "answerer.h"

#include "dq_error.h"

DqAnswerer *dq_answerer_open_smolvlm(const char *model_dir, const DqSmolvlmAnswererOptions *opts,
                                     GError **err) {
    (void)opts;
    dq_fail(err, DQ_ERR_UNSUPPORTED,
            "%s: this docqa was built without the SmolVLM engine (model/ is incomplete), so it "
            "cannot answer questions yet",
            model_dir);
    return NULL;
}
