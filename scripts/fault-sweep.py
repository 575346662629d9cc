#!/usr/bin/env python3
# Fault sweep: fails every call of a class of system calls, one point a run, under the queue
# commands, and checks that nothing stored is lost and that each failure is reported.
#
#   scripts/fault-sweep.py [--docqa BINARY] [--model DIR] [--work DIR] [--commands A,B,...]
#                          [--classes A,B,...] [--max-points K] [--quick] [--keep] [--json FILE]
#
#   --docqa BINARY   the binary under test (default build/cli/docqa)
#   --model DIR      a SmolVLM snapshot (default ../shared/models/tiny-smolvlm-b512, else the
#                    bundled models/demo-tiny when its weights were written)
#   --work DIR       where the databases are made (default: a temporary folder, removed after)
#   --commands LIST  of: ingest ask run1 run2 requeue cancel migrate migrate-to export prune
#                    (default all)
#   --classes LIST   of: write pwrite fsync fdatasync ftruncate openat rename unlink mmap read
#                    read-pages openat-pages store-openat store-mkdir store-write store-fsync
#                    store-rename store-unlink store-stat store-utimensat store-utimensat-eperm
#                    kill-pwrite kill-write (default all)
#   --max-points K   at most K points a (command, class): 1, K evenly spread, the last
#                    (default 40; 0: every call)
#   --quick          the subset ctest runs: ingest run2 export migrate x pwrite fsync
#                    kill-pwrite, 5 points each, and 2 each of run2 x read, read-pages,
#                    ingest x store-write, store-utimensat and prune x store-openat,
#                    store-unlink
#   --keep           keep the folder of every failing point (with the strace log)
#   --json FILE      every point's outcome, as JSON
#
# For each command it makes a database with the model (4 documents ingested, one question
# answered, one queued, one cancelled; an old database at schema 5 for migrate; for prune, that
# database with an old version's page, a gone file's and a file no page names, all past
# `--grace 3600`), runs the command
# once without faults (the reference) and once under strace counting the calls of each class,
# then for N = 1..K runs it on a fresh copy with the N-th call failed by strace's fault injection
# (`-e inject=SYSCALL:error=E:when=N`; the kill classes: SIGKILL at that call, a crash). strace
# counts calls per process, so under `run --workers 2` each worker fails its own N-th call.
# openat, mmap and read are failed only on the database's files (db, -wal, -journal, -shm);
# read-pages and openat-pages only on the page files the database held (what run reads);
# store-* only where the call names a path in the page store (what ingest writes: its new files'
# names are known only once made, so the points are the calls the counting run saw there, and
# another process's N-th call fails with them). store-utimensat fails ingest's touch of a page
# file (EIO: that page fails as store_failed, its file named; EPERM: taken as "check it is
# there", the run ends as the reference). Checked:
#   a) exit status: not 0 unless the database ends as the reference left it (a failure retried
#      harmlessly); no process killed by a signal but the injected SIGKILL; no sanitizer report
#   b) on an error exit, stderr (or the error of a job the run failed: docqa status shows it)
#      names the database (or the file whose call failed) and says what failed in words (the
#      errno's text)
#   c) PRAGMA integrity_check is ok, every document, page, job and answer committed before the
#      run is still there, unchanged, and every page row names a file that holds its bytes
#      (a page no longer live, its file pruned: none, or its bytes)
#   d) the same command run again without faults exits 0 and leaves the database as the
#      reference run did (documents, pages and their files, jobs' states, answers; not times,
#      attempts or lease ids); export's file is the reference's, byte for byte; prune's page
#      store holds the reference's files, none left set aside in .tmp. A job failed for
#      good or dead is taken back first with `requeue --failed --dead`, as a user would once the
#      disk is mended
# A page file whose read or open failed (read-pages, openat-pages: the system's error, not the
# file's) is retried, not failed for good: the run may end as the reference did (exit 0, its job
# answered after the backoff), and then its job_errors hold a `page_read` error naming the file
# and the errno in words.
# Exit status: 0 every point passed, 1 some failed (listed), 2 usage or setup error, 77 strace
# cannot trace here, or (--quick) no model was found: nothing tried.
import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pdf_fixture import one_page_pdf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (syscalls, injected error or None for SIGKILL, which calls: None every one, "db" those on
# the database's files, "pages" those on the page files the database held before the run,
# "page-store" those naming anything under the page store, new files included)
CLASSES = collections.OrderedDict(
    [
        ("write", ("write,writev", "ENOSPC", None)),
        ("pwrite", ("pwrite64,pwritev", "ENOSPC", None)),
        ("fsync", ("fsync", "EIO", None)),
        ("fdatasync", ("fdatasync", "EIO", None)),
        ("ftruncate", ("ftruncate", "EIO", None)),
        ("openat", ("openat", "EIO", "db")),
        ("rename", ("rename,renameat,renameat2", "EIO", None)),
        ("unlink", ("unlink,unlinkat", "EIO", None)),
        ("mmap", ("mmap", "ENOMEM", "db")),
        ("read", ("read,pread64", "EIO", "db")),
        ("read-pages", ("read,pread64", "EIO", "pages")),
        ("openat-pages", ("openat", "EIO", "pages")),
        ("store-openat", ("openat", "EIO", "page-store")),
        ("store-mkdir", ("mkdir,mkdirat", "EIO", "page-store")),
        ("store-write", ("write,writev", "ENOSPC", "page-store")),
        ("store-fsync", ("fsync", "EIO", "page-store")),
        ("store-rename", ("rename,renameat,renameat2", "EIO", "page-store")),
        ("store-unlink", ("unlink,unlinkat", "EIO", "page-store")),
        ("store-stat", ("newfstatat,statx,lstat,stat", "EIO", "page-store")),
        ("store-utimensat", ("utimensat", "EIO", "page-store")),
        ("store-utimensat-eperm", ("utimensat", "EPERM", "page-store")),
        ("kill-pwrite", ("pwrite64,pwritev", None, None)),
        ("kill-write", ("write,writev", None, None)),
    ]
)
# the errno's text, or SQLite's own words for a full disk
ERRNO_WORDS = {
    "ENOSPC": [os.strerror(28), "disk is full"],
    "EIO": [os.strerror(5)],
    "ENOMEM": [os.strerror(12)],
    "EPERM": [os.strerror(1)],
}
CRASH_SIGNALS = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS"}
COMMANDS = ["ingest", "ask", "run1", "run2", "requeue", "cancel", "migrate", "migrate-to", "export",
            "prune"]
QUICK_COMMANDS = ["ingest", "run2", "export", "migrate", "prune"]
QUICK_CLASSES = ["pwrite", "fsync", "kill-pwrite"]
# and a few points of the classes of reads and of the page store: (command, class, points)
QUICK_EXTRA = [("run2", "read", 2), ("run2", "read-pages", 2), ("ingest", "store-write", 2),
               ("ingest", "store-utimensat", 2), ("prune", "store-openat", 2),
               ("prune", "store-unlink", 2)]
# quick commands run only with their QUICK_EXTRA classes
QUICK_EXTRA_ONLY = ["prune"]
EXTRA_DOCS = [
    "pdf/pypdf-libreoffice-writer.pdf",
    "pdf/qpdf-bad1.pdf",
    "tiff/pillow-seek_too_large.tif",
]
RUN_TIMEOUT = 180
QUEUED = "Who signed it?"  # the question the base database has queued, not answered
# the images of live pages (a current document's, or with a job queued or running), which docqa
# prune keeps (store/store_documents.c)
LIVE_IMAGES_SQL = (
    "SELECT DISTINCT p.image_sha256 FROM pages p WHERE p.image_sha256 IS NOT NULL AND "
    "(p.document_id IN (SELECT id FROM documents_current) OR EXISTS (SELECT 1 FROM jobs j "
    "WHERE j.page_id = p.id AND j.state IN ('queued', 'running')))"
)
# the rows committed before a run, by id: what no run may change or lose
COMMITTED_SQL = {
    "documents": "SELECT id, path, version, sha256, bytes, kind, status FROM documents",
    "pages": "SELECT id, document_id, page_number, render_settings, image_sha256 FROM pages",
    "jobs": "SELECT id, page_id, question_id, model_id, job_key FROM jobs",
}


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


class Done(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def die(msg, status=2):
    print("fault-sweep: " + msg, file=sys.stderr)
    sys.exit(status)


def preflight(a, name):
    """What a sweep needs before it starts (shared with crash-sweep.py, `name` its own): the
    binary (else exit 2), a.model filled in when not given, strace able to trace. None when all
    is there, else the exit status of a skip said on stdout (77: no strace; no model under
    --quick, ctest's run)."""
    # the commands run in the work folders: paths given relative to here are made whole
    a.docqa = os.path.abspath(a.docqa)
    if a.model is not None:
        a.model = os.path.abspath(a.model)
    if not os.access(a.docqa, os.X_OK):
        print("%s: %s: no docqa binary there (build it, or give --docqa)" % (name, a.docqa),
              file=sys.stderr)
        sys.exit(2)
    if a.model is None:
        for m in (os.path.join(os.path.dirname(ROOT), "shared", "models", "tiny-smolvlm-b512"),
                  os.path.join(ROOT, "models", "demo-tiny")):
            if os.path.exists(os.path.join(m, "model.safetensors")):
                a.model = m
                break
        else:
            msg = ("no model: give --model (../shared/models/tiny-smolvlm-b512 is not here, and "
                   "models/demo-tiny has no weights: scripts/make-demo-model.py writes them)")
            if a.quick:  # ctest's run: a skip, saying why
                print("%s: %s: nothing tried" % (name, msg))
                return 77
            print("%s: %s" % (name, msg), file=sys.stderr)
            sys.exit(2)
    if shutil.which("strace") is None or subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ).returncode != 0:
        print("%s: strace cannot trace here (not installed, or ptrace refused): nothing tried"
              % name)
        return 77
    return None


def docqa_env():
    env = dict(os.environ)
    # LeakSanitizer cannot run under ptrace: a sanitizer build would fail every traced process
    asan = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "detect_leaks=0"
    env.pop("DOCQA_DB", None)
    return env


def run_plain(argv, stdout=None, timeout=RUN_TIMEOUT):
    try:
        p = subprocess.run(
            argv, stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=docqa_env(), timeout=timeout,
        )
        return p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return "timeout", ""


def must(argv, what, stdout=None):
    rc, err = run_plain(argv, stdout=stdout)
    if rc != 0:
        die("%s failed (%s): %s\n%s" % (what, rc, " ".join(argv), err))


# ---- databases


def make_base(a, work):
    base = os.path.join(work, "base")
    os.makedirs(base)
    db = os.path.join(base, "docqa.db")
    m = ["--model", a.model]
    docs = os.path.join(ROOT, "examples", "docs")
    must([a.docqa, "ingest", "--db", db, "--n-res", "1"] + m + [docs], "ingest")
    must([a.docqa, "ask", "--db", db] + m + ["What is the total?"], "ask")
    must([a.docqa, "run", "--db", db] + m + ["--workers", "1", "--until-empty"], "run")
    must([a.docqa, "ask", "--db", db] + m + [QUEUED], "ask")
    must([a.docqa, "ask", "--db", db] + m + ["Which date?"], "ask")
    must([a.docqa, "cancel", "--db", db, "--question", "Which date?"], "cancel")
    checkpoint(db)
    extra = os.path.join(work, "extra")
    os.makedirs(extra)
    corpus = os.path.join(os.path.dirname(ROOT), "shared", "corpus")
    for rel in EXTRA_DOCS:
        src = os.path.join(corpus, rel)
        if os.path.exists(src):
            shutil.copy(src, extra)
    # a file of its own, so that ingest writes a page whatever the corpus holds
    shutil.copy(os.path.join(ROOT, "examples", "docs", "receipt.pdf"), os.path.join(extra, "a.pdf"))
    with open(os.path.join(extra, "a.pdf"), "ab") as f:
        f.write(b"\n%% fault-sweep\n")
    return base, extra


def version_pdf(n):
    """A one-page PDF of its own look for each n: a page image no other file shares."""
    return one_page_pdf("Total: %d.00 EUR (copy %d)" % (n * 7, n), 20 + n, 150)


def age_store(d, seconds=7200):
    """Every file of d's page store made `seconds` old: past prune's grace period."""
    when = time.time() - seconds
    for top, _, names in os.walk(os.path.join(d, "docqa.db.pages")):
        for x in names:
            os.utime(os.path.join(top, x), (when, when))


def make_prune(a, base, work):
    """The base database and a page store for docqa prune: an old version's page (its file
    changed since), a gone file's, and a file no page names, all older than the grace period."""
    d = os.path.join(work, "prune")
    copy_db(base, d)
    db = os.path.join(d, "docqa.db")
    docs = os.path.join(work, "prune-docs")
    os.makedirs(docs)
    for name, n in (("changed.pdf", 1), ("gone.pdf", 2), ("kept.pdf", 3)):
        with open(os.path.join(docs, name), "wb") as f:
            f.write(version_pdf(n))
    m = ["--model", a.model]
    must([a.docqa, "ingest", "--db", db, "--n-res", "1"] + m + [docs], "ingest")
    with open(os.path.join(docs, "changed.pdf"), "wb") as f:
        f.write(version_pdf(4))
    os.unlink(os.path.join(docs, "gone.pdf"))
    must([a.docqa, "ingest", "--db", db, "--n-res", "1"] + m + [docs], "ingest")
    orphan = os.path.join(db + ".pages", "ab", "cd", "abcd" + "0" * 60 + ".png")
    os.makedirs(os.path.dirname(orphan), exist_ok=True)
    with open(orphan, "wb") as f:
        f.write(b"an ingest killed before its row")
    checkpoint(db)
    age_store(d)
    return d


def make_old(base, work):
    """The base database's rows in a database at schema 5, made as a docqa of schema 5 made it."""
    old = os.path.join(work, "old")
    os.makedirs(old)
    db = os.path.join(old, "docqa.db")
    shutil.copytree(os.path.join(base, "docqa.db.pages"), db + ".pages")
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
        "NULL, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))) STRICT"
    )
    names = sorted(os.listdir(os.path.join(ROOT, "schema", "sqlite")))
    for name in names:
        num = int(name[:4])
        if num > 5:
            break
        with open(os.path.join(ROOT, "schema", "sqlite", name), encoding="utf-8") as f:
            con.executescript(f.read())
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (num, name))
    con.execute("PRAGMA user_version = 5")
    con.execute("ATTACH ? AS src", (os.path.join(base, "docqa.db"),))
    tables = con.execute("SELECT name FROM main.sqlite_schema WHERE type = 'table'").fetchall()
    for (table,) in tables:
        if table == "schema_migrations":
            continue
        mine = [r[1] for r in con.execute("PRAGMA main.table_info(%s)" % table)]
        theirs = {r[1] for r in con.execute("PRAGMA src.table_info(%s)" % table)}
        cols = ",".join(c for c in mine if c in theirs)
        # rows schema 5 cannot hold (cancelled jobs) are left out, as they could not be there
        con.execute(
            "INSERT OR IGNORE INTO main.%s (%s) SELECT %s FROM src.%s" % (table, cols, cols, table)
        )
    con.commit()
    con.execute("DETACH src")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return old


def checkpoint(db):
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def copy_db(src, dst):
    shutil.copytree(src, dst)


# ---- what the database holds


def query(db, sql):
    # read-write, as docqa opens it: a hot journal left by a failed run is rolled back first
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def integrity(db):
    con = sqlite3.connect(db)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        con.close()
    problems = [r[0] for r in rows if r[0] != "ok"]
    if fk:
        problems.append("foreign_key_check: %d rows" % len(fk))
    return problems


def has_table(db, name):
    sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '%s'" % name
    return bool(query(db, sql))


def state(db):
    """What a run leaves, without times, attempts or lease ids: comparable between runs."""
    s = {}
    s["documents"] = sorted(
        query(
            db,
            "SELECT path, version, sha256, bytes, kind, page_count, status, error_code "
            "FROM documents",
        )
    )
    s["pages"] = sorted(
        query(
            db,
            "SELECT d.path, d.version, p.page_number, p.render_settings, p.image_sha256, p.status "
            "FROM pages p JOIN documents d ON d.id = p.document_id",
        )
    )
    if has_table(db, "jobs"):
        s["jobs"] = sorted(
            query(
                db,
                "SELECT d.path, p.page_number, q.text, j.model_id, j.state FROM jobs j "
                "JOIN pages p ON p.id = j.page_id JOIN documents d ON d.id = p.document_id "
                "JOIN questions q ON q.id = j.question_id",
            )
        )
        s["answers"] = sorted(
            query(
                db,
                "SELECT d.path, p.page_number, q.text, a.text, a.model_id FROM answers a "
                "JOIN jobs j ON j.id = a.job_id JOIN pages p ON p.id = j.page_id "
                "JOIN documents d ON d.id = p.document_id JOIN questions q ON q.id = j.question_id",
            )
        )
    s["user_version"] = query(db, "PRAGMA user_version")
    store = db + ".pages"
    missing = []
    shas = query(db, "SELECT DISTINCT image_sha256 FROM pages WHERE image_sha256 IS NOT NULL")
    # docqa prune removes the files of pages no longer live: such a file may be missing
    live = set()
    if has_table(db, "jobs"):
        live = {r[0] for r in query(db, LIVE_IMAGES_SQL)}
    for (sha,) in shas:
        f = os.path.join(store, sha[:2], sha[2:4], sha + ".png")
        try:
            with open(f, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != sha:
                    missing.append(sha + " (other bytes)")
        except FileNotFoundError:
            if sha in live or not has_table(db, "jobs"):
                missing.append(sha + " (missing)")
        except OSError:
            missing.append(sha + " (missing)")
    s["page_files_bad"] = missing
    return {k: [list(r) if isinstance(r, tuple) else r for r in v] for k, v in s.items()}


def store_files(db):
    """docqa prune's result: the page store's files (relative), and what it set aside in .tmp."""
    store = db + ".pages"
    files = []
    for top, dirs, names in os.walk(store):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        files += [os.path.relpath(os.path.join(top, x), store) for x in names]
    tmp = os.path.join(store, ".tmp")
    # (not its clock file, which the next prune removes: no page's)
    aside = [
        x
        for x in (os.listdir(tmp) if os.path.isdir(tmp) else [])
        if x.startswith("prune-") and not x.startswith("prune-clock-")
    ]
    return {"files": sorted(files), "aside": sorted(aside)}


def committed(db):
    """The rows committed before a run, exactly, by id: what no run may change or lose."""
    c = {}
    for table in ("documents", "pages", "jobs"):
        c[table] = query(db, COMMITTED_SQL[table])
    cols = [r[1] for r in query(db, "PRAGMA table_info(answers)")]
    keep = [x for x in cols if x not in ("superseded",)]
    c["answers"] = query(db, "SELECT %s FROM answers" % ",".join(keep))
    c["_answer_cols"] = keep
    return c


def job_errors(db):
    try:
        if not has_table(db, "jobs"):
            return set()
        return {r[0] for r in query(db, "SELECT last_error FROM jobs WHERE last_error IS NOT NULL")}
    except sqlite3.Error:
        return set()


def failed_jobs(db):
    if not has_table(db, "jobs"):
        return 0
    return query(db, "SELECT count(*) FROM jobs WHERE state IN ('failed', 'dead')")[0][0]


def error_rows(db):
    """Every (kind, message) in job_errors: a retried attempt's error is kept there."""
    try:
        if not has_table(db, "job_errors"):
            return set()
        return set(query(db, "SELECT kind, message FROM job_errors"))
    except sqlite3.Error:
        return set()


def lost_rows(db, before):
    out = []
    for table in ("documents", "pages", "jobs", "answers"):
        if table == "answers":
            sql = "SELECT %s FROM answers" % ",".join(before["_answer_cols"])
        else:
            sql = COMMITTED_SQL[table]
        try:
            now = set(query(db, sql))
        except sqlite3.Error as e:
            return ["%s: %s" % (table, e)]
        gone = [r for r in before[table] if r not in now]
        if gone:
            out.append(
                "%s: %d of %d committed rows lost or changed (first: %r)"
                % (table, len(gone), len(before[table]), gone[0])
            )
    return out


def lost_by_state(db, before_state):
    """migrate rewrites tables: the rows before, by what they hold, are still there."""
    try:
        now = state(db)
    except sqlite3.Error as e:
        return [str(e)]
    out = []
    for k in ("documents", "pages", "answers"):
        gone = [r for r in before_state.get(k, []) if r not in now.get(k, [])]
        if gone:
            out.append("%s: %d rows lost (first: %r)" % (k, len(gone), gone[0]))
    return out


def diff(a, b, where=""):
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            out += diff(x, y, where + k + ".")
        elif isinstance(x, list) and isinstance(y, list):
            extra = [r for r in x if r not in y]
            short = [r for r in y if r not in x]
            out.append("%s%s: %r more, %r missing" % (where, k, extra[:2], short[:2]))
        else:
            out.append("%s%s: %r, not %r" % (where, k, x, y))
    return out


# ---- commands


class Command:
    def __init__(self, name, src, argv, out=None, dest=None):
        self.name, self.src, self.argv, self.out, self.dest = name, src, argv, out, dest
        self.ref_rc = 0  # what the run without faults exits with (ingest: 1, a file failed)

    def files(self, d):
        db = os.path.join(d, "docqa.db")
        argv = [x.replace("@DB@", db).replace("@DIR@", d) for x in self.argv]
        return db, argv


def commands(a, base, old, extra, prune=None):
    m = ["--model", a.model]
    # a worker killed holds its jobs until its lease expires: the run after it waits that long
    lease = ["--lease", "3", "--until-empty"]
    return {
        "ingest": Command("ingest", base, ["ingest", "--db", "@DB@", "--n-res", "1"] + m + [extra]),
        "ask": Command("ask", base, ["ask", "--db", "@DB@"] + m + ["What is the sum?", "Who?"]),
        "run1": Command("run1", base, ["run", "--db", "@DB@"] + m + ["--workers", "1"] + lease),
        "run2": Command("run2", base, ["run", "--db", "@DB@"] + m + ["--workers", "2"] + lease),
        "requeue": Command("requeue", base, ["requeue", "--db", "@DB@", "--cancelled"]),
        "cancel": Command("cancel", base, ["cancel", "--db", "@DB@", "--question", QUEUED]),
        "migrate": Command("migrate", old, ["migrate", "--from", "sqlite:@DB@"]),
        "migrate-to": Command(
            "migrate-to",
            base,
            ["migrate", "--from", "sqlite:@DB@", "--to", "sqlite:@DIR@/copy.db"],
            dest="copy.db",
        ),
        "export": Command(
            "export",
            base,
            ["export", "--db", "@DB@", "--format", "csv", "--checkpoint-file", "@DIR@/ck"],
            out="out.csv",
        ),
        "prune": Command("prune", prune, ["prune", "--db", "@DB@", "--grace", "3600"]),
    }


def invoke(a, cmd, d, prefix=(), timeout=RUN_TIMEOUT):
    """Its exit status and what it said: stderr, and stdout where that is not its data (ingest
    lists the files that failed there)."""
    db, argv = cmd.files(d)
    out = open(os.path.join(d, cmd.out), "wb") if cmd.out else subprocess.PIPE
    try:
        p = subprocess.run(
            list(prefix) + [a.docqa] + argv,
            stdout=out,
            stderr=subprocess.PIPE,
            env=docqa_env(),
            timeout=timeout,
        )
        rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
        if not cmd.out:
            err += p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    finally:
        if cmd.out:
            out.close()
    return rc, err


def result_state(cmd, d):
    db = os.path.join(d, "docqa.db")
    s = {"db": state(db)}
    if cmd.name == "prune":
        s["store"] = store_files(db)
    if cmd.dest:
        dest = os.path.join(d, cmd.dest)
        # a copy that failed may leave its file empty, which a run again fills
        made = os.path.exists(dest) and has_table(dest, "documents")
        s["dest"] = state(dest) if made else None
    if cmd.out:
        with open(os.path.join(d, cmd.out), "rb") as f:
            s["out"] = hashlib.sha256(f.read()).hexdigest()
        ck = os.path.join(d, "ck")
        s["ck"] = open(ck, encoding="utf-8").read() if os.path.exists(ck) else None
    return s


def page_files(db):
    out = []
    for top, _, names in os.walk(db + ".pages"):
        out += [os.path.join(top, x) for x in sorted(names) if x.endswith(".png")]
    return sorted(out)


def strace_prefix(cls, trace_file, db, n=None):
    syscalls, error, which = CLASSES[cls]
    p = ["strace", "-f", "-q", "-y", "-o", trace_file, "-e", "trace=" + syscalls]
    if which == "db":
        for suffix in ("", "-wal", "-journal", "-shm"):
            p += ["-P", db + suffix]
    elif which == "pages":
        # a command that reads no page is traced on a path nothing opens: no calls, no points
        for f in page_files(db) or [db + ".pages/none"]:
            p += ["-P", f]
    if n is not None:
        what = "error=" + error if error else "signal=SIGKILL"
        p += ["-e", "inject=%s:%s:when=%d" % (syscalls, what, n)]
    return p


CALL = re.compile(r"^(\d+)\s+([a-z0-9_]+)\(")


def count_calls(trace_file, under=None):
    """The values of N that fail a call: strace counts each system call of each process apart.
    With `under`, only those whose path (or fd's path) holds it: strace's -P takes whole paths,
    and the page store's new files have names nobody knows before the run."""
    counts = collections.Counter()
    wanted = set()
    with open(trace_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = CALL.match(line)
            if m:
                key = (m.group(1), m.group(2))
                counts[key] += 1
                path = injected_path(line)
                if under is not None and path and under in path:
                    wanted.add(counts[key])
    if under is not None:
        return sorted(wanted)
    return list(range(1, max(counts.values()) + 1)) if counts else []


def points(calls, max_points):
    k = len(calls)
    if max_points == 0 or k <= max_points:
        return list(calls)
    step = (k - 1) / (max_points - 1)
    return sorted({calls[round(i * step)] for i in range(max_points)})


def trace_facts(trace_file, kill):
    """The injected calls, the signals processes died of, and whether the SIGKILL (if any) hit
    a process other than the command's own (a helper: ingest's render workers)."""
    injected, signalled, main, helper_killed = [], [], None, False
    unfinished = {}
    with open(trace_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            pid = line.split(" ", 1)[0]
            if main is None:
                main = pid
            # a call another thread interrupted is logged in two halves: its file is in the first
            if line.rstrip().endswith("<unfinished ...>"):
                unfinished[pid] = line.rstrip()[: -len("<unfinished ...>")]
            elif "resumed>" in line and pid in unfinished:
                line = unfinished.pop(pid) + line.split("resumed>", 1)[1]
            if kill and "+++ killed by SIGKILL" in line and line.split(" ", 1)[0] != main:
                helper_killed = True
            # an injected signal is not marked on its call: the process it killed tells
            if "(INJECTED)" in line or (kill and "+++ killed by SIGKILL" in line):
                injected.append(line.strip())
            m = re.search(r"\+\+\+ killed by (SIG[A-Z0-9]+)", line)
            if m:
                signalled.append(m.group(1))
    return injected, signalled, helper_killed


def injected_path(line):
    m = re.search(r"\(\d+<([^>]*)>", line)
    if m:
        return m.group(1)
    m = re.search(r'"([^"]*)"', line)
    return m.group(1) if m else None


def check_point(a, cmd, cls, n, ref, work):
    started = time.monotonic()
    d = os.path.join(work, "runs", "%s-%s-%d" % (cmd.name, cls, n))
    copy_db(cmd.src, d)
    db = os.path.join(d, "docqa.db")
    before = committed(db)
    before_state = state(db)
    before_failed = failed_jobs(db)
    trace_file = os.path.join(d, "strace.log")
    errors_before = job_errors(db)
    rows_before = error_rows(db)
    rc, err = invoke(a, cmd, d, strace_prefix(cls, trace_file, db, n))
    kill = CLASSES[cls][1] is None
    injected, signalled, helper_killed = trace_facts(trace_file, kill)
    # run records why a job failed in the job, not on stderr (docqa status shows it)
    said = err + "".join("\n" + x for x in job_errors(db) - errors_before)
    # strace counts each process's calls: under "page-store" the N-th call of another process
    # fails too; the one on the page store is the one whose file must be named
    if CLASSES[cls][2] == "page-store":
        injected.sort(key=lambda line: ".pages/" not in line)
    problems = []
    if rc == "timeout":
        problems.append("a) hung (more than %d s)" % RUN_TIMEOUT)
    if not injected:
        if rc != cmd.ref_rc:
            problems.append("a) exit %s with no fault injected: %s" % (rc, err.strip()))
    # docqa ends its own helpers with SIGKILL and SIGTERM (ingest's render workers): only the
    # signals of a crash count
    bad_signals = [s for s in signalled if s in CRASH_SIGNALS]
    if bad_signals:
        problems.append("a) killed by %s" % ",".join(bad_signals))
    if "Sanitizer" in err or "runtime error:" in err:
        problems.append("a) sanitizer report: " + err.strip().splitlines()[0])
    try:
        # a failed write to stderr, or to a pipe between docqa's own processes (which no full
        # disk or failing device refuses), loses or garbles the message itself: what is checked
        # then is that nothing crashed or was lost, not the message or the run after
        ipc = any(re.search(r"\(2<|\((?!1<)\d+<(pipe|socket):", line) for line in injected)
        same = injected and not kill and result_state(cmd, d) == ref
        if injected and not kill and rc == 0 and not same:
            got = "; ".join(diff(result_state(cmd, d), ref))[:600]
            problems.append("a) exit 0 after the fault, but not the reference's result: " + got)
        if injected and not kill and rc == 0 and CLASSES[cls][2] == "pages":
            # the page read the system failed was retried: its attempt's error says so, naming
            # the file and the errno
            new = error_rows(db) - rows_before
            paths = [p for p in (injected_path(x) for x in injected) if p]
            words = ERRNO_WORDS[CLASSES[cls][1]]
            if not any(
                k == "page_read" and any(p in m for p in paths) and any(w in m for w in words)
                for k, m in new
            ):
                problems.append(
                    "b) no page_read error names %s and says %r: %r"
                    % (paths[0] if paths else "the page", words[0], sorted(new)[:3])
                )
        # under page-store another process's N-th call may be the dynamic loader's, as docqa
        # starts itself again (its OpenMP settings) or a render worker: the libraries cannot be
        # found, the loader says so and exits 127 before any of docqa's code runs to say more
        loader = rc == 127 and any(
            re.search(r"(^/etc/ld\.so\.cache|\.so(\.[0-9]+)*)$", injected_path(x) or "")
            for x in injected
        )
        if (injected and isinstance(rc, int) and rc > 0 and not kill and not same and not ipc
                and not loader):
            path = injected_path(injected[0])
            # each process fails its own N-th call: the file of any of them may be the one named
            names = [db, cmd.dest, "standard output"] + [injected_path(x) for x in injected]
            named = any(x and x in said for x in names)
            if not named:
                problems.append("b) names neither the database nor %s: %s" % (path, said.strip()))
            words = ERRNO_WORDS[CLASSES[cls][1]]
            if cls == "openat":
                # nor for an open it then made read-only: which file could not be opened to write
                # is what can be said
                words = words + ["refused to open"]
            if not any(w in said for w in words):
                problems.append("b) stderr does not say %r: %s" % (words[0], said.strip()))
        ic = integrity(db)
        if ic:
            problems.append("c) integrity_check: " + "; ".join(ic[:3]))
        lost = lost_by_state(db, before_state) if cmd.name == "migrate" else lost_rows(db, before)
        problems += ["c) " + x for x in lost]
        # a page row committed names a file whole on disk, whatever failed (or was killed) after
        bad_files = state(db)["page_files_bad"]
        if bad_files:
            problems.append("c) page rows whose file is not whole: %s" % ", ".join(bad_files[:3]))
        if cmd.dest and os.path.exists(os.path.join(d, cmd.dest)):
            ic = integrity(os.path.join(d, cmd.dest))
            if ic:
                problems.append("c) %s integrity_check: %s" % (cmd.dest, "; ".join(ic[:3])))
        if CLASSES[cls][2] == "page-store" and any(
            not (injected_path(x) or "").startswith(d + "/") for x in injected
        ):
            # another process's N-th call failed too, outside the database and its page store
            # (a render worker's font configuration: the page rendered otherwise, and kept):
            # what that call changes is not the page store's doing
            raise Done()
        if ipc or (helper_killed and cmd.name == "ingest"):
            # a render worker killed is a renderer crash, which ingest records against the page
            # on purpose (render_crashed: not rendered again without --retry-failed)
            raise Done()
        if cmd.out and os.path.exists(os.path.join(d, "ck")):
            # the checkpoint moved on (the export was killed after it, while saying so): the
            # next export starts after it, so what this one wrote must be whole
            if result_state(cmd, d) != ref:
                why = "; ".join(diff(result_state(cmd, d), ref))[:600]
                problems.append("c) the checkpoint moved on, but the export is not whole: " + why)
            raise Done()
        if (cmd.out or cmd.dest) and rc == cmd.ref_rc:
            # an export that succeeded moved its checkpoint on (run again, it writes only what is
            # new) and a copy made refuses to be made again: what it wrote was compared above
            raise Done()
        if failed_jobs(db) > before_failed:
            # a job failed for good or dead (its page could not be read, every attempt): what a
            # user does, the disk mended, is to take it back
            must([a.docqa, "requeue", "--db", db, "--failed", "--dead"], "requeue --failed --dead")
        rc2, err2 = invoke(a, cmd, d)
        if cmd.dest and rc2 != 0 and "already holds" in err2 and result_state(cmd, d) == ref:
            pass  # the copy was whole (it failed after its commit): refusing a second is right
        elif rc2 != cmd.ref_rc:
            problems.append("d) the run again without faults exits %s: %s" % (rc2, err2.strip()))
        else:
            got = result_state(cmd, d)
            if got != ref:
                why = "; ".join(diff(got, ref))[:600]
                problems.append("d) the run again leaves another result: " + why)
    except Done:
        pass
    except (sqlite3.Error, OSError) as e:
        problems.append("c) the database cannot be read: %s" % e)
    outcome = {
        "command": cmd.name, "class": cls, "n": n, "exit": rc, "injected": injected[:2],
        "stderr": err.strip(), "problems": problems,
        "seconds": round(time.monotonic() - started, 2),
    }
    if problems and a.keep:
        outcome["kept"] = d
    else:
        shutil.rmtree(d, ignore_errors=True)
    return outcome


def main():
    p = Parser(add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--docqa", default=os.path.join(ROOT, "build", "cli", "docqa"))
    p.add_argument("--model")
    p.add_argument("--work")
    p.add_argument("--commands")
    p.add_argument("--classes")
    p.add_argument("--max-points", type=int, default=40)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json")
    try:
        a = p.parse_args()
    except UsageError as e:
        print("fault-sweep: %s" % e, file=sys.stderr)
        print("usage: scripts/fault-sweep.py [--docqa BINARY] ... (see --help)", file=sys.stderr)
        return 2
    if a.help:
        sys.stdout.write(usage())
        return 0
    cmds = a.commands.split(",") if a.commands else (QUICK_COMMANDS if a.quick else COMMANDS)
    classes = a.classes.split(",") if a.classes else (QUICK_CLASSES if a.quick else list(CLASSES))
    if a.quick and a.max_points == 40:
        a.max_points = 5
    for c in cmds:
        if c not in COMMANDS:
            die("unknown command %r (of %s)" % (c, " ".join(COMMANDS)))
    for c in classes:
        if c not in CLASSES:
            die("unknown class %r (of %s)" % (c, " ".join(CLASSES)))
    if a.max_points < 0 or a.max_points == 1:
        die("--max-points must be 0 or at least 2")
    skip = preflight(a, "fault-sweep")
    if skip is not None:
        return skip
    work = a.work or tempfile.mkdtemp(prefix="docqa-fault-sweep-")
    os.makedirs(work, exist_ok=True)
    try:
        return sweep(a, work, cmds, classes)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


def sweep(a, work, cmds, classes):
    base, extra = make_base(a, work)
    old = make_old(base, work)
    table = commands(a, base, old, extra, make_prune(a, base, work) if "prune" in cmds else None)
    results, summary = [], []
    for name in cmds:
        cmd = table[name]
        refdir = os.path.join(work, "ref", name)
        copy_db(cmd.src, refdir)
        rc, err = invoke(a, cmd, refdir)
        if rc not in (0, 1):
            die("%s without faults exits %s: %s" % (name, rc, err.strip()))
        cmd.ref_rc = rc
        ref = result_state(cmd, refdir)
        plan = [(cls, a.max_points) for cls in classes]
        if a.quick and not a.classes and name in QUICK_EXTRA_ONLY:
            plan = []
        if a.quick and not a.classes:
            plan += [(cls, k) for c, cls, k in QUICK_EXTRA if c == name]
        for cls, max_points in plan:
            cdir = os.path.join(work, "count", name, cls)
            copy_db(cmd.src, cdir)
            trace_file = os.path.join(cdir, "strace.log")
            prefix = strace_prefix(cls, trace_file, os.path.join(cdir, "docqa.db"))
            rc, err = invoke(a, cmd, cdir, prefix)
            if rc != cmd.ref_rc:
                die("%s under strace without faults exits %s: %s" % (name, rc, err.strip()))
            under = None
            if CLASSES[cls][2] == "page-store":
                under = os.path.join(cdir, "docqa.db.pages") + "/"
            calls = count_calls(trace_file, under)
            k = len(calls)
            shutil.rmtree(cdir)
            ns = points(calls, max_points)
            failed = 0
            for n in ns:
                o = check_point(a, cmd, cls, n, ref, work)
                results.append(o)
                if o["problems"]:
                    failed += 1
                    print("FAIL %s %s N=%d (exit %s)" % (name, cls, n, o["exit"]))
                    for pr in o["problems"]:
                        print("    " + pr)
                    sys.stdout.flush()
            summary.append((name, cls, k, len(ns), failed))
            print("%-10s %-11s calls %4d  points %3d  failed %3d" % (name, cls, k, len(ns), failed))
            sys.stdout.flush()
    total = sum(s[3] for s in summary)
    bad = sum(s[4] for s in summary)
    print(
        "fault-sweep: %d commands x %d classes: %d points, %d failed"
        % (len(cmds), len(classes), total, bad)
    )
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
