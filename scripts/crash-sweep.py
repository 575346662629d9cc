#!/usr/bin/env python3
# Crash sweep: what a POWER LOSS leaves, not only a killed process. Records every call that
# changes the files of a command (the database and its -wal, the page store, the export and its
# checkpoint file), then builds the states a machine stopping at a point of it may leave on disk
# and checks each one as a user would find it the morning after.
#
#   scripts/crash-sweep.py [--docqa BINARY] [--model DIR] [--work DIR] [--commands A,B,...]
#                          [--max-points K] [--torn T] [--seed N] [--quick] [--keep] [--json FILE]
#
#   --docqa BINARY   the binary under test (default build/cli/docqa)
#   --model DIR      a SmolVLM snapshot (default ../shared/models/tiny-smolvlm-b512, else the
#                    bundled models/demo-tiny when its weights were written)
#   --work DIR       where the databases are made (default: a temporary folder, removed after)
#   --commands LIST  of: ingest ask run requeue export migrate run-export prune (default all)
#   --max-points K   at most K crash points a command: evenly spread over the points after each
#                    fsync, fdatasync and rename, the end always among them (default 12; 0: all)
#   --torn T         torn states a point (default 2)
#   --seed N         the torn states' random choices (default 37)
#   --quick          the subset ctest runs: ingest, export, run-export and prune, 6 points, 1 torn
#                    state each
#   --keep           keep the folder of every failing state
#   --json FILE      every state's outcome, as JSON
#
# Record: each command runs once on a copy of a database made with the model (4 documents
# ingested, one question answered, one queued, one cancelled; schema 5 for migrate), the copy
# synced to disk first (the durable pre-state), under `strace -f -y -xx` tracing openat, write,
# writev, pwrite64, pwritev, ftruncate, fsync, fdatasync, rename(at,at2), link(at), unlink(at),
# mkdir(at) and close on its folder. Not utimensat (ingest's touch of a page file, for a prune
# running beside it): a time a power loss forgets matters only to a prune racing a commit that
# the power loss ended too; a row committed names its file whatever its time. prune's own state
# is a database with an old version's page, a gone file's and a file no page names, all older
# than its --grace 3600 (made that old again in each state before it runs again). The -shm is left out (SQLite writes it through mmap, and rebuilds it
# from the -wal after a power loss: every state is built without it). run-export is the nightly
# job beside a long-running worker (README "Nightly jobs"): another connection holds the
# database open, as docqa-worker.service does, while `run --until-empty` and then `export
# --checkpoint-file` run.
# Replay: the calls are applied in order to a model of the files (contents, and the names each
# folder holds); at each crash point three kinds of state are written out, from the pre-state:
#   strict  each file holds the writes up to its last fsync/fdatasync, each folder the names as
#           of its last fsync (a name in a folder that is not itself durable is gone)
#   torn    strict plus a random subset of the writes since, each torn at 512-byte sectors (some
#           sectors new, some old), and each name as of the folder's sync or as now
#   all     everything written (what a process crash leaves: fault-sweep's kill classes)
# Checked in each state:
#   a) docqa status --json exits 0 (after migrate: once migrate ran again); PRAGMA
#      integrity_check ok, foreign_key_check empty; every job in a known state, running exactly
#      with a lease; a done job has its answer
#   b) every document, page, job and answer committed before the command is there, unchanged;
#      every page row names a file that holds its bytes (SHA-256), a live page's at least (one
#      no longer live may have been pruned)
#   c) the command run again (run: `run --until-empty`, a crashed worker's lease expiring) exits
#      as it did without the crash, and the database ends as it did (documents, pages, jobs'
#      states, answers); prune: the page store holds the files it holds without the crash, none
#      left set aside in .tmp (a file set aside and neither removed nor put back is put back by
#      the prune run again, then judged)
#   d) export, run-export: a second `export --checkpoint-file` continues the chain: the rows the
#      crashed export left durably in its file (counted only where its checkpoint file had moved
#      on disk; otherwise the export did not end, and its rows are given again), and the second
#      export's rows hold every answer of v_answers exactly once (job_id and finished_at: an
#      answer exported and then rolled back by the power loss, then answered again, is not the
#      answer the database keeps), and none that the database no longer holds
# Exit status: 0 every state passed, 1 some failed (listed), 2 usage or setup error, 77 strace
# cannot trace here, or (--quick) no model was found: nothing tried.
import csv
import importlib.util
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("fault_sweep", os.path.join(ROOT, "scripts",
                                                                          "fault-sweep.py"))
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)

COMMANDS = ["ingest", "ask", "run", "requeue", "export", "migrate", "run-export", "prune"]
QUICK_COMMANDS = ["ingest", "export", "run-export", "prune"]
TRACED = ("openat,write,writev,pwrite64,pwritev,ftruncate,fsync,fdatasync,rename,renameat,"
          "renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,close")
SECTOR = 512
JOB_STATES = {"queued", "running", "done", "failed", "dead", "cancelled"}
RUN_TIMEOUT = 180


def die(msg, status=2):
    print("crash-sweep: " + msg, file=sys.stderr)
    sys.exit(status)


def usage():
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    out = []
    for line in lines:
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(out) + "\n"


# ---- the commands


class Command:
    """argv lists, @DB@ and @DIR@ replaced: `steps` is what is recorded, `again` what a user
    runs after the power loss; `out` the file the export writes, `holder` whether another
    connection holds the database open meanwhile."""

    def __init__(self, name, src, steps, again, out=None, holder=False, rc=0):
        self.name, self.src, self.steps, self.again = name, src, steps, again
        self.out, self.holder, self.rc = out, holder, rc


def commands(a, base, old, extra, prune=None):
    m = ["--model", a.model]
    db = ["--db", "@DB@"]
    run = ["run"] + db + m + ["--workers", "2", "--lease", "2", "--until-empty", "-q"]
    export = ["export"] + db + ["--format", "csv", "--checkpoint-file", "@DIR@/ck"]
    ingest = ["ingest"] + db + ["--n-res", "1", "-q"] + m + [extra]
    ask = ["ask"] + db + m + ["What is the sum?", "Who?"]
    requeue = ["requeue"] + db + ["--cancelled"]
    migrate = ["migrate", "--from", "sqlite:@DB@"]
    prune_argv = ["prune"] + db + ["--grace", "3600"]
    return {
        "prune": Command("prune", prune, [prune_argv], [prune_argv]),
        "ingest": Command("ingest", base, [ingest], [ingest], rc=1),
        "ask": Command("ask", base, [ask], [ask]),
        "run": Command("run", base, [run], [run]),
        "requeue": Command("requeue", base, [requeue], [requeue, run]),
        "export": Command("export", base, [export], [export], out="out/answers.csv"),
        "migrate": Command("migrate", old, [migrate], [migrate]),
        "run-export": Command("run-export", base, [run, export], [run, export],
                              out="out/answers.csv", holder=True),
    }


def argv_in(a, argv, d):
    db = os.path.join(d, "docqa.db")
    return [a.docqa] + [x.replace("@DB@", db).replace("@DIR@", d) for x in argv]


def run_steps(a, steps, d, out_name, prefix=()):
    """Each step in turn (stopping at the first that fails): the exit statuses, stderr. An
    export step writes its rows to out_name in d."""
    rcs, errs = [], ""
    for argv in steps:
        full = argv_in(a, argv, d)
        out = open(os.path.join(d, out_name), "wb") if argv[0] == "export" else subprocess.PIPE
        try:
            p = subprocess.run(list(prefix) + full, stdout=out, stderr=subprocess.PIPE,
                               env=fs.docqa_env(), timeout=RUN_TIMEOUT, cwd=d)
            rcs.append(p.returncode)
            errs += p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rcs.append("timeout")
        finally:
            if out is not subprocess.PIPE:
                out.close()
        if rcs[-1] not in (0, 1):
            break
    return rcs, errs


def sync_tree(d):
    """The pre-state made durable: every file and folder synced."""
    for top, dirs, names in os.walk(d):
        for n in names:
            fd = os.open(os.path.join(top, n), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)


# ---- the trace


HEX = re.compile(r"\\x([0-9a-f]{2})")
QUOTED = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
FD = re.compile(r"(-?\d+|AT_FDCWD)<((?:\\x[0-9a-f]{2})*)>")
LINE = re.compile(r"^(\d+)\s+([a-z0-9_]+)\((.*)\)\s+=\s+(-?\d+)(?:<((?:\\x[0-9a-f]{2})*)>)?")


def unhex(s):
    return bytes(int(h, 16) for h in HEX.findall(s))


def joined_lines(trace_file):
    """strace -f's lines, a call cut by another process's put back together."""
    pending = {}
    with open(trace_file, encoding="ascii", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(\d+)\s+(.*)$", line)
            if not m:
                continue
            pid, rest = m.group(1), m.group(2)
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
                continue
            r = re.match(r"^<\.\.\. [a-z0-9_]+ resumed>\s?(.*)$", rest)
            if r:
                rest = pending.pop(pid, "") + r.group(1)
            yield pid + " " + rest


def parse_trace(trace_file, root):
    """The calls on files under root, in order: (call, pid, fd, path, args...)."""
    events = []
    pre = root.rstrip("/") + "/"
    for line in joined_lines(trace_file):
        m = LINE.match(line)
        if not m:
            continue
        pid, call, args, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if ret < 0:
            continue
        fds = [(x.group(1), unhex(x.group(2)).decode("utf-8", "surrogateescape"))
               for x in FD.finditer(args)]
        strs = [unhex(x.group(1)) for x in QUOTED.finditer(args)]

        def under(p):
            return p == root or p.startswith(pre)

        def at(i_fd, s):
            s = s.decode("utf-8", "surrogateescape")
            if os.path.isabs(s):
                return os.path.normpath(s)
            return os.path.normpath(os.path.join(fds[i_fd][1], s))

        if call == "openat":
            path = unhex(m.group(5) or "").decode("utf-8", "surrogateescape")
            if path.endswith(" (deleted)") or not under(path):
                continue
            flags = args.split(",")[2] if args.count(",") >= 2 else ""
            events.append(("open", pid, ret, path, flags))
        elif call in ("write", "pwrite64", "writev", "pwritev"):
            fd, path = fds[0]
            path = path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path
            if not under(path):
                continue
            data = b"".join(strs)[:ret]
            off = None
            if call in ("pwrite64", "pwritev"):
                off = int(args.rsplit(",", 1)[1])
            events.append(("write", pid, int(fd), path, off, data))
        elif call == "ftruncate":
            fd, path = fds[0]
            if under(path):
                events.append(("trunc", pid, int(fd), path, int(args.rsplit(",", 1)[1])))
        elif call in ("fsync", "fdatasync"):
            fd, path = fds[0]
            if under(path):
                events.append(("sync", pid, int(fd), path))
        elif call == "close":
            if fds and fds[0][0] != "AT_FDCWD" and under(fds[0][1]):
                events.append(("close", pid, int(fds[0][0]), fds[0][1]))
        elif call in ("rename", "renameat", "renameat2"):
            if call == "rename":
                old = at(0, strs[0]) if fds else os.path.normpath(strs[0].decode())
                new = at(0, strs[1]) if fds else os.path.normpath(strs[1].decode())
            else:
                old, new = at(0, strs[0]), at(1, strs[1])
            if under(old) or under(new):
                events.append(("rename", pid, -1, old, new))
        elif call in ("link", "linkat"):
            if call == "link":
                old, new = os.path.normpath(strs[0].decode()), os.path.normpath(strs[1].decode())
            else:
                old, new = at(0, strs[0]), at(1, strs[1])
            if under(old) or under(new):
                events.append(("link", pid, -1, old, new))
        elif call in ("unlink", "unlinkat"):
            p = at(0, strs[0])
            if under(p):
                events.append(("unlink", pid, -1, p, "AT_REMOVEDIR" in args))
        elif call in ("mkdir", "mkdirat"):
            p = at(0, strs[0])
            if under(p):
                events.append(("mkdir", pid, -1, p))
    return events


# ---- the files, as the disk and as the page cache hold them


class Ino:
    def __init__(self, data=b"", is_dir=False):
        self.data = bytearray(data)  # what the page cache holds
        self.durable = bytes(data)  # what the last fsync put on disk
        self.pending = []  # ("w", offset, bytes) or ("t", size) since
        self.is_dir = is_dir

    def write(self, off, data):
        if off > len(self.data):
            self.data.extend(b"\0" * (off - len(self.data)))
        self.data[off: off + len(data)] = data
        self.pending.append(("w", off, bytes(data)))

    def truncate(self, size):
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(b"\0" * (size - len(self.data)))
        self.pending.append(("t", size))

    def sync(self):
        self.durable = bytes(self.data)
        self.pending = []

    def torn(self, rng):
        out = bytearray(self.durable)
        for op in self.pending:
            if rng.random() < 0.5:
                continue
            if op[0] == "t":
                if op[1] < len(out):
                    del out[op[1]:]
                else:
                    out.extend(b"\0" * (op[1] - len(out)))
                continue
            _, off, data = op
            # sector by sector, each new or old: a disk writes no smaller unit at once
            pos = off
            while pos < off + len(data):
                end = min(off + len(data), (pos // SECTOR + 1) * SECTOR)
                if rng.random() < 0.5:
                    if pos > len(out):
                        out.extend(b"\0" * (pos - len(out)))
                    out[pos:end] = data[pos - off: end - off]
                pos = end
        return bytes(out)


class Disk:
    def __init__(self, root):
        self.root = root
        self.cur = {}  # path -> Ino: the names as the kernel sees them now
        self.dur = {}  # path -> Ino: the names as the folders' last fsync put them on disk
        self.fds = {}  # (pid, fd) -> [Ino, offset]
        for top, dirs, names in os.walk(root):
            self.cur[top] = self.dur[top] = Ino(is_dir=True)
            for n in names:
                p = os.path.join(top, n)
                if n.endswith("-shm"):
                    continue
                with open(p, "rb") as f:
                    self.cur[p] = self.dur[p] = Ino(f.read())

    def ino(self, pid, fd, path):
        got = self.fds.get((pid, fd))
        if got is not None:
            return got[0]
        return self.cur.get(path)

    def apply(self, ev):
        kind, pid = ev[0], ev[1]
        if kind == "open":
            _, _, fd, path, flags = ev
            if path.endswith("-shm"):
                return
            ino = self.cur.get(path)
            if ino is None:
                if "O_CREAT" not in flags:
                    return
                ino = self.cur[path] = Ino()
            if "O_TRUNC" in flags and not ino.is_dir and len(ino.data):
                ino.truncate(0)
            self.fds[(pid, fd)] = [ino, len(ino.data) if "O_APPEND" in flags else 0]
        elif kind == "close":
            self.fds.pop((pid, ev[2]), None)
        elif kind == "write":
            _, _, fd, path, off, data = ev
            if path.endswith("-shm"):
                return
            slot = self.fds.get((pid, fd))
            ino = slot[0] if slot else self.cur.get(path)
            if ino is None:
                return
            if off is None:  # write(2): the file offset, an inherited stdout's is its end
                off = slot[1] if slot else len(ino.data)
                if slot:
                    slot[1] = off + len(data)
            ino.write(off, data)
        elif kind == "trunc":
            ino = self.ino(pid, ev[2], ev[3])
            if ino is not None and not ev[3].endswith("-shm"):
                ino.truncate(ev[4])
        elif kind == "sync":
            path = ev[3]
            ino = self.ino(pid, ev[2], path)
            if ino is None:
                return
            if ino.is_dir:
                d = os.path.normpath(path)
                for p in set(self.cur) | set(self.dur):
                    if os.path.dirname(p) == d:
                        if p in self.cur:
                            self.dur[p] = self.cur[p]
                        else:
                            self.dur.pop(p, None)
            else:
                ino.sync()
        elif kind == "rename":
            old, new = ev[3], ev[4]
            if old in self.cur:
                self.cur[new] = self.cur.pop(old)
        elif kind == "link":  # a second name of the same file, durable as a rename's
            if ev[3] in self.cur:
                self.cur[ev[4]] = self.cur[ev[3]]
        elif kind == "unlink":
            self.cur.pop(ev[3], None)
        elif kind == "mkdir":
            self.cur[ev[3]] = Ino(is_dir=True)

    def write_state(self, kind, dest, rng):
        """The files a power loss here may leave, under dest (for the root)."""
        if kind == "all":
            names = dict(self.cur)
        elif kind == "strict":
            names = dict(self.dur)
        else:
            names = {}
            for p in set(self.cur) | set(self.dur):
                pick = self.cur if rng.random() < 0.5 else self.dur
                if p in pick:
                    names[p] = pick[p]

        def reachable(p):
            d = os.path.dirname(p)
            while d != self.root:
                if d not in names or not names[d].is_dir:
                    return False
                d = os.path.dirname(d)
            return True

        os.makedirs(dest)
        for p in sorted(names):
            ino = names[p]
            if p == self.root or not reachable(p):
                continue
            target = os.path.join(dest, os.path.relpath(p, self.root))
            if ino.is_dir:
                os.makedirs(target, exist_ok=True)
                continue
            if kind == "all":
                data = bytes(ino.data)
            elif kind == "strict":
                data = ino.durable
            else:
                data = ino.torn(rng)
            with open(target, "wb") as f:
                f.write(data)


def crash_points(events, max_points):
    pts = [i for i, e in enumerate(events) if e[0] in ("sync", "rename", "link")]
    pts.append(len(events) - 1)
    pts = sorted(set(p for p in pts if p >= 0))
    if max_points and len(pts) > max_points:
        step = (len(pts) - 1) / (max_points - 1)
        pts = sorted(set(pts[round(i * step)] for i in range(max_points)))
    return pts


# ---- the checks


def csv_rows(path):
    """(job_id, finished_at) of each whole row of an export file."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    # a torn tail is no row: only lines that ended
    text = text[: text.rfind("\r\n") + 2] if "\r\n" in text else ""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    head = rows[0]
    if "job_id" not in head:
        return []
    j, t = head.index("job_id"), head.index("finished_at")
    out = []
    for r in rows[1:]:
        # a row torn by the power loss (holes of zeros, a sector of old bytes) is no row
        if len(r) == len(head) and r[j].isdigit():
            out.append((int(r[j]), r[t]))
    return out


def read_ck(d):
    try:
        with open(os.path.join(d, "ck"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def invariants(db):
    out = []
    states = {r[0] for r in fs.query(db, "SELECT DISTINCT state FROM jobs")}
    if states - JOB_STATES:
        out.append("jobs in unknown states: %r" % sorted(states - JOB_STATES))
    bad = fs.query(db, "SELECT count(*) FROM jobs WHERE (state = 'running') != "
                       "(lease_owner IS NOT NULL AND lease_expires_ms IS NOT NULL)")[0][0]
    if bad:
        out.append("%d jobs running without a lease, or leased and not running" % bad)
    orphan = fs.query(db, "SELECT count(*) FROM jobs j WHERE state = 'done' AND NOT EXISTS "
                          "(SELECT 1 FROM answers a WHERE a.job_id = j.id)")[0][0]
    if orphan:
        out.append("%d done jobs without an answer" % orphan)
    return out


def check_state(a, cmd, d, before, before_state, ref, pre_ck):
    db = os.path.join(d, "docqa.db")
    problems = []
    first_rows = csv_rows(os.path.join(d, cmd.out)) if cmd.out else []
    ck_now = read_ck(d)
    try:
        problems += fs.integrity(db)
        if cmd.name == "migrate":
            problems += fs.lost_by_state(db, before_state)
        else:
            problems += fs.lost_rows(db, before)
            problems += invariants(db)
        bad = fs.state(db)["page_files_bad"]
        if bad:
            problems.append("page rows naming no whole file: %d (first: %s)" % (len(bad), bad[0]))
    except sqlite3.Error as e:
        problems.append("%s: %s" % (db, e))
    if cmd.name != "migrate":
        rc, err = fs.run_plain(argv_in(a, ["status", "--db", "@DB@", "--json"], d))
        if rc != 0:
            problems.append("status --json exits %s: %s" % (rc, err.strip()[:300]))
    if cmd.name == "prune":
        # the state's files are as old as they were (its writing made them new): a file set
        # aside and not removed, or put back, is past the grace period again
        fs.age_store(d)
    rcs, err = run_steps(a, cmd.again, d, "out2.csv")
    if cmd.name == "prune" and fs.store_files(db) != ref["store"]:
        problems.append("after again: the page store is not the one prune leaves without a "
                        "crash: %s" % "; ".join(fs.diff(fs.store_files(db), ref["store"]))[:600])
    want = [cmd.rc] + [0] * (len(cmd.again) - 1)
    if rcs != want and not (cmd.name == "ingest" and rcs == [0]):
        problems.append("again: exits %s, not %s: %s" % (rcs, want, err.strip()[:300]))
    try:
        got = fs.state(db)
        problems += ["after again: " + x for x in fs.diff(got, ref["db"])]
    except sqlite3.Error as e:
        problems.append("after again: %s: %s" % (db, e))
    if cmd.out and rcs and rcs[-1] == 0:
        # the crashed export's rows count where its checkpoint moved on disk: it ended
        moved = ck_now is not None and ck_now != pre_ck
        rows = (first_rows if moved else []) + csv_rows(os.path.join(d, "out2.csv"))
        try:
            have = fs.query(db, "SELECT job_id, finished_at FROM v_answers")
        except sqlite3.Error as e:
            have = []
            problems.append("v_answers: %s" % e)
        seen = {}
        for r in rows:
            seen[r] = seen.get(r, 0) + 1
        twice = [r for r, n in seen.items() if n > 1]
        skipped = [r for r in have if r not in seen]
        phantom = [r for r in seen if r not in set(have)]
        if twice:
            problems.append("export chain: %d answers exported twice (first: %r)"
                            % (len(twice), twice[0]))
        if skipped:
            problems.append("export chain: %d answers never exported (first: %r; checkpoint "
                            "file %s)" % (len(skipped), skipped[0], ck_now))
        if phantom:
            problems.append("export chain: %d rows exported that the database no longer holds "
                            "(first: %r: rolled back by the power loss after they were written "
                            "out)" % (len(phantom), phantom[0]))
    return problems


# ---- the sweep


def record(a, cmd, d):
    """Runs the command on d under strace: its exit statuses and the trace's events."""
    db = os.path.join(d, "docqa.db")
    sync_tree(d)
    disk = Disk(d)
    holder = None
    if cmd.holder:
        # a worker's connection kept open: the commands' own closes checkpoint nothing. Opened
        # after the files were read: closing any descriptor of the database in this process
        # would drop the holder's locks (POSIX locks are per process)
        holder = sqlite3.connect(db)
        holder.execute("SELECT count(*) FROM documents").fetchall()
    if cmd.out:
        # made by the user's shell (`> out`) as the command starts: a new name in the folder,
        # on disk only once something syncs the folder
        out = os.path.join(d, cmd.out)
        open(out, "wb").close()
        disk.cur[out] = Ino()
    trace = os.path.join(os.path.dirname(d), os.path.basename(d) + ".strace")
    prefix = ["strace", "-f", "-A", "-qq", "-y", "-xx", "-s", "100000000", "-o", trace,
              "-e", "trace=" + TRACED]
    rcs, err = run_steps(a, cmd.steps, d, cmd.out or "out.csv", prefix)
    if holder is not None:
        holder.close()
    events = parse_trace(trace, d)
    if not a.keep:
        os.unlink(trace)
    return rcs, err, disk, events


def sweep(a, work, names):
    base, extra = fs.make_base(a, work)
    old = fs.make_old(base, work)
    table = commands(a, base, old, extra,
                     fs.make_prune(a, base, work) if "prune" in names else None)
    rng = random.Random(a.seed)
    results, summary = [], []
    for name in names:
        t0 = time.time()
        cmd = table[name]
        # the reference: the command, then what a user runs again, without a crash
        refdir = os.path.join(work, "ref", name)
        shutil.copytree(cmd.src, refdir)
        os.makedirs(os.path.join(refdir, "out"), exist_ok=True)
        rcs, err = run_steps(a, cmd.steps, refdir, cmd.out or "out.csv")
        if any(rc not in (0, 1) for rc in rcs):
            die("%s without a crash exits %s: %s" % (name, rcs, err.strip()))
        run_steps(a, cmd.again, refdir, "out2.csv")
        ref = {"db": fs.state(os.path.join(refdir, "docqa.db")),
               "store": fs.store_files(os.path.join(refdir, "docqa.db"))}
        before = fs.committed(os.path.join(cmd.src, "docqa.db"))
        before_state = fs.state(os.path.join(cmd.src, "docqa.db"))
        recdir = os.path.join(work, "rec", name)
        shutil.copytree(cmd.src, recdir)
        # the export's file in a folder of its own (README's nightly job: out/), which the
        # pre-state holds
        os.makedirs(os.path.join(recdir, "out"))
        pre_ck = read_ck(recdir)
        rcs, err, disk, events = record(a, cmd, recdir)
        if any(rc not in (0, 1) for rc in rcs):
            die("%s under strace exits %s: %s" % (name, rcs, err.strip()))
        if not events:
            die("%s: strace saw no call on %s" % (name, recdir))
        pts = crash_points(events, a.max_points)
        n_states = failed = 0
        i = 0
        for p in pts:
            while i <= p:
                disk.apply(events[i])
                i += 1
            kinds = ["strict"] + ["torn"] * a.torn + ["all"]
            for k, kind in enumerate(kinds):
                sdir = os.path.join(work, "states", name, "%d-%s%d" % (p, kind, k))
                disk.write_state(kind, sdir, rng)
                # the state's own copy of the paths: the checkpoint file and out are in it
                problems = check_state(a, cmd, sdir, before, before_state, ref, pre_ck)
                n_states += 1
                ev = events[p]
                where = "%s %s" % (ev[0], os.path.relpath(ev[3], recdir))
                results.append({"command": name, "point": p, "call": where, "state": kind,
                                "problems": problems})
                if problems:
                    failed += 1
                    print("FAIL %s point %d (after %s) %s" % (name, p, where, kind))
                    for pr in problems:
                        print("    " + pr)
                    sys.stdout.flush()
                if not (problems and a.keep):
                    shutil.rmtree(sdir)
        summary.append((name, len(events), len(pts), n_states, failed))
        print("%-10s calls %5d  points %3d  states %3d  failed %3d  (%.0f s)"
              % (name, len(events), len(pts), n_states, failed, time.time() - t0))
        sys.stdout.flush()
    total = sum(s[3] for s in summary)
    bad = sum(s[4] for s in summary)
    print("crash-sweep: %d commands: %d points, %d states, %d failed"
          % (len(names), sum(s[2] for s in summary), total, bad))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    return 1 if bad else 0


def main():
    p = fs.Parser(add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--docqa", default=os.path.join(ROOT, "build", "cli", "docqa"))
    p.add_argument("--model")
    p.add_argument("--work")
    p.add_argument("--commands")
    p.add_argument("--max-points", type=int, default=12)
    p.add_argument("--torn", type=int, default=2)
    p.add_argument("--seed", type=int, default=37)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json")
    try:
        a = p.parse_args()
    except fs.UsageError as e:
        print("crash-sweep: %s" % e, file=sys.stderr)
        print("usage: scripts/crash-sweep.py [--docqa BINARY] ... (see --help)", file=sys.stderr)
        return 2
    if a.help:
        sys.stdout.write(usage())
        return 0
    names = a.commands.split(",") if a.commands else (QUICK_COMMANDS if a.quick else COMMANDS)
    if a.quick:
        a.max_points = 6 if a.max_points == 12 else a.max_points
        a.torn = 1 if a.torn == 2 else a.torn
    for c in names:
        if c not in COMMANDS:
            die("unknown command %r (of %s)" % (c, " ".join(COMMANDS)))
    if a.max_points < 0 or a.max_points == 1 or a.torn < 0:
        die("--max-points must be 0 or at least 2, --torn at least 0")
    skip = fs.preflight(a, "crash-sweep")
    if skip is not None:
        return skip
    work = a.work or tempfile.mkdtemp(prefix="docqa-crash-sweep-")
    os.makedirs(work, exist_ok=True)
    try:
        return sweep(a, work, names)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
