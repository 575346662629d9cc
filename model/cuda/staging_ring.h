/* The bookkeeping of the CUDA backend's pinned staging ring (cuda_memory.cu), apart from CUDA
 * so that it runs on the CPU in tests/model/test_staging_ring.c against a simulated stream.
 *
 * The ring is n_slots slots of slot_bytes. The host writes a part into the ring, then queues a
 * copy that reads it; the copy is done some time later. A slot may be written again once every
 * copy that reads it is done: each slot has a mark (a CUDA event) placed in the stream after the
 * last copy queued from it, and the host waits for a slot's mark before it writes there.
 *
 * The rule, for every part (staging_ring_take ... queue the copy ... staging_ring_commit):
 * - take moves the ring over the part's slots; entering a slot waits for its mark, and leaving
 *   the slot the ring was in marks it (every part before this one was committed, so all of that
 *   slot's readers are queued);
 * - a part that runs across a slot boundary leaves its first slots inside take, before its own
 *   copy is queued: commit marks those slots again, after the copy. Without it a part of the
 *   next lap that starts and ends in such a slot would wait for a mark placed before the copy
 *   and could overwrite bytes the copy has not read yet.
 * Marks are placed on the stream that the host's waits refer to; a copy queued on another
 * stream must be made part of it (a wait on that stream) before commit.
 */
#ifndef DQ_STAGING_RING_H
#define DQ_STAGING_RING_H

#include <glib.h>
#include <stddef.h>

typedef struct {
    /* Place slot's mark in the stream, after every copy queued so far. */
    void (*mark)(void *user, int slot);
    /* Block the host until slot's latest mark has been reached (at once if it never was marked). */
    void (*wait)(void *user, int slot);
} DqStagingRingOps;

typedef struct {
    size_t slot_bytes;
    int n_slots;
    size_t pos; /* the next free byte */
    int slot;   /* the slot pos is in (the slot of the latest part's end) */
    int first;  /* first slot of the part taken and not yet committed; -1: none */
    const DqStagingRingOps *ops;
    void *user;
} DqStagingRing;

/* Parts are aligned to this many bytes (slot_bytes must be a multiple of it). */
#define DQ_STAGING_RING_ALIGN ((size_t)64)

void staging_ring_init(DqStagingRing *r, size_t slot_bytes, int n_slots,
                       const DqStagingRingOps *ops, void *user);
size_t staging_ring_bytes(const DqStagingRing *r);
/* Whether a part of `bytes` fits before the ring's end, so that take need not wrap to the start
 * and wait for a lap's copies (the CUDA backend may not wait while it records a graph). */
gboolean staging_ring_fits(const DqStagingRing *r, size_t bytes);
/* Room for a part of `bytes` at *off (aligned) that no pending copy still reads; FALSE when the
 * part is larger than the ring. The caller writes the part, queues its copy, then commits. */
gboolean staging_ring_take(DqStagingRing *r, size_t bytes, size_t *off);
/* The copy of the part last taken is queued (and part of the marked stream). */
void staging_ring_commit(DqStagingRing *r);
/* Every copy is done (the stream was waited for): the whole ring is free. */
void staging_ring_reset(DqStagingRing *r);

#endif
