/* bench_gpu's "host" device: a backend whose ops do no arithmetic (backend_host.c says why). */
#ifndef DQ_BACKEND_HOST_H
#define DQ_BACKEND_HOST_H

#include "backend.h"

DqBackend *dq_backend_host_new(GError **err);

/* Ops called so far: each is at least one kernel launch on a GPU. */
uint64_t dq_backend_host_ops(DqBackend *be);

#endif
