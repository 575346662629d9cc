#!/usr/bin/env python3
# Soak: the queue's commands at random, several at once, against one database, then checks of
# what must hold whatever the interleaving (the operator's nightly job and a person at a
# terminal, beside workers that are killed and started again).
#
#   scripts/soak.py [--docqa BINARY] [--model DIR] [--work DIR] [--seed N] [--seconds T]
#                   [--steps K] [--concurrency R] [--lease S] [--quiet-every S]
#                   [--pg [LOCATION]] [--keep] [--verbose]
#
#   --docqa BINARY    the binary under test (default build/cli/docqa)
#   --model DIR       a SmolVLM snapshot (default ../shared/models/tiny-smolvlm-b512, else the
#                     bundled models/demo-tiny when its weights were written)
#   --work DIR        where the database and the archive are made (default: a temporary folder,
#                     removed after unless --keep or a check failed)
#   --seed N          the seed (default: from the clock; printed either way)
#   --seconds T       run the actions for T seconds (default 60)
#   --steps K         or stop after K actions in all (default 0: no limit)
#   --concurrency R   actions at once, each in its own thread with its own random stream
#                     derived from the seed (default 4)
#   --lease S         the workers' --lease (default 3: a killed worker's jobs come back soon)
#   --quiet-every S   every S seconds all actions stop and the counts are compared (default 15)
#   --pg [LOCATION]   PostgreSQL instead of SQLite: LOCATION (postgresql://..., an empty
#                     database), or without one a scratch server started for the run
#                     (/usr/lib/postgresql/N/bin, as nobody when run as root) and stopped after;
#                     the page store is <work>/pages (DOCQA_PAGES); queries go through psql
#   --keep            keep the work folder
#   --verbose         print each action as it ends
#
# The actions, drawn at random: ask (a question of a pool of 8, new or asked before; over every
# document or --where the changing one), cancel (by question, --document, --where, some with
# --state running), requeue (--cancelled, --dead --failed, --done, --approximate, --stale against
# the snapshot or another --fingerprint-not; by one of cancel's selectors or none), ingest of the
# archive after one document changed (new bytes: a new version, its own pages and jobs; an
# older version's bytes again; a copy under a second path; the file gone; nothing), export
# --checkpoint-file (one at a time, as README's nightly job runs it under flock), a second chain
# of export --current with its own checkpoint file, status --json, prune (--grace 0, 1, 2 or 5
# s or the default day, a quarter of them --dry-run), and run (1 or 2 workers,
# --max-jobs, some with --weights int8 (approximate answers) or --draft int8; half of them
# killed with SIGKILL at a random moment, one in seven stopped with SIGSTOP past its lease and
# continued, its whole process group).
# Checked at every quiet moment and at the end:
#   - PRAGMA integrity_check and foreign_key_check (SQLite); every job in one known state,
#     running exactly when it has a lease owner; as many jobs as the asks said they added
#   - status --json's counts, and v_progress per question, equal the counts from jobs
#   - no job in state cancelled has an answer; a job a cancel (not --state running) withdrew
#     stays cancelled until a requeue --cancelled takes it back, unless a worker that started
#     on it before the cancel answers it (README: a late answer is kept); cancel and requeue
#     --cancelled changed at least and at most the jobs their --json says
#   - at most one answer per (page, question, model, generation settings); a done job has one
#   - every answer seen at an earlier quiet moment is still in answers or answers_superseded
#   - requeue --stale against the snapshot that gave every answer takes nothing back
#   - the page file of every page of a current document is there, no file a prune set aside is
#     left in <store>/.tmp, no page row is gone, and every job that failed on a missing image
#     says prune removed it (its page's document no longer current)
# and at the end, after a quiet run --until-empty, requeue --approximate (it takes back as many
# jobs as there are approximate answers) and another run (none is left), and a last export of
# each chain:
#   - nothing queued or running is left, no lease is held, every answered job is done
#   - the rows of all the exports that succeeded, together, hold every answer in answers once,
#     and nothing that is neither in answers nor in answers_superseded
#   - the --current chain: no answer under one path twice, nothing never stored, and every
#     answer the last runs committed that v_current_answers lists
#   - every command exited as it may (ask/cancel/requeue/status/export/prune 0, ingest 0 or 1
#     (a page a prune with a grace shorter than the ingest removed fails as store_failed), run
#     0 or 1, or killed by the soak); no sanitizer report
# On a failure the seed, the violated checks and the action log are printed; the same seed
# gives the same actions in each thread (not the same interleaving).
# Exit status: 0 every check held, 1 a check failed, 2 usage or setup error, 77 no model found
# or (--pg) no PostgreSQL server binaries or psql.
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pdf_fixture import one_page_pdf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = [
    "What is the total?",
    "Who signed it?",
    "Which date?",
    "What is the invoice number?",
    "Where was it sent?",
    "What is the subject?",
    "How many items?",
    "What currency?",
]
MAX_NEW_TOKENS = "6"
CHANGING = "changing.pdf"
STATES = {"queued", "running", "done", "failed", "dead", "cancelled"}
# no snapshot's: 12 hex digits, as `requeue --fingerprint-not` takes a prefix
FOREIGN_FINGERPRINT = "0123456789ab"
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def usage():
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    out = []
    for line in lines:
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(out) + "\n"


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def die(msg, status=2):
    print("soak: " + msg, file=sys.stderr)
    sys.exit(status)


def utc_now():
    """Now as docqa writes times (started_at, finished_at): ISO-8601 UTC, milliseconds."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def find_model(given):
    if given:
        return given
    shared = os.path.join(os.path.dirname(ROOT), "shared", "models", "tiny-smolvlm-b512")
    if os.path.exists(os.path.join(shared, "model.safetensors")):
        return shared
    demo = os.path.join(ROOT, "models", "demo-tiny")
    if os.path.exists(os.path.join(demo, "model.safetensors")):
        return demo
    return None


def version_pdf(version):
    """A one-page PDF of its own look for each version (its page image its own, which only
    this version and those that bring its bytes back name: prune has old versions to remove)."""
    text = "Total: %d.00 EUR (version %d)" % (version * 7, version)
    return one_page_pdf(text, 20 + version % 40, 150 + version % 60)


class Soak:
    def __init__(self, a, work):
        self.a = a
        self.work = work
        self.docs = os.path.join(work, "docs")
        self.pg = a.pg
        self.db = a.pg if a.pg else os.path.join(work, "docqa.db")
        self.env = dict(os.environ)
        self.env.pop("DOCQA_DB", None)
        self.env.pop("DOCQA_MODEL", None)
        if a.pg:
            self.env["DOCQA_PAGES"] = os.path.join(work, "pages")
        self.pages = os.path.join(work, "pages") if a.pg else self.db + ".pages"
        self.model_id = os.path.basename(os.path.normpath(a.model))
        self.log = []  # (t, thread, action, argv tail, rc, note)
        self.log_lock = threading.Lock()
        self.violations = []
        # actions hold it shared; a quiet moment holds it alone
        self.quiet_cv = threading.Condition()
        self.active = 0
        self.quiet_wanted = False
        self.cancel_lock = threading.Lock()
        self.ingest_cv = threading.Condition()
        self.ingests = 0  # ingests running
        # jobs a plain cancel withdrew, not taken back since: the time the cancel started
        self.withdrawn = {}
        # the two export chains, by `current`: the rows of every export that succeeded,
        # (job_id, finished_at) and for --current the document_path after them, and how many
        # exports each ran
        self.chain_locks = {False: threading.Lock(), True: threading.Lock()}
        self.chain_rows = {False: [], True: []}
        self.chain_runs = {False: 0, True: 0}
        self.seen_answers = set()
        self.seen_pages = set()  # page rows seen at an earlier quiet moment (prune deletes none)
        self.prunes = {"removed": 0, "runs": 0, "dry": 0}
        self.version = 0
        self.jobs_added = 0  # what the asks said they added: every job there is
        self.steps = 0
        self.steps_lock = threading.Lock()
        self.t0 = time.monotonic()

    # ---- running docqa

    def docqa(self, args, stdout=None, timeout=300):
        argv = [self.a.docqa] + args
        p = subprocess.run(argv, stdout=stdout if stdout is not None else subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace") if stdout is None else ""
        err = p.stderr.decode("utf-8", "replace")
        if SANITIZER.search(err):
            self.violate("sanitizer report from %s:\n%s" % (" ".join(args[:1]), err))
        return p.returncode, out, err

    def m(self):
        return ["--model", self.a.model]

    def note(self, who, action, args, rc, extra=""):
        with self.log_lock:
            entry = (round(time.monotonic() - self.t0, 3), who, action, " ".join(args), rc, extra)
            self.log.append(entry)
            if self.a.verbose:
                print("%8.3f t%s %-8s rc=%s %s %s" % (entry[0], who, action, rc, entry[3],
                                                     extra), flush=True)

    def violate(self, what):
        with self.log_lock:
            self.violations.append(what)
        print("soak: VIOLATION: " + what, file=sys.stderr, flush=True)

    def expect_rc(self, action, rc, ok, err):
        if rc not in ok:
            self.violate("%s exited %s (expected %s): %s" % (action, rc, sorted(ok), err.strip()))

    # ---- the database, read directly

    def sql(self, query, params=()):
        if self.pg:
            return self.psql(query, params)
        con = sqlite3.connect(self.db, timeout=60)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def psql(self, query, params):
        # psql, not a Python driver: nothing to install beside the server's client
        parts = query.split("?")
        q = parts[0]
        for value, rest in zip(params, parts[1:]):
            q += "'" + str(value).replace("'", "''") + "'" + rest
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\x1f",
                            "-R", "\x1e", "-d", self.pg, "-c", q],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (q, p.stderr.decode("utf-8", "replace")))
        rows = []
        for line in p.stdout.decode("utf-8").split("\x1e"):
            line = line.strip("\n")
            if line:
                rows.append(tuple(int(c) if re.fullmatch(r"-?[0-9]+", c) else (c or None)
                                  for c in line.split("\x1f")))
        return rows

    def state_of(self, state):
        return {r[0] for r in self.sql("SELECT id FROM jobs WHERE state = ?", (state,))}

    # ---- setup

    def setup(self):
        os.makedirs(self.docs)
        src = os.path.join(ROOT, "examples", "docs")
        for name in sorted(os.listdir(src)):
            shutil.copy(os.path.join(src, name), self.docs)
        shutil.copy(os.path.join(src, "receipt.pdf"), os.path.join(self.docs, CHANGING))
        self.bump()
        rc, out, err = self.docqa(["ingest", "--db", self.db, "--n-res", "1"] + self.m() +
                                  [self.docs])
        if rc != 0:
            die("ingest failed (%s): %s" % (rc, err))
        rc, out, err = self.docqa(["ask", "--db", self.db, "--max-new-tokens", MAX_NEW_TOKENS] +
                                  self.m() + ["--json", "--", QUESTIONS[0]])
        if rc != 0:
            die("ask failed (%s): %s" % (rc, err))
        self.jobs_added = json.loads(out)["jobs_added"]

    def bump(self, version=None, path=None):
        """New bytes for the changing document (an ingest then adds a new version), or with
        `version` an older version's bytes again (an edit undone), or a copy at `path`."""
        if version is None:
            self.version += 1
            version = self.version
        tmp = os.path.join(self.work, CHANGING + ".tmp")
        with open(tmp, "wb") as f:
            f.write(version_pdf(version))
        # renamed into place: an ingest never reads half a file, only an old or a new one
        dst = path or os.path.join(self.docs, CHANGING)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(tmp, dst)

    # ---- actions

    def asked(self):
        return [r[0] for r in self.sql(
            "SELECT text FROM questions q WHERE EXISTS (SELECT 1 FROM jobs j "
            "WHERE j.question_id = q.id) ORDER BY id")]

    def act_ask(self, rng, who):
        qs = rng.sample(QUESTIONS, rng.randint(1, 2))
        args = ["ask", "--db", self.db, "--max-new-tokens", MAX_NEW_TOKENS] + self.m()
        if rng.random() < 0.3:
            args += ["--where", "path LIKE '%%%s'" % CHANGING]
        rc, out, err = self.docqa(args + ["--json", "--"] + qs)
        added = json.loads(out)["jobs_added"] if rc == 0 else 0
        with self.log_lock:
            self.jobs_added += added
        self.note(who, "ask", args[5:] + qs, rc, "%d added" % added)
        self.expect_rc("ask", rc, {0}, err)

    def selector(self, rng):
        asked = self.asked()
        pick = rng.random()
        if asked and pick < 0.6:
            return ["--question", rng.choice(asked)]
        if pick < 0.8:  # any version, gone or not: the jobs of its pages' bytes
            ids = [r[0] for r in self.sql("SELECT id FROM documents ORDER BY id")]
            return ["--document", str(rng.choice(ids))]
        return ["--where", "path LIKE '%%%s'" % CHANGING]

    def act_cancel(self, rng, who):
        args = ["cancel", "--db", self.db] + self.selector(rng)
        running = rng.random() < 0.3
        if running:
            args += ["--state", "running", "--state", "queued"]
        with self.cancel_lock:
            before = self.state_of("cancelled")
            started = utc_now()
            rc, out, err = self.docqa(args + ["--json"])
            after = self.state_of("cancelled")
            if rc == 0 and not running:
                for job in after - before:
                    self.withdrawn[job] = started
        said = json.loads(out)["cancelled"] if rc == 0 else 0
        self.note(who, "cancel", args[3:], rc, "%d cancelled" % said)
        self.expect_rc("cancel", rc, {0}, err)
        # only cancels and requeue --cancelled (both under the lock) add or take cancelled jobs,
        # and a late answer takes one: what it said it cancelled, at least, became cancelled
        if rc == 0 and said < len(after - before):
            self.violate("cancel said %d cancelled, %d became cancelled: %s" %
                         (said, len(after - before), " ".join(args)))

    def act_requeue(self, rng, who):
        kind = rng.choice([["--cancelled"], ["--dead", "--failed"], ["--done"], ["--cancelled"],
                           ["--approximate"], ["--stale"], ["--stale"]])
        if kind == ["--stale"]:
            # every answer here comes from this one snapshot: against another fingerprint all
            # are stale, against its own none (checked below)
            kind = kind + self.m() + (["--fingerprint-not", FOREIGN_FINGERPRINT]
                                      if rng.random() < 0.5 else [])
        elif kind == ["--approximate"]:
            kind = kind + self.m()
        args = ["requeue", "--db", self.db] + kind
        if rng.random() < 0.6:
            args += self.selector(rng)
        with self.cancel_lock:
            before = self.state_of("cancelled")
            rc, out, err = self.docqa(args + ["--json"])
            after = self.state_of("cancelled")
            for job in before - after:
                self.withdrawn.pop(job, None)
        said = json.loads(out)["jobs"] if rc == 0 else 0
        self.note(who, "requeue", args[3:], rc, "%d requeued" % said)
        self.expect_rc("requeue", rc, {0}, err)
        if rc == 0 and kind == ["--cancelled"] and said > len(before - after):
            self.violate("requeue --cancelled said %d requeued, %d left the cancelled state: %s" %
                         (said, len(before - after), " ".join(args)))
        if rc == 0 and kind[0] == "--stale" and "--fingerprint-not" not in kind and said:
            self.violate("requeue --stale against the snapshot that gave every answer said %d "
                         "requeued: %s" % (said, " ".join(args)))

    def act_ingest(self, rng, who):
        # the archive changes while no ingest runs (an ingest that saw a file change is right
        # to leave it to the next), then ingests run at once, as overlapping cron runs do
        with self.ingest_cv:
            while self.ingests:
                self.ingest_cv.wait()
            change = rng.choice(["new", "new", "new", "older", "copy", "gone", "same", "same"])
            here = os.path.join(self.docs, CHANGING)
            if change == "new":
                self.bump()
            elif change == "older":
                self.bump(version=rng.randint(1, self.version))
            elif change == "copy":  # the same bytes under a second path
                self.bump(version=rng.randint(1, self.version),
                          path=os.path.join(self.docs, "copies", CHANGING))
            elif change == "gone" and os.path.exists(here):
                os.unlink(here)  # ingest marks it gone; a later "new" or "older" brings it back
            self.ingests += 1
        try:
            args = ["ingest", "--db", self.db, "--n-res", "1"] + self.m() + [self.docs]
            rc, out, err = self.docqa(args)
        finally:
            with self.ingest_cv:
                self.ingests -= 1
                self.ingest_cv.notify_all()
        self.note(who, "ingest", [change, "v%d" % self.version], rc)
        self.expect_rc("ingest", rc, {0, 1}, err)

    def export_chain(self, who, current):
        """One export of a chain, as README's nightly job runs it (one at a time under flock):
        the plain chain, or with `current` a second one beside it of `--current` rows, with its
        own checkpoint file as README says a kind of export keeps (the two may run at once).
        Each row is kept as (job_id, finished_at), and the --current one's path after them."""
        name = "current" if current else "export"
        with self.chain_locks[current]:
            n = self.chain_runs[current]
            self.chain_runs[current] += 1
            path = os.path.join(self.work, "%s-%04d.jsonl" % (name, n))
            args = ["export", "--db", self.db] + (["--current"] if current else []) + [
                "--format", "jsonl", "--checkpoint-file",
                os.path.join(self.work, "current.checkpoint" if current
                             else "answers.checkpoint")]
            with open(path, "wb") as f:
                rc, out, err = self.docqa(args, stdout=f)
            rows = 0
            if rc == 0:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        r = json.loads(line)
                        key = (r["job_id"], r["finished_at"])
                        self.chain_rows[current].append(
                            key + (r["document_path"],) if current else key)
                        rows += 1
        self.note(who, "export-current" if current else "export", ["#%d" % n], rc,
                  "%d rows" % rows)
        self.expect_rc("export --current" if current else "export", rc, {0}, err)

    def act_export(self, rng, who):
        self.export_chain(who, current=False)

    def act_export_current(self, rng, who):
        self.export_chain(who, current=True)

    def act_status(self, rng, who):
        rc, out, err = self.docqa(["status", "--db", self.db, "--json"])
        self.note(who, "status", [], rc)
        self.expect_rc("status", rc, {0}, err)
        if rc == 0:
            try:
                j = json.loads(out)["jobs"]
                if any(v < 0 for v in j.values()):
                    self.violate("status --json: a negative count: %s" % j)
            except (ValueError, KeyError) as e:
                self.violate("status --json: not its JSON (%s): %s" % (e, out[:300]))

    def act_prune(self, rng, who):
        # no grace at all, a few seconds, or the default day (nothing the soak made is that
        # old: it removes only what was set aside and never put back); some only counting
        grace = rng.choice(["0", "0", "1", "2", "5", None])
        args = ["prune", "--db", self.db, "--json"] + (["--grace", grace] if grace else [])
        dry = rng.random() < 0.25
        if dry:
            args.append("--dry-run")
        rc, out, err = self.docqa(args)
        removed = json.loads(out)["files_removed"] if rc == 0 else 0
        with self.log_lock:
            self.prunes["runs"] += 1
            if dry:
                self.prunes["dry"] += 1
            else:
                self.prunes["removed"] += removed
        self.note(who, "prune", args[4:], rc,
                  "%d %s" % (removed, "would go" if dry else "removed"))
        self.expect_rc("prune", rc, {0}, err)

    def act_run(self, rng, who):
        workers = rng.choice(["1", "2"])
        max_jobs = str(rng.randint(1, 12))
        args = ["run", "--db", self.db] + self.m() + [
            "--workers", workers, "--batch", "2", "--lease", str(self.a.lease), "--max-jobs",
            max_jobs, "--until-empty", "--other-models-ok", "-q"]
        # some answers approximate (exact = 0: requeue --approximate takes them back), some
        # through the draft (exact: the same answers as without)
        arith = rng.random()
        if arith < 0.2:
            args += ["--weights", "int8"]
        elif arith < 0.3:
            args += ["--draft", "int8"]
        fate = rng.random()
        kill_after = rng.uniform(0.05, 2.0) if fate < 0.5 else None
        stop_after = rng.uniform(0.05, 1.0) if 0.5 <= fate < 0.65 else None
        p = subprocess.Popen([self.a.docqa] + args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=self.env, start_new_session=True)
        killed = False
        if stop_after is not None:
            # a worker that hangs past its lease (a machine suspended, a long pause) and then
            # goes on: others take its jobs over, its late answers meet what happened meanwhile
            try:
                p.wait(timeout=stop_after)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGSTOP)
                time.sleep(self.a.lease + rng.uniform(0.2, 2.0))
                os.killpg(p.pid, signal.SIGCONT)
        try:
            p.wait(timeout=kill_after if kill_after is not None else 300)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            killed = True
            p.wait()
        err = p.stderr.read().decode("utf-8", "replace")
        p.stderr.close()
        if killed:
            # the workers are in its group: none may go on after the kill
            try:
                os.killpg(p.pid, 0)
                time.sleep(0.2)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.note(who, "run", args[5:-1], "killed" if killed else p.returncode)
        if SANITIZER.search(err):
            self.violate("sanitizer report from run:\n" + err)
        if not killed:
            self.expect_rc("run", p.returncode, {0, 1}, err)

    ACTIONS = [("ask", 3), ("cancel", 2), ("requeue", 2), ("ingest", 2), ("export", 2),
               ("export_current", 1), ("status", 1), ("run", 5), ("prune", 2)]

    # ---- the loop

    def enter(self):
        with self.quiet_cv:
            while self.quiet_wanted:
                self.quiet_cv.wait()
            self.active += 1

    def leave(self):
        with self.quiet_cv:
            self.active -= 1
            self.quiet_cv.notify_all()

    def more(self):
        if time.monotonic() - self.t0 >= self.a.seconds:
            return False
        with self.steps_lock:
            if self.a.steps and self.steps >= self.a.steps:
                return False
            self.steps += 1
            return True

    def thread(self, i):
        rng = random.Random("%d/%d" % (self.a.seed, i))
        names = [n for n, w in self.ACTIONS for _ in range(w)]
        while self.more() and not self.violations:
            name = rng.choice(names)
            self.enter()
            try:
                getattr(self, "act_" + name)(rng, i)
            except Exception as e:  # a crash of the soak itself is a failure too
                self.violate("%s raised %r" % (name, e))
            finally:
                self.leave()

    def quiet(self, final=False):
        with self.quiet_cv:
            self.quiet_wanted = True
            while self.active:
                self.quiet_cv.wait()
        try:
            self.check(final=False)
        finally:
            with self.quiet_cv:
                self.quiet_wanted = False
                self.quiet_cv.notify_all()

    def run(self):
        threads = [threading.Thread(target=self.thread, args=(i,), daemon=True)
                   for i in range(self.a.concurrency)]
        for t in threads:
            t.start()
        next_quiet = time.monotonic() + self.a.quiet_every
        while any(t.is_alive() for t in threads):
            time.sleep(0.1)
            if time.monotonic() >= next_quiet and any(t.is_alive() for t in threads):
                self.quiet()
                next_quiet = time.monotonic() + self.a.quiet_every
        self.finish()

    def finish(self):
        self.seq_settled = self.sql("SELECT coalesce(max(commit_seq), 0) FROM answers")[0][0]
        # a killed worker's leases run out; then the queue must drain
        time.sleep(self.a.lease + 0.5)
        args = ["run", "--db", self.db] + self.m() + ["--workers", "2", "--batch", "2",
                                                      "--lease", str(self.a.lease),
                                                      "--until-empty", "-q"]
        rc, out, err = self.docqa(args, timeout=600)
        self.note("-", "drain", [], rc)
        self.expect_rc("run --until-empty (the last)", rc, {0, 1}, err)
        # the approximate answers taken back, every one, and answered again exactly
        approx = self.sql("SELECT count(*) FROM answers WHERE exact = 0")[0][0]
        rc, out, err = self.docqa(["requeue", "--db", self.db, "--approximate"] + self.m() +
                                  ["--json"])
        said = json.loads(out)["jobs"] if rc == 0 else None
        self.note("-", "requeue", ["--approximate"], rc, "%s requeued" % said)
        self.expect_rc("requeue --approximate (the last)", rc, {0}, err)
        if said is not None and said != approx:
            self.violate("requeue --approximate took %s jobs back, %d answers are approximate" %
                         (said, approx))
        rc, out, err = self.docqa(args, timeout=600)
        self.note("-", "drain", [], rc)
        self.expect_rc("run --until-empty (after requeue --approximate)", rc, {0, 1}, err)
        # but one about a page whose image a prune removed fails, saying so, and stays done with
        # the answer it had (README: Reclaiming space)
        left = self.sql("SELECT count(*) FROM answers a JOIN jobs j ON j.id = a.job_id WHERE "
                        "a.exact = 0 AND coalesce(j.last_error, '') NOT LIKE "
                        "'%pruned by docqa prune%'")[0][0]
        if left:
            self.violate("%d approximate answers left after requeue --approximate and a run "
                         "with the stored weights" % left)
        self.act_export(None, "-")
        self.act_export_current(None, "-")
        self.check(final=True)

    # ---- checks

    def counts(self):
        rows = self.sql("SELECT state, count(*) FROM jobs GROUP BY state")
        return {s: n for s, n in rows}

    def check(self, final):
        v = self.violate
        if not self.pg:
            rows = self.sql("PRAGMA integrity_check")
            if [r[0] for r in rows] != ["ok"]:
                v("integrity_check: %s" % rows[:5])
            fk = self.sql("PRAGMA foreign_key_check")
            if fk:
                v("foreign_key_check: %d rows, e.g. %s" % (len(fk), fk[:3]))
        counts = self.counts()
        with self.log_lock:
            added = self.jobs_added
        if sum(counts.values()) != added:
            v("%d jobs, and the asks said they added %d" % (sum(counts.values()), added))
        odd = set(counts) - STATES
        if odd:
            v("jobs in unknown states: %s" % odd)
        # documents_current is the archive as the last ingest found it (ingests run one at a
        # time, each right after the archive changed): every file with its bytes, no other
        on_disk = {}
        for d, _, files in os.walk(self.docs):
            for name in files:
                with open(os.path.join(d, name), "rb") as f:
                    on_disk[os.path.join(d, name)] = hashlib.sha256(f.read()).hexdigest()
        current = {r[0]: r[1] for r in self.sql("SELECT path, sha256 FROM documents_current")}
        if current != on_disk:
            v("documents_current is not the archive: %s only in documents_current, %s only on "
              "disk, %s other bytes" % (sorted(set(current) - set(on_disk)),
                                        sorted(set(on_disk) - set(current)),
                                        sorted(k for k in current if k in on_disk and
                                               current[k] != on_disk[k])))
        rows = self.sql("SELECT path, version, sha256 FROM documents ORDER BY path, version")
        for prev, row in zip(rows, rows[1:]):
            if row[0] == prev[0] and (row[1] != prev[1] + 1 or row[2] == prev[2]):
                v("documents: versions %s and %s of %s (same bytes twice in a row, or not one "
                  "after the other)" % (prev[1:], row[1:], row[0]))
        bad = self.sql("SELECT id, state, lease_owner FROM jobs WHERE (state = 'running') <> "
                       "(lease_owner IS NOT NULL) LIMIT 5")
        if bad:
            v("running without a lease owner, or a lease owner not running: %s" % bad)
        # status --json against the tables (nothing runs now)
        rc, out, err = self.docqa(["status", "--db", self.db, "--json"])
        if rc != 0:
            v("status --json exited %s: %s" % (rc, err.strip()))
        else:
            j = json.loads(out)
            jobs = j["jobs"]
            want = {s: counts.get(s, 0) for s in STATES}
            got = {s: jobs.get(s, 0) for s in STATES}
            got["running"] = jobs.get("running", 0) + jobs.get("stalled", 0)
            if got != want:
                v("status --json counts %s, the jobs table %s" % (got, want))
            if jobs.get("total") != sum(want.values()):
                v("status --json total %s, the jobs table %d" % (jobs.get("total"),
                                                                 sum(want.values())))
            per_q = {}
            for r in self.sql("SELECT q.text, j.model_id, j.state, count(*) FROM jobs j "
                              "JOIN questions q ON q.id = j.question_id "
                              "GROUP BY q.text, j.model_id, j.state"):
                per_q.setdefault((r[0], r[1]), {})[r[2]] = r[3]
            for p in j["progress"]:
                want = per_q.get((p["question"], p["model"]), {})
                if p["running"] + p["stalled"] != want.get("running", 0):
                    v("status --json progress of %r: running %s + stalled %s, the jobs table %s" %
                      (p["question"], p["running"], p["stalled"], want.get("running", 0)))
                for s in ("queued", "done", "failed", "dead", "cancelled"):
                    if p[s] != want.get(s, 0):
                        v("status --json progress of %r: %s %s, the jobs table %s" %
                          (p["question"], s, p[s], want.get(s, 0)))
                if p["total"] != sum(want.values()):
                    v("status --json progress of %r: total %s, the jobs table %s" %
                      (p["question"], p["total"], sum(want.values())))
            if len(j["progress"]) != len(per_q):
                v("status --json has %d progress rows, the jobs table %d (question, model)" %
                  (len(j["progress"]), len(per_q)))
        for r in self.sql("SELECT question, model, total, queued, done, failed, dead, "
                          "cancelled FROM v_progress"):
            want = self.sql("SELECT count(*), " + ", ".join(
                "sum(CASE WHEN j.state = '%s' THEN 1 ELSE 0 END)" % st
                for st in ("queued", "done", "failed", "dead", "cancelled")) +
                " FROM jobs j JOIN questions q ON q.id = j.question_id "
                "WHERE q.text = ? AND j.model_id = ?", (r[0], r[1]))[0]
            if tuple(r[2:]) != tuple(want):
                v("v_progress row %r: %s, the jobs table %s" % (r[0], r[2:], want))
        bad = self.sql("SELECT j.id FROM jobs j JOIN answers a ON a.job_id = j.id "
                       "WHERE j.state = 'cancelled' LIMIT 5")
        if bad:
            v("cancelled jobs with an answer: %s" % bad)
        with self.cancel_lock:
            withdrawn = dict(self.withdrawn)
        if withdrawn:
            # an answer its worker started before the cancel may still come (a late answer is
            # kept, README "Withdrawing work"); one started after it may not
            rows = self.sql("SELECT j.id, j.state, a.started_at FROM jobs j "
                            "LEFT JOIN answers a ON a.job_id = j.id WHERE j.state <> 'cancelled' "
                            "OR a.id IS NOT NULL")
            back = [r for r in rows if r[0] in withdrawn and
                    (r[2] is None or r[2] >= withdrawn[r[0]])]
            if back:
                v("jobs a cancel withdrew (not --state running), not requeued since, are "
                  "no longer cancelled, or answered by a worker that started after the cancel "
                  "(job, state, started_at; cancelled at): %s" %
                  [(r, withdrawn[r[0]]) for r in back[:5]])
        dup = self.sql("SELECT j.page_id, j.question_id, j.model_id, count(*) FROM answers a "
                       "JOIN jobs j ON j.id = a.job_id GROUP BY j.page_id, j.question_id, "
                       "j.model_id, j.generation_settings HAVING count(*) > 1 LIMIT 5")
        if dup:
            v("more than one answer for one (page, question, model, settings): %s" % dup)
        bad = self.sql("SELECT j.id FROM jobs j WHERE j.state = 'done' AND NOT EXISTS "
                       "(SELECT 1 FROM answers a WHERE a.job_id = j.id) LIMIT 5")
        if bad:
            v("done jobs without an answer: %s" % bad)
        self.check_pages(v)
        now = {(r[0], r[1]) for r in self.sql("SELECT job_id, finished_at FROM answers")}
        kept = {(r[0], r[1]) for r in self.sql("SELECT job_id, finished_at FROM "
                                                "answers_superseded")}
        lost = self.seen_answers - now - kept
        if lost:
            v("answers seen before are gone (neither answers nor answers_superseded): %s" %
              sorted(lost)[:5])
        self.seen_answers |= now
        if not final:
            return
        left = self.sql("SELECT id, state, lease_owner FROM jobs WHERE state IN "
                        "('queued', 'running') OR lease_owner IS NOT NULL LIMIT 5")
        if left:
            v("after the last run --until-empty: jobs left %s" % left)
        bad = self.sql("SELECT j.id, j.state FROM jobs j JOIN answers a ON a.job_id = j.id "
                       "WHERE j.state <> 'done' LIMIT 5")
        if bad:
            v("answered jobs not done after the queue drained: %s" % bad)
        seen = {}
        for key in self.chain_rows[False]:
            seen[key] = seen.get(key, 0) + 1
        twice = [k for k, n in seen.items() if n > 1]
        if twice:
            v("exported more than once: %d answers, e.g. %s" % (len(twice), twice[:5]))
        missing = now - set(seen)
        if missing:
            v("answers no export wrote: %d, e.g. %s" % (len(missing), sorted(missing)[:5]))
        ghost = set(seen) - now - kept
        if ghost:
            v("exported rows of answers not stored: %s" % sorted(ghost)[:5])
        # the --current chain: an answer under each path that held its page's bytes when it
        # was exported, so no (answer, path) twice, and nothing that was never stored
        seen_current = {}
        for key in self.chain_rows[True]:
            seen_current[key] = seen_current.get(key, 0) + 1
        twice = [k for k, n in seen_current.items() if n > 1]
        if twice:
            v("export --current chain: an answer under one path more than once: %d, e.g. %s" %
              (len(twice), twice[:5]))
        ghost = {k[:2] for k in seen_current} - now - kept
        if ghost:
            v("export --current chain: rows of answers not stored: %s" % sorted(ghost)[:5])
        # an answer committed once the archive stopped changing (the last runs) and under a
        # current path now was under it when the chain's last export ran: it is in the chain
        # (an earlier one may not be: a copy of a file that appears later does not bring the
        # answers exported before it again)
        missing = {(r[0], r[1]) for r in self.sql(
            "SELECT v.job_id, v.finished_at FROM v_current_answers v JOIN answers a ON "
            "a.job_id = v.job_id WHERE a.commit_seq > ?", (self.seq_settled,))} - \
            {k[:2] for k in seen_current}
        if missing:
            v("export --current chain: answers under the current paths it never wrote: %d, "
              "e.g. %s" % (len(missing), sorted(missing)[:5]))
        self.summary = (counts, len(now), len(kept), len(self.chain_rows[False]),
                        self.chain_runs[False])


    def page_file(self, sha):
        return os.path.join(self.pages, sha[:2], sha[2:4], sha + ".png")

    def check_pages(self, v):
        """What docqa prune may not break (README: Reclaiming space), nothing running now."""
        # a current document's page names a whole file: none was removed from under a row that
        # committed while a prune ran, nor left set aside (a page with only a job queued may
        # have lost it before: a job requeued about a pruned page fails, saying so)
        missing = [r for r in self.sql("SELECT p.id, p.status, p.image_sha256 FROM pages p "
                                       "WHERE p.image_sha256 IS NOT NULL AND p.document_id IN "
                                       "(SELECT id FROM documents_current)")
                   if not os.path.isfile(self.page_file(r[2]))]
        if missing:
            v("pages of current documents whose image file is missing (page, status, sha256): "
              "%s" % missing[:5])
        tmp = os.path.join(self.pages, ".tmp")
        aside = [n for n in (os.listdir(tmp) if os.path.isdir(tmp) else [])
                 if n.startswith("prune-")]
        if aside:
            v("files a prune set aside, left in %s: %s" % (tmp, aside[:5]))
        # prune deletes no row
        ids = {r[0] for r in self.sql("SELECT id FROM pages")}
        if self.seen_pages - ids:
            v("page rows gone: %s" % sorted(self.seen_pages - ids)[:5])
        self.seen_pages |= ids
        # a job that found its image missing says why: pruned (only prune removes a page file
        # here; the plain message is the store's damage, or a live page's file pruned)
        bad = [r for r in self.sql("SELECT id, state, last_error FROM jobs "
                                   "WHERE last_error LIKE '%page image missing%'")
               if "pruned by docqa prune" not in r[2]]
        if bad:
            v("jobs failed on a missing image, not one prune removed: %s" % bad[:5])


class ScratchServer:
    """A PostgreSQL server of its own in a temporary folder, as tests/store/pg_testlib.c starts."""

    def __init__(self):
        self.dir = None
        self.bin = None
        self.location = None

    def run(self, argv):
        if os.geteuid() == 0:  # initdb refuses root
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + argv
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def start(self):
        base = "/usr/lib/postgresql"
        versions = sorted((int(v), v) for v in (os.listdir(base) if os.path.isdir(base) else [])
                          if v.isdigit() and os.access(os.path.join(base, v, "bin", "pg_ctl"),
                                                       os.X_OK))
        if not versions:
            return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
        self.bin = os.path.join(base, versions[-1][1], "bin")
        self.dir = tempfile.mkdtemp(prefix="docqa-soak-pg-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody", "nogroup")
        data = os.path.join(self.dir, "data")
        rc, out = self.run([os.path.join(self.bin, "initdb"), "-D", data, "-A", "trust", "-U",
                            "postgres", "-E", "UTF8", "--no-locale"])
        if rc != 0:
            die("initdb failed: " + out)
        opts = ("-k %s -c listen_addresses='' -c fsync=off -c max_connections=200" % self.dir)
        rc, out = self.run([os.path.join(self.bin, "pg_ctl"), "-D", data, "-o", opts, "-l",
                            os.path.join(self.dir, "log"), "-w", "start"])
        if rc != 0:
            die("pg_ctl start failed: " + out)
        admin = "postgresql:///postgres?host=%s&user=postgres" % self.dir
        p = subprocess.run(["psql", "-X", "-q", "-d", admin, "-c", "CREATE DATABASE soak"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            die("CREATE DATABASE failed: " + p.stdout.decode("utf-8", "replace"))
        self.location = "postgresql:///soak?host=%s&user=postgres" % self.dir
        return None

    def stop(self):
        self.run([os.path.join(self.bin, "pg_ctl"), "-D", os.path.join(self.dir, "data"), "-m",
                  "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        sys.stdout.write(usage())
        return 0
    p = Parser(add_help=False)
    p.add_argument("--docqa", default=os.path.join(ROOT, "build", "cli", "docqa"))
    p.add_argument("--model")
    p.add_argument("--work")
    p.add_argument("--seed", type=int)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lease", type=int, default=3)
    p.add_argument("--quiet-every", type=float, default=15)
    p.add_argument("--pg", nargs="?", const="scratch")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--verbose", action="store_true")
    try:
        a = p.parse_args()
    except UsageError as e:
        sys.stderr.write("soak: %s\n%s" % (e, usage()))
        return 2
    if a.concurrency < 1 or a.lease < 1 or a.seconds <= 0 or a.steps < 0:
        sys.stderr.write("soak: --concurrency and --lease take 1 or more, --seconds more than 0\n")
        return 2
    if a.seed is None:
        a.seed = int(time.time() * 1000) % 1000000007
    a.model = find_model(a.model)
    if a.model is None:
        print("soak: skipped: no model (../shared/models/tiny-smolvlm-b512, or models/demo-tiny "
              "with weights written)")
        return 77
    if not os.access(a.docqa, os.X_OK):
        die("no docqa binary at %s (build it, or give --docqa)" % a.docqa)
    if a.pg and shutil.which("psql") is None:
        print("soak: skipped: --pg needs psql")
        return 77
    work = a.work or tempfile.mkdtemp(prefix="docqa-soak-")
    os.makedirs(work, exist_ok=True)
    server = None
    if a.pg == "scratch":
        server = ScratchServer()
        why = server.start()
        if why:
            print("soak: skipped: " + why)
            return 77
        a.pg = server.location
    try:
        return soak(a, work)
    finally:
        if server:
            server.stop()


def soak(a, work):
    print("soak: seed %d, %d at once, %s s, %s, work %s" %
          (a.seed, a.concurrency, a.seconds, "PostgreSQL" if a.pg else "SQLite", work), flush=True)
    s = Soak(a, work)
    s.setup()
    s.run()
    steps = s.steps
    if s.violations:
        print("soak: FAILED with seed %d (%d steps); the action log:" % (a.seed, steps))
        for e in s.log:
            print("  %8.3f t%s %-8s rc=%s %s %s" % (e[0], e[1], e[2], e[4], e[3], e[5]))
        print("soak: %d violations:" % len(s.violations))
        for what in s.violations:
            print("  - " + what)
        print("soak: replay: scripts/soak.py --seed %d --concurrency %d --seconds %s (work %s "
              "kept)" % (a.seed, a.concurrency, a.seconds, work))
        return 1
    counts, answers, superseded, exported, exports = s.summary
    print("soak: ok: seed %d, %d steps in %.0f s; jobs %s; %d answers (%d superseded); %d rows "
          "in %d exports; %d prunes (%d dry runs) removed %d page files" %
          (a.seed, steps, time.monotonic() - s.t0, counts, answers, superseded, exported,
           exports, s.prunes["runs"], s.prunes["dry"], s.prunes["removed"]))
    if not a.keep and not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
