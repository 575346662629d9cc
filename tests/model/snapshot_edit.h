/* Snapshots of the tiny model edited for a test. */
#ifndef DQ_TEST_SNAPSHOT_EDIT_H
#define DQ_TEST_SNAPSHOT_EDIT_H

#include <glib.h>

/* A copy of tiny-smolvlm-b512 (4096 positions) whose config.json has each edits[i][0] replaced by
 * edits[i][1] (each must be there once) and whose model.safetensors gets the decoder's biases
 * appended, q, k, v and o_proj's when attn, gate, up and down_proj's when mlp: entry i of bias k
 * of layer l is ((37 i + 11 l + 5 k) % 41 - 20) / 100 (k = 0..6 in that order), as
 * bias_goldens.py makes them. Free with g_free; the folder goes with the test's tmpdir. */
char *dq_test_edited_snapshot(const char *const edits[][2], size_t n_edits, gboolean attn,
                              gboolean mlp);

#endif
