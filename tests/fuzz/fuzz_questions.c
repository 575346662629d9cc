/* libFuzzer target: a questions file (`docqa ask --questions FILE`), read as a JSON list of
 * strings or one question a line. What it yields is what gets stored and put in prompts: each
 * question valid UTF-8, non-empty, without "<image>" (the page marker), and already in the form
 * queue_question_normalize gives (normalizing it again changes nothing), and its quote for
 * messages is one line of UTF-8. A refusal names the file and is UTF-8 (it is printed as is). */
#include "queue.h"

#include <glib/gstdio.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *path;

/* libFuzzer leaves through exit() at the end of a run: no file left behind in /tmp (CI's smoke
 * run starts every target each time). */
static void remove_file(void) {
    g_unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (path == NULL) {
        int fd = g_file_open_tmp("docqa-fuzz-questions-XXXXXX.txt", &path, NULL);
        if (fd < 0)
            abort();
        close(fd);
        atexit(remove_file);
    }
    if (!g_file_set_contents(path, (const char *)data, (gssize)size, NULL))
        abort();
    GError *err = NULL;
    char **qs = queue_read_questions(path, &err);
    if (qs == NULL) {
        if (err == NULL || strstr(err->message, path) == NULL ||
            !g_utf8_validate(err->message, -1, NULL)) {
            fprintf(stderr, "a refusal that does not name the file, or is not UTF-8: %s\n",
                    err ? err->message : "(no error)");
            abort();
        }
        g_clear_error(&err);
        return 0;
    }
    if (qs[0] == NULL)
        abort(); /* no questions is a refusal */
    for (char **q = qs; *q; q++) {
        if (**q == '\0' || !g_utf8_validate(*q, -1, NULL) || strstr(*q, "<image>") != NULL)
            abort();
        char *again = queue_question_normalize(*q, -1, "again", &err);
        if (again == NULL || strcmp(again, *q) != 0) {
            fprintf(stderr, "normalized twice differs: '%s' -> '%s'\n", *q, again ? again : "NULL");
            abort();
        }
        g_free(again);
        char *quote = queue_question_quote(*q);
        if (!g_utf8_validate(quote, -1, NULL) || strchr(quote, '\n') != NULL)
            abort();
        g_free(quote);
    }
    g_strfreev(qs);
    return 0;
}
