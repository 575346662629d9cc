/* Prompt expansion as Idefics3Processor.__call__ does it (transformers 4.57).
 *
 * Every "<image>" in the templated prompt stands, in order, for the next image. For image i
 * with split grid (rows, cols) and S = image_seq_len:
 *   split:   for r in 1..rows: for c in 1..cols:
 *                "<fake_token_around_image><row_r_col_c>" + "<image>" * S
 *            "\n" after each row,
 *            then "\n<fake_token_around_image><global-img>" + "<image>" * S
 *                 + "<fake_token_around_image>"
 *   single (rows = cols = 0: no split, or exactly one tile):
 *            "<fake_token_around_image><global-img>" + "<image>" * S + "<fake_token_around_image>"
 * This is string expansion only: whether <row_r_col_c> and <global-img> become one id each
 * (SmolVLM-256M/500M) or ordinary text (SmolVLM-Instruct) is the tokenizer's business.
 */
#ifndef DQ_PROMPT_H
#define DQ_PROMPT_H

#include <glib.h>

/* Idefics3Processor's default when processor_config.json has no image_seq_len. */
#define DQ_DEFAULT_IMAGE_SEQ_LEN 169

typedef struct {
    int rows, cols; /* the image's split grid; 0, 0 for the single-tile form */
} DqImageGrid;

/* image_seq_len from snapshot_dir/processor_config.json (64 for 256M/500M, 81 for
 * SmolVLM-Instruct), DQ_DEFAULT_IMAGE_SEQ_LEN when the file or the field is absent; -1 with err
 * set when the file is malformed or the value is not a positive integer. */
int prompt_image_seq_len_load(const char *snapshot_dir, GError **err);

/* Expands the "<image>" markers of chat_prompt. Fails (DQ_ERR_ARGS) when the number of
 * markers differs from n_images, or a grid is invalid (negative, or only one of rows/cols 0).
 * Returns a g_malloc'd string. */
char *prompt_expand(const char *chat_prompt, const DqImageGrid *grids, int n_images,
                    int image_seq_len, GError **err);

#endif
