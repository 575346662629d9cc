/* docqa errors.
 *
 * Every fallible function in docqa takes a trailing `GError **err` and returns false / NULL
 * on failure, GLib style. The message names the file, page or tensor and what is wrong with it
 * ("model.safetensors: tensor 'x' has shape [3,4], config.json implies [3,5]"), so the CLI can
 * print it as one line and map the code to an exit status.
 */
#ifndef DQ_ERROR_H
#define DQ_ERROR_H

#include <glib.h>

#define DQ_ERROR (dq_error_quark())
GQuark dq_error_quark(void);

typedef enum {
    DQ_ERR_IO = 1,       /* a file could not be opened, read, written or mapped */
    DQ_ERR_FORMAT,       /* input bytes are malformed (truncated, bad header, bad JSON) */
    DQ_ERR_UNSUPPORTED,  /* well-formed input that docqa does not handle */
    DQ_ERR_MODEL,        /* a model snapshot is inconsistent (missing tensor, shape mismatch) */
    DQ_ERR_DB,           /* a database operation failed */
    DQ_ERR_ARGS,         /* bad command-line arguments or API parameters */
    DQ_ERR_LIMIT,        /* a configured limit was exceeded (pixels, pages, memory, time) */
    DQ_ERR_ENCRYPTED,    /* a document needs a password */
    DQ_ERR_DEVICE,       /* no usable GPU, out of device memory, driver mismatch */
    DQ_ERR_CANCELLED,    /* interrupted by a signal */
    DQ_ERR_DB_LOST,      /* the connection to the database server was lost: reconnecting may
                            work (dq_store_reconnect) */
    DQ_ERR_DB_BUSY,      /* an SQLite database stayed locked by another connection past the
                            busy limit: trying the same call again later may work */
    DQ_ERR_IO_TRANSIENT, /* a file that is there could not be opened or read because of the
                            system (dq_errno_transient: EIO, ESTALE, ETIMEDOUT, out of memory or
                            descriptors...): the same read later may work */
} DqErrorCode;

/* Sets *err (when err is not NULL) with a printf-style message. Always returns false, so
 * `return dq_fail(err, DQ_ERR_IO, "%s: %s", path, g_strerror(errno));` reads naturally. */
gboolean dq_fail(GError **err, DqErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* TRUE for an errno of an open or read that says the system failed, not the file: a flaky
 * disk or network share (EIO, ESTALE, ETIMEDOUT, EREMOTEIO, ENOLINK, ECONNRESET...), a call
 * interrupted or refused for now (EINTR, EAGAIN, EBUSY, ENOLCK), memory or descriptors short
 * (ENOMEM, ENOBUFS, EMFILE, ENFILE). FALSE for what the same call would say again until a
 * person acts: the file missing or not a file (ENOENT, ENOTDIR, EISDIR, ELOOP, ENAMETOOLONG),
 * not allowed (EACCES, EPERM), and any errno not listed. */
gboolean dq_errno_transient(int errnum);

/* Prefixes an existing error's message with "context: " (e.g. the file name). */
void dq_error_prefix(GError **err, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

#endif
