#include "dq_error.h"

#include <errno.h>
#include <stdarg.h>

GQuark dq_error_quark(void) {
    return g_quark_from_static_string("docqa-error");
}

gboolean dq_fail(GError **err, DqErrorCode code, const char *fmt, ...) {
    if (err == NULL)
        return FALSE;
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(err, DQ_ERROR, code, msg);
    g_free(msg);
    return FALSE;
}

void dq_error_prefix(GError **err, const char *fmt, ...) {
    if (err == NULL || *err == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_prefix_error(err, "%s: ", prefix);
    g_free(prefix);
}

gboolean dq_errno_transient(int errnum) {
    switch (errnum) {
    case EIO:
    case ESTALE:
    case ETIMEDOUT:
    case EREMOTEIO:
    case ENOLINK:
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENETDOWN:
    case ENETUNREACH:
    case ENETRESET:
    case EINTR:
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EBUSY:
    case ENOLCK:
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:
        return TRUE;
    default:
        return FALSE;
    }
}
