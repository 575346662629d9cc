/* The CUDA backend's pinned staging ring (model/cuda/staging_ring.h) against a simulated GPU:
 * a main stream and a copy stream whose queued copies complete only when the simulation says,
 * with the ring's marks and waits as events on the main stream. The host's writes into the ring
 * are checked against every copy still pending: none may land on bytes a copy has yet to read.
 * The callers are driven as cuda_memory.cu drives the ring (stage_small, cuda_upload,
 * cuda_upload_pixels with its copy stream, cuda_download), over many random part sizes.
 * Also the backend's other host-side bookkeeping: its table of kept step graphs
 * (model/cuda/graph_table.h), driven as graph_exec_for drives it, against a direct model. */
#include <glib.h>

#include "cuda/graph_table.h"
#include "cuda/staging_ring.h"

enum { OP_COPY, OP_MARK, OP_WAIT_COPY_STREAM };

typedef struct {
    int kind;
    size_t off, len; /* OP_COPY: the ring bytes it reads */
    guint upto;      /* OP_WAIT_COPY_STREAM: copy-stream ops that must be done first */
} Op;

typedef struct {
    GArray *ops; /* Op, in queue order */
    guint done;  /* ops [0, done) have completed, in order */
} Stream;

typedef struct {
    Stream main, copy;
    guint *mark_at; /* [slot]: main-stream ops to be done for the slot's latest mark; 0: none */
    int n_slots;
    GRand *rng;
    gboolean commit; /* FALSE: the rule before the fix (no re-marking after the copy) */
    gboolean idle;   /* the GPU runs only when the host waits for it */
    /* what the run saw */
    guint violations;
    char first_violation[200];
    guint crossing_parts, laps, waits_blocked;
    DqStagingRing ring;
} Sim;

static void stream_init(Stream *s) {
    s->ops = g_array_new(FALSE, FALSE, sizeof(Op));
    s->done = 0;
}

static void push(Stream *s, Op op) {
    g_array_append_val(s->ops, op);
}

/* One op of the main stream completes, if its head is not waiting for the copy stream. */
static gboolean step_main(Sim *sim) {
    if (sim->main.done >= sim->main.ops->len)
        return FALSE;
    const Op *op = &g_array_index(sim->main.ops, Op, sim->main.done);
    if (op->kind == OP_WAIT_COPY_STREAM && sim->copy.done < op->upto)
        return FALSE;
    sim->main.done++;
    return TRUE;
}

static gboolean step_copy(Sim *sim) {
    if (sim->copy.done >= sim->copy.ops->len)
        return FALSE;
    sim->copy.done++;
    return TRUE;
}

/* The GPU gets on with some of its work: often none, sometimes a lot. */
static void progress(Sim *sim) {
    if (sim->idle)
        return;
    int n = g_rand_int_range(sim->rng, 0, 4) == 0 ? g_rand_int_range(sim->rng, 0, 40) : 0;
    for (int i = 0; i < n; i++) {
        if (g_rand_boolean(sim->rng))
            step_copy(sim);
        else
            step_main(sim);
    }
}

static void sync_all(Sim *sim) {
    while (step_copy(sim) || step_main(sim)) {
    }
    g_assert_cmpuint(sim->main.done, ==, sim->main.ops->len);
}

static void sim_mark(void *user, int slot) {
    Sim *sim = user;
    g_assert_cmpint(slot, >=, 0);
    g_assert_cmpint(slot, <, sim->n_slots);
    push(&sim->main, (Op){OP_MARK, 0, 0, 0});
    sim->mark_at[slot] = sim->main.ops->len;
}

/* The host blocks until the slot's mark is reached: the GPU runs until then. */
static void sim_wait(void *user, int slot) {
    Sim *sim = user;
    g_assert_cmpint(slot, >=, 0);
    g_assert_cmpint(slot, <, sim->n_slots);
    if (sim->main.done < sim->mark_at[slot])
        sim->waits_blocked++;
    while (sim->main.done < sim->mark_at[slot])
        if (!step_main(sim))
            g_assert_true(step_copy(sim));
}

static const DqStagingRingOps sim_ops = {sim_mark, sim_wait};

static void check_pending(Sim *sim, const Stream *s, const char *name, size_t off, size_t len) {
    for (guint i = s->done; i < s->ops->len; i++) {
        const Op *op = &g_array_index(s->ops, Op, i);
        if (op->kind != OP_COPY || op->off >= off + len || off >= op->off + op->len)
            continue;
        if (sim->violations++ == 0)
            g_snprintf(sim->first_violation, sizeof sim->first_violation,
                       "host write [%zu, %zu) over a pending %s-stream copy of [%zu, %zu)", off,
                       off + len, name, op->off, op->off + op->len);
    }
}

/* The host fills ring bytes [off, off + len). */
static void host_write(Sim *sim, size_t off, size_t len) {
    g_assert_cmpuint(off + len, <=, staging_ring_bytes(&sim->ring));
    check_pending(sim, &sim->main, "main", off, len);
    check_pending(sim, &sim->copy, "copy", off, len);
}

/* One part as the backend stages it: take, fill, queue the copy (on the copy stream the main
 * stream then waits for it, upload_part_done), commit. */
static void stage_part(Sim *sim, size_t bytes, gboolean on_copy_stream) {
    const size_t before = sim->ring.pos;
    size_t off = 0;
    g_assert_true(staging_ring_take(&sim->ring, bytes, &off));
    if (off < before)
        sim->laps++;
    if (off / sim->ring.slot_bytes != (off + bytes - 1) / sim->ring.slot_bytes)
        sim->crossing_parts++;
    host_write(sim, off, bytes);
    if (on_copy_stream) {
        push(&sim->copy, (Op){OP_COPY, off, bytes, 0});
        push(&sim->main, (Op){OP_WAIT_COPY_STREAM, 0, 0, sim->copy.ops->len});
    } else {
        push(&sim->main, (Op){OP_COPY, off, bytes, 0});
    }
    if (sim->commit)
        staging_ring_commit(&sim->ring);
    else
        sim->ring.first = -1; /* the old rule: nothing after the copy (and no complaint) */
    progress(sim);
}

static void sim_init(Sim *sim, size_t slot_bytes, int n_slots, guint32 seed, gboolean commit) {
    *sim = (Sim){0};
    stream_init(&sim->main);
    stream_init(&sim->copy);
    sim->n_slots = n_slots;
    sim->mark_at = g_new0(guint, n_slots);
    sim->rng = g_rand_new_with_seed(seed);
    sim->commit = commit;
    staging_ring_init(&sim->ring, slot_bytes, n_slots, &sim_ops, sim);
}

static void sim_clear(Sim *sim) {
    g_array_free(sim->main.ops, TRUE);
    g_array_free(sim->copy.ops, TRUE);
    g_free(sim->mark_at);
    g_rand_free(sim->rng);
}

/* A random mix of the backend's calls, with sizes in units of the slot. */
static void drive_random(Sim *sim, int calls) {
    const size_t S = sim->ring.slot_bytes, total = staging_ring_bytes(&sim->ring);
    for (int i = 0; i < calls; i++) {
        switch (g_rand_int_range(sim->rng, 0, 8)) {
        case 0:
        case 1:
        case 2: /* stage_small: positions, token ids; now and then one over several slots */
            stage_part(sim,
                       g_rand_int_range(sim->rng, 0, 8) == 0
                           ? (size_t)g_rand_int_range(sim->rng, 1, (gint32)(total / 2))
                           : (size_t)g_rand_int_range(sim->rng, 1, (gint32)(S / 8)),
                       FALSE);
            break;
        case 3:
        case 4: { /* cuda_upload: parts of at most a slot */
            size_t bytes = (size_t)g_rand_int_range(sim->rng, 1, (gint32)(3 * S));
            for (size_t done = 0; done < bytes; done += MIN(bytes - done, S))
                stage_part(sim, MIN(bytes - done, S), FALSE);
            break;
        }
        case 5:
        case 6: { /* cuda_upload_pixels: tables first, then the bytes in parts of a slot */
            size_t tables = (size_t)g_rand_int_range(sim->rng, 1, (gint32)(S / 16));
            stage_part(sim, tables, TRUE);
            size_t bytes = (size_t)g_rand_int_range(sim->rng, 1, (gint32)(4 * S));
            for (size_t done = 0; done < bytes; done += MIN(bytes - done, S))
                stage_part(sim, MIN(bytes - done, S), TRUE);
            break;
        }
        default: { /* cuda_download: the stream is waited for, the ring starts over */
            size_t off = 0;
            g_assert_true(staging_ring_take(
                &sim->ring, (size_t)g_rand_int_range(sim->rng, 1, (gint32)(S / 4)), &off));
            sync_all(sim);
            staging_ring_reset(&sim->ring);
            break;
        }
        }
    }
}

static void test_random(void) {
    guint crossing = 0, laps = 0, blocked = 0;
    for (guint32 seed = 1; seed <= 300; seed++) {
        Sim sim;
        sim_init(&sim, 4096, 8, seed, TRUE);
        drive_random(&sim, 400);
        if (sim.violations > 0)
            g_error("seed %u: %u writes over pending copies; the first: %s", seed, sim.violations,
                    sim.first_violation);
        crossing += sim.crossing_parts;
        laps += sim.laps;
        blocked += sim.waits_blocked;
        sim_clear(&sim);
    }
    /* The runs did what they are for: parts across boundaries, laps, waits that had to wait. */
    g_test_message("%u parts across slot boundaries, %u laps, %u waits that blocked", crossing,
                   laps, blocked);
    g_assert_cmpuint(crossing, >, 5000);
    g_assert_cmpuint(laps, >, 5000);
    g_assert_cmpuint(blocked, >, 1000);
}

/* The same runs under the rule before the fix: writes over pending copies happen, so the
 * simulation can see what the fix prevents. */
static void test_old_rule_overwrites(void) {
    guint bad_seeds = 0;
    for (guint32 seed = 1; seed <= 300; seed++) {
        Sim sim;
        sim_init(&sim, 4096, 8, seed, FALSE);
        drive_random(&sim, 400);
        bad_seeds += sim.violations > 0;
        if (sim.violations > 0 && bad_seeds == 1)
            g_test_message("old rule, seed %u: %s", seed, sim.first_violation);
        sim_clear(&sim);
    }
    g_test_message("old rule: %u of 300 runs wrote over a pending copy", bad_seeds);
    g_assert_cmpuint(bad_seeds, >, 100);
}

/* The reviewer's case at the real sizes (8 slots of 16 MiB): a batch of 512-pixel tiles in
 * chunks of 32, each chunk's 96 KiB of tables then its 16 MiB parts on the copy stream, with
 * the GPU idle until the host has to wait. The old rule overwrote pending bytes here. */
static void pixel_batches(gboolean commit, guint *violations) {
    const size_t S = (size_t)16 << 20, tile = (size_t)3 * 512 * 512, lut = 3 * 256 * 4;
    Sim sim;
    sim_init(&sim, S, 8, 7, commit);
    sim.idle = TRUE;
    for (int batch = 0; batch < 3; batch++) {
        for (int tiles = 160; tiles > 0; tiles -= 32) {
            int nt = MIN(tiles, 32);
            stage_part(&sim, nt * lut, TRUE);
            size_t bytes = nt * tile;
            for (size_t done = 0; done < bytes; done += MIN(bytes - done, S))
                stage_part(&sim, MIN(bytes - done, S), TRUE);
        }
        stage_part(&sim, 4 * 64, FALSE); /* a small array between chunks */
    }
    *violations = sim.violations;
    sim_clear(&sim);
}

static void test_pixel_batches(void) {
    guint with_fix = 0, old_rule = 0;
    pixel_batches(TRUE, &with_fix);
    pixel_batches(FALSE, &old_rule);
    g_assert_cmpuint(with_fix, ==, 0);
    g_assert_cmpuint(old_rule, >, 0);
}

static void test_sizes(void) {
    Sim sim;
    sim_init(&sim, 4096, 8, 1, TRUE);
    size_t off = 1;
    /* larger than the ring: refused, nothing moved */
    g_assert_false(staging_ring_fits(&sim.ring, 8 * 4096 + 1));
    g_assert_false(staging_ring_take(&sim.ring, 8 * 4096 + 1, &off));
    g_assert_cmpuint(sim.ring.pos, ==, 0);
    /* an empty part still takes an aligned unit (its last byte must be in a slot) */
    g_assert_true(staging_ring_take(&sim.ring, 0, &off));
    g_assert_cmpuint(off, ==, 0);
    g_assert_cmpuint(sim.ring.pos, ==, DQ_STAGING_RING_ALIGN);
    staging_ring_commit(&sim.ring);
    /* aligned offsets; the whole rest of the ring fits, one byte more wraps */
    g_assert_true(staging_ring_take(&sim.ring, 1, &off));
    g_assert_cmpuint(off, ==, 64);
    staging_ring_commit(&sim.ring);
    g_assert_true(staging_ring_fits(&sim.ring, 8 * 4096 - 128));
    g_assert_false(staging_ring_fits(&sim.ring, 8 * 4096 - 127));
    g_assert_true(staging_ring_take(&sim.ring, 8 * 4096 - 127, &off));
    g_assert_cmpuint(off, ==, 0);
    staging_ring_commit(&sim.ring);
    sim_clear(&sim);
}

/* A take before the previous part's commit is a caller's bug: said, and the ring stays safe. */
static void test_uncommitted(void) {
    Sim sim;
    sim_init(&sim, 4096, 8, 1, TRUE);
    size_t off = 0;
    g_assert_true(staging_ring_take(&sim.ring, 4096 - 64, &off));
    push(&sim.main, (Op){OP_COPY, off, 4096 - 64, 0});
    staging_ring_commit(&sim.ring);
    g_assert_true(staging_ring_take(&sim.ring, 4096, &off)); /* crosses into slot 1 */
    push(&sim.main, (Op){OP_COPY, off, 4096, 0});
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*taken before the previous one*");
    g_assert_true(staging_ring_take(&sim.ring, 64, &off));
    g_test_assert_expected_messages();
    staging_ring_commit(&sim.ring);
    /* slot 0's mark now follows the copy that crossed out of it */
    g_assert_cmpuint(sim.mark_at[0], ==, 4);
    sim_clear(&sim);
}

/* ---- the table of kept step graphs (graph_table.h), driven as graph_exec_for drives it: a
 * recording finds its graph and updates it, which CUDA refuses when the topology differs (here:
 * the node count), or takes an entry and instantiates a graph there; fake execs count what is
 * destroyed. */

typedef struct {
    DqGraphTable t;
    int instantiated, updated, refused, live;
} GraphSim;

static void *exec_new(GraphSim *g) {
    g->live++;
    return g_new0(int, 1);
}

static void exec_drop(GraphSim *g, DqGraphEntry *e) {
    if (e->exec != NULL) {
        g_free(e->exec);
        g->live--;
    }
    e->exec = NULL;
}

/* One recording of (key, nodes); fail: its instantiation fails. */
static void graph_record(GraphSim *g, uint64_t key, size_t nodes, gboolean fail) {
    DqGraphEntry *e = dq_graph_table_find(&g->t, key, nodes);
    if (e != NULL) {
        if (e->nodes == nodes) { /* cudaGraphExecUpdate takes the same topology */
            g->updated++;
            dq_graph_table_touch(&g->t, e);
            return;
        }
        g->refused++;
    } else {
        e = dq_graph_table_take(&g->t);
    }
    exec_drop(g, e);
    if (fail) {
        dq_graph_table_remove(&g->t, e);
        return;
    }
    g->instantiated++;
    dq_graph_table_set(&g->t, e, key, nodes, exec_new(g));
}

/* One key whose steps alternate between two shapes (a decode sequence within one run of keys,
 * then across two: one more kernel a layer): a graph each, updated from then on. Matched
 * by the key alone, every change of shape was a refused update and a new graph. */
static void test_graph_table_shapes(void) {
    GraphSim g = {0};
    graph_record(&g, 7, 100, FALSE);
    g_assert_null(dq_graph_table_find(&g.t, 7, 112));
    for (int i = 1; i < 12; i++)
        graph_record(&g, 7, i % 2 ? 112 : 100, FALSE);
    g_assert_cmpint(g.instantiated, ==, 2);
    g_assert_cmpint(g.updated, ==, 10);
    g_assert_cmpint(g.refused, ==, 0);
    g_assert_cmpint(g.t.n, ==, 2);
    g_assert_nonnull(dq_graph_table_find(&g.t, 7, 100));
    g_assert_nonnull(dq_graph_table_find(&g.t, 7, 112));
    g_assert_null(dq_graph_table_find(&g.t, 8, 100));
    for (int i = 0; i < g.t.n; i++)
        exec_drop(&g, &g.t.e[i]);
    g_assert_cmpint(g.live, ==, 0);
}

/* Random recordings over more shapes than are kept, some instantiations failing, against a
 * direct model: the shapes kept with their last use, the least recently used one evicted for
 * a new shape when full (even when the new one then fails to instantiate). */
static void test_graph_table_lru(void) {
    GRand *rng = g_rand_new_with_seed(27);
    GraphSim g = {0};
    enum { SHAPES = 24 };
    gint64 last[SHAPES]; /* the model: -1 not kept, else the step of its last use */
    for (int i = 0; i < SHAPES; i++)
        last[i] = -1;
    for (gint64 step = 0; step < 5000; step++) {
        const int sh = g_rand_int_range(rng, 0, SHAPES);
        const gboolean fail = g_rand_int_range(rng, 0, 10) == 0;
        const uint64_t key = (uint64_t)(sh / 3) << 40 | 5; /* 8 keys, 3 node counts each */
        const size_t nodes = 300 + (size_t)(sh % 3) * 4;
        int kept = 0, oldest = -1;
        for (int i = 0; i < SHAPES; i++)
            if (last[i] >= 0) {
                kept++;
                if (oldest < 0 || last[i] < last[oldest])
                    oldest = i;
            }
        if (last[sh] >= 0) {
            last[sh] = step;
        } else {
            if (kept == DQ_GRAPH_TABLE_KEPT)
                last[oldest] = -1;
            if (!fail)
                last[sh] = step;
        }
        graph_record(&g, key, nodes, fail && last[sh] < 0);
        kept = 0;
        for (int i = 0; i < SHAPES; i++) {
            DqGraphEntry *e =
                dq_graph_table_find(&g.t, (uint64_t)(i / 3) << 40 | 5, 300 + (size_t)(i % 3) * 4);
            if ((e != NULL) != (last[i] >= 0))
                g_error("step %" G_GINT64_FORMAT ": shape %d is %s the table but %s the model",
                        step, i, e != NULL ? "in" : "not in", last[i] >= 0 ? "in" : "not in");
            kept += e != NULL;
        }
        g_assert_cmpint(g.t.n, ==, kept); /* dense: every entry in use is a kept shape */
        for (int i = 0; i < g.t.n; i++)
            g_assert_nonnull(g.t.e[i].exec);
        g_assert_cmpint(g.live, ==, g.t.n); /* every dropped graph was destroyed */
    }
    g_assert_cmpint(g.refused, ==, 0);
    for (int i = 0; i < g.t.n; i++)
        exec_drop(&g, &g.t.e[i]);
    g_rand_free(rng);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/staging_ring/random", test_random);
    g_test_add_func("/staging_ring/old_rule_overwrites", test_old_rule_overwrites);
    g_test_add_func("/staging_ring/pixel_batches", test_pixel_batches);
    g_test_add_func("/staging_ring/sizes", test_sizes);
    g_test_add_func("/staging_ring/uncommitted", test_uncommitted);
    g_test_add_func("/cuda_graph_table/shapes", test_graph_table_shapes);
    g_test_add_func("/cuda_graph_table/lru", test_graph_table_lru);
    return g_test_run();
}
