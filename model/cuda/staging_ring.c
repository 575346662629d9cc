/* The pinned staging ring's bookkeeping: see staging_ring.h. */
#include "staging_ring.h"

void staging_ring_init(DqStagingRing *r, size_t slot_bytes, int n_slots,
                       const DqStagingRingOps *ops, void *user) {
    g_return_if_fail(n_slots > 0 && slot_bytes > 0 && slot_bytes % DQ_STAGING_RING_ALIGN == 0);
    *r = (DqStagingRing){slot_bytes, n_slots, 0, 0, -1, ops, user};
}

size_t staging_ring_bytes(const DqStagingRing *r) {
    return r->slot_bytes * (size_t)r->n_slots;
}

/* A part takes at least one aligned unit, so that its last byte is in a slot. */
static size_t aligned(size_t bytes) {
    bytes = MAX(bytes, (size_t)1);
    return (bytes + DQ_STAGING_RING_ALIGN - 1) & ~(DQ_STAGING_RING_ALIGN - 1);
}

gboolean staging_ring_fits(const DqStagingRing *r, size_t bytes) {
    size_t a = aligned(bytes);
    return a <= staging_ring_bytes(r) && r->pos + a <= staging_ring_bytes(r);
}

/* The ring moves into slot `to`: the slot it leaves has all its readers queued (every earlier
 * part was committed), so its mark covers them; slot `to` may be written once the readers it
 * had a lap ago are done (its mark). */
static void ring_enter(DqStagingRing *r, int to, gboolean force) {
    if (to == r->slot && !force)
        return;
    r->ops->mark(r->user, r->slot);
    r->ops->wait(r->user, to);
    r->slot = to;
}

gboolean staging_ring_take(DqStagingRing *r, size_t bytes, size_t *off) {
    if (r->first >= 0) {
        /* A caller's bug; marking now is still safe (after every copy queued so far). */
        g_critical("staging ring: a part was taken before the previous one was committed");
        staging_ring_commit(r);
    }
    const size_t total = staging_ring_bytes(r);
    bytes = aligned(bytes);
    if (bytes > total)
        return FALSE;
    if (r->pos + bytes > total) {
        r->pos = 0;
        ring_enter(r, 0, TRUE); /* from slot 0 itself too: its readers of this lap */
    }
    *off = r->pos;
    const int first = (int)(r->pos / r->slot_bytes);
    const int last = (int)((r->pos + bytes - 1) / r->slot_bytes);
    for (int s = first; s <= last; s++)
        ring_enter(r, s, FALSE);
    r->first = first;
    r->pos += bytes;
    return TRUE;
}

void staging_ring_commit(DqStagingRing *r) {
    if (r->first < 0)
        return;
    /* The slots this part left inside take were marked before its copy was queued. */
    for (int s = r->first; s < r->slot; s++)
        r->ops->mark(r->user, s);
    r->first = -1;
}

void staging_ring_reset(DqStagingRing *r) {
    r->pos = 0;
    r->slot = 0;
    r->first = -1;
}
