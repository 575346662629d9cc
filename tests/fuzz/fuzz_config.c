/* libFuzzer target: the snapshot's config.json and generation_config.json, the first two files a
 * user's model directory hands to docqa. The input is config.json, then optionally a NUL byte and
 * generation_config.json. A config the parser accepts must be one the forward pass can run:
 * every size it allocates by is positive, the derived geometry adds up in 64 bits (no int
 * overflow on the way), the heads divide what they split. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = g_malloc(size + 2);
    memcpy(text, data, size);
    text[size] = text[size + 1] = '\0';
    size_t first = strlen(text);
    const char *generation = first < size ? text + first + 1 : NULL;
    SmolvlmConfig c;
    GError *err = NULL;
    if (!smolvlm_config_parse(text, generation, "fuzz", &c, &err)) {
        if (err == NULL || err->message == NULL || strstr(err->message, "fuzz") == NULL)
            abort(); /* every refusal says why, naming the input */
        g_clear_error(&err);
        g_free(text);
        return 0;
    }
    int64_t sf2 = (int64_t)c.scale_factor * c.scale_factor;
    if (c.vision_hidden <= 0 || c.vision_heads <= 0 || c.vision_hidden % c.vision_heads != 0 ||
        c.vision_intermediate <= 0 || c.vision_layers <= 0 || c.vision_channels != 3)
        abort();
    if (c.patch_size <= 0 || c.patches_per_side != c.image_size / c.patch_size ||
        c.patches_per_side <= 0 || c.scale_factor <= 0 || c.patches_per_side % c.scale_factor)
        abort();
    if ((int64_t)c.num_patches != (int64_t)c.patches_per_side * c.patches_per_side ||
        (int64_t)c.tokens_per_tile * sf2 != c.num_patches || c.tokens_per_tile <= 0 ||
        (int64_t)c.connector_in != (int64_t)c.vision_hidden * sf2)
        abort();
    if (c.text_hidden <= 0 || c.text_intermediate <= 0 || c.text_layers <= 0 || c.text_heads <= 0 ||
        c.text_kv_heads <= 0 || c.text_heads % c.text_kv_heads != 0 || c.head_dim <= 0 ||
        c.head_dim % 2 != 0 || c.vocab_size <= 0 || c.max_position_embeddings <= 0)
        abort();
    if (!(c.rms_norm_eps >= 0) || !(c.vision_layer_norm_eps >= 0) || !(c.rope_theta > 0))
        abort();
    if (c.n_eos < 0 || c.n_eos > DQ_MAX_EOS_IDS)
        abort();
    for (int i = 0; i < c.n_eos; i++)
        (void)smolvlm_config_is_eos(&c, c.eos_ids[i]);
    g_free(text);
    return 0;
}
