/* libFuzzer target: recognising a snapshot's chat template. The input is the template text (as
 * chat_template.jinja holds it). A recognised template renders the one user turn docqa sends,
 * with and without images, in the shape chat_template.h documents; an unrecognised one is
 * refused with a message naming its source. */
#include "chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = g_malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    GError *err = NULL;
    DqChatTemplate *t = chat_template_from_string(text, "fuzz.jinja", &err);
    if (t == NULL) {
        if (err == NULL || strstr(err->message, "fuzz.jinja") == NULL)
            abort();
        g_clear_error(&err);
        g_free(text);
        return 0;
    }
    char *with = chat_template_render_user(t, 2, "What is the date?", TRUE);
    char *without = chat_template_render_user(t, 0, "What is the date?", FALSE);
    if (strcmp(with, "<|im_start|>User:<image><image>What is the date?<end_of_utterance>\n"
                     "Assistant:") != 0 ||
        strcmp(without, "<|im_start|>User: What is the date?<end_of_utterance>\n") != 0)
        abort();
    g_free(with);
    g_free(without);
    chat_template_free(t);
    g_free(text);
    return 0;
}
