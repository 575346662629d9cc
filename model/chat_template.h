/* The SmolVLM chat template, rendered without a Jinja engine.
 *
 * transformers renders `processor.apply_chat_template(messages, add_generation_prompt=True)`
 * with Jinja. docqa only ever sends one user turn (N images, then the text), so it recognises
 * the template text that SmolVLM snapshots carry (compared structurally: whitespace and quote
 * style inside {{ }} / {% %} tags do not matter) and renders that turn directly:
 *
 *   <|im_start|>User:<image><image>TEXT<end_of_utterance>\nAssistant:     (N > 0 images)
 *   <|im_start|>User: TEXT<end_of_utterance>\nAssistant:                  (text only)
 *
 * ("User:" has no space when the first content item is an image; no space after "Assistant:".)
 * Any other template is refused with DQ_ERR_UNSUPPORTED naming the file it came from.
 *
 * The template is looked up where the processor finds it: chat_template.jinja, then
 * chat_template.json ("chat_template"), then tokenizer_config.json ("chat_template").
 */
#ifndef DQ_CHAT_TEMPLATE_H
#define DQ_CHAT_TEMPLATE_H

#include <glib.h>

typedef struct DqChatTemplate DqChatTemplate;

DqChatTemplate *chat_template_load(const char *snapshot_dir, GError **err);

/* Recognises a template given as text; source names it in errors. */
DqChatTemplate *chat_template_from_string(const char *template_text, const char *source,
                                          GError **err);

void chat_template_free(DqChatTemplate *t);

/* The file the template was read from. */
const char *chat_template_source(const DqChatTemplate *t);

/* One user turn with n_images images first, then user_text; add_generation_prompt appends
 * "Assistant:". Returns a g_malloc'd string. */
char *chat_template_render_user(const DqChatTemplate *t, int n_images, const char *user_text,
                                gboolean add_generation_prompt);

#endif
