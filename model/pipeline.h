/* From a user's request to model inputs, as transformers' Idefics3Processor does it, around one
 * opened snapshot: the model, its tokenizer, chat template, image processor settings and
 * image_seq_len, loaded once and shared by every request.
 *
 *   images (RGB) --image processor--> tiles, grid per image
 *   user text --chat template (images first, generation prompt)--> chat prompt   (or a raw one)
 *   chat prompt --<image> expansion by grid--> expanded prompt --tokenizer--> input ids
 *
 * `docqa generate` and the job workers both build their requests here, so a job's answer is
 * exactly what `docqa generate` gives for the same page and prompt.
 */
#ifndef DQ_PIPELINE_H
#define DQ_PIPELINE_H

#include "chat_template.h"
#include "generate.h"
#include "image.h"
#include "image_processor.h"
#include "smolvlm.h"
#include "tokenizer.h"

#include <glib.h>

typedef struct {
    Smolvlm *model;
    DqTokenizer *tok;
    DqChatTemplate *chat;
    DqImageProcessorConfig proc; /* the snapshot's preprocessor_config.json */
    int image_seq_len;           /* image tokens per tile (processor_config.json) */
} SmolvlmPipeline;

SmolvlmPipeline *smolvlm_pipeline_open(const char *snapshot_dir, const SmolvlmOptions *opts,
                                       GError **err);
void smolvlm_pipeline_free(SmolvlmPipeline *p);

typedef struct {
    int n_res;         /* > 0: size.longest_edge = n_res x tile; 0: the snapshot's setting */
    gboolean no_split; /* do_image_splitting off: one tile an image */
} SmolvlmPrepareOptions;

/* One request's model inputs. */
typedef struct {
    DqImageTiles **images; /* [n_images], in prompt order */
    int n_images;
    int32_t *input_ids; /* [n_input_ids], <image> expanded */
    int n_input_ids;
    double preprocess_ms;     /* image processing + templating + tokenization */
    double preprocess_cpu_ms; /* the process's CPU time over the same (clock.h: dq_cpu_ms) */
} SmolvlmPrompt;

/* Builds the inputs for images + either user_text (templated: one user turn, the images first,
 * then the text, then the generation prompt) or raw_prompt (already templated; each "<image>" in
 * it stands for the next image). Exactly one of user_text / raw_prompt is non-NULL. */
gboolean smolvlm_prompt_build(SmolvlmPipeline *p, const DqImage *const *images, int n_images,
                              const char *user_text, const char *raw_prompt,
                              const SmolvlmPrepareOptions *opts, SmolvlmPrompt *out, GError **err);
void smolvlm_prompt_clear(SmolvlmPrompt *prompt);

/* The image processor as smolvlm_prompt_build runs it for these options (dq_image_tiles_free),
 * and a prompt built from such tiles (copied into the prompt): for callers that ask many
 * questions about one image and process it once (the job workers). */
DqImageTiles *smolvlm_image_tiles(SmolvlmPipeline *p, const DqImage *image,
                                  const SmolvlmPrepareOptions *opts, GError **err);
gboolean smolvlm_prompt_build_tiles(SmolvlmPipeline *p, const DqImageTiles *const *tiles,
                                    int n_images, const char *user_text, const char *raw_prompt,
                                    SmolvlmPrompt *out, GError **err);

/* Points a generate request at a built prompt (options from generation_config.json). */
void smolvlm_request_init(SmolvlmPipeline *p, const SmolvlmPrompt *prompt, SmolvlmRequest *req);

#endif
