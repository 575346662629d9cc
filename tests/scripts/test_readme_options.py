#!/usr/bin/env python3
"""The documents' names for things against the code: users copy them.

- Every `docqa COMMAND ...` in README.md, DEVELOPERS.md and docs/performance.md, in a code
  block (comments after ` #` left out) or in backquotes in the prose, may use only options that
  `docqa COMMAND --help` lists: an option renamed or dropped in the code, or misspelt in a
  document, fails here naming the line. The synopsis under "Ingesting documents" must list
  every option `docqa ingest --help` has, and README.md must name every long option of every
  command (one it never names, a user finds only by reading every --help).
- Every `scripts/NAME ... --option` in those documents is in the script's header comment (its
  --help).
- Every DOCQA_ variable the documents and the scripts' headers name is in the code (a
  measurement of a switch since removed names it in RETIRED), and every one the libraries read
  (getenv) and every DOCQA_ build option is named in a document (test hooks, *_TEST_*, aside).
- Every view `v_*` the documents name is made by schema/sqlite/, and the column lists README.md
  gives for `v_answers`, `v_current_answers` and `v_progress` are those of the views docqa
  makes, in order; so is its list of the columns of `documents` (what `--where` is written
  over). The SQL README.md quotes in its prose (`SELECT last FROM answer_commit_seq`, a
  `WHERE ...` to add to a query of v_answers, `sqlite3 docqa.db "..."`) compiles against the
  schema docqa makes (its code blocks' SQL is run by tests/store/test_store_parity.c).
- Every file the documents name by its path (`model/backend.h`, `tests/jobs/test_queue_crash.c`)
  is there, every identifier they quote (`matmul_many`, `dq_print_line`) is in the code, and
  every test path they quote (`/gemm_bf16/x6`) is in the tests.
- Every message README.md quotes (`no such question was asked`, `docqa: ask: interrupted
  (SIGTERM) before it finished`) is one the code can print: each piece of three words or more
  between its values (numbers, N, PATH, ...) runs through a string literal of the libraries or
  the CLI, adjacent literals joined and each conversion (%s, %d) standing for a value or a
  phrase; a message reworded in the code, or misquoted, fails here naming the line.
- Every link to a section (`[Nightly jobs](#nightly-jobs)`) names a heading of its document,
  as GitHub makes its anchor: a heading renamed leaves no link pointing nowhere. Every section
  the code's comments cite (`(README, "Exit statuses")`) begins a heading or a bold label
  (`**Withdrawing work.**`) of README.md.
- Each check finds an error planted in the documents' text (PLANTED), so that a check that
  stopped looking fails too.

    test_readme_options.py DOCQA SOURCE_DIR
"""
import glob
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

COMMANDS = ["ingest", "ask", "run", "status", "export", "requeue", "cancel", "prune",
            "generate", "migrate", "version"]
DOCS = ["README.md", "DEVELOPERS.md", "docs/performance.md"]
# Switches the code no longer has, named by measurements kept as records of past runs.
RETIRED = {"DOCQA_CUDA_PIXELS_F32"}  # session 9's float32 tiles, docs/performance.md
# Paths the documents name that are made by a command (the demo, download-model.sh) or built.
MADE = {"models/SmolVLM-256M-Instruct", "examples/out/demo.db", "tests/model/bench_gemv"}
# Quoted identifiers that are other programs' (transformers, NFS, PostgreSQL, llama.cpp).
EXTERNAL = {"infer_channel_dimension_format", "local_lock", "pg_dump", "GGML_ASSERT"}
# Quoted absolute paths that are no test's: a user's folders.
NOT_TESTS = ("/srv/", "/etc/", "/usr/", "/var/", "/tmp/", "/mnt/", "/proc/", "/dev/", "/path/")
CODE_DIRS = ["cli", "common", "image", "model", "ingest", "jobs", "store", "schema", "scripts",
             "tests", "cmake", "configs", ".ci"]
CODE_EXT = (".c", ".h", ".cu", ".sh", ".py", ".txt", ".cmake", ".sql", ".supp", "run")
LIB_DIRS = ["cli", "common", "image", "model", "ingest", "jobs", "store"]
# A DOCQA_ name, also as a CMake definition's (-DDOCQA_CUDA=OFF)
NAME_RE = re.compile(r"(?:(?<![A-Z0-9_])|(?<=-D))DOCQA_[A-Z0-9_]*[A-Z0-9]")


def help_options(docqa, command):
    """(short, long) pairs of the options `docqa COMMAND --help` lists; short may be None."""
    out = subprocess.run([docqa, command, "--help"], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"^\s+(?:(-\w), )?(--[a-z][a-z0-9-]*)", out, re.M)


def doc_lines(path):
    return open(path, encoding="utf-8").read().split("\n")


def readme_uses(lines):
    """(line number, command, the text after it) for each docqa command the document shows."""
    uses = []
    last = None  # the command a synopsis's next lines ("    [--opt ...]") continue
    for n, line in enumerate(lines, 1):
        code = line.startswith("    ")
        if code and last is not None and re.match(r"\s+\[-", line):
            uses.append((n, last, line))
            continue
        last = None
        pieces = [line.split(" #")[0]] if code else []
        pieces += re.findall(r"`(docqa [^`]*)`", line)
        for piece in pieces:
            # a pipe between commands, not the "|" of "[--model DIR | --tile PX]"
            for part in re.split(r";|&&|\|\||\|(?=\s*[a-z])", piece):
                m = re.search(r"\bdocqa (\w+)\b(.*)", part)
                if m and m.group(1) in COMMANDS:
                    uses.append((n, m.group(1), m.group(2)))
                    if code:
                        last = m.group(1)
    return uses


def script_header(path):
    """The usage a script's --help prints: its leading comment, or a Python docstring."""
    text = open(path, encoding="utf-8").read()
    if path.endswith(".py"):
        m = re.search(r'"""(.*?)"""', text, re.S)
        return m.group(1) if m else ""
    lines = text.split("\n")[1:]
    return "\n".join(line for line in lines[:next((i for i, l in enumerate(lines)
                                                    if not l.startswith("#")), len(lines))])


def script_uses(lines):
    """(line number, script, the text after it) for each `scripts/NAME ...` the document shows."""
    uses = []
    for n, line in enumerate(lines, 1):
        pieces = [line.split(" #")[0]] if line.startswith("    ") else []
        pieces += re.findall(r"`([^`]*scripts/[^`]*)`", line)
        for piece in pieces:
            for part in re.split(r";|&&|\|\||\|(?=\s*[a-z])", piece):
                m = re.search(r"(?<![\w/.-])scripts/([\w.-]+\.(?:sh|py))\b(.*)", part)
                if m:
                    uses.append((n, m.group(1), m.group(2)))
    return uses


def code_text(src):
    """Every source, build and test file's text, documents (*.md) and this test left out."""
    texts = []
    for top in CODE_DIRS + ["CMakeLists.txt"]:
        base = os.path.join(src, top)
        files = [base] if os.path.isfile(base) else []
        for root, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith("build")]
            files += [os.path.join(root, f) for f in names
                      if f.endswith(CODE_EXT) and f != os.path.basename(__file__)]
        for f in files:
            texts.append(open(f, encoding="utf-8", errors="replace").read())
    return "\n".join(texts)


def lib_env_reads(src):
    """The DOCQA_ variables the libraries and the CLI read, but the test hooks."""
    names = set()
    for top in LIB_DIRS:
        for f in glob.glob(os.path.join(src, top, "**", "*.[ch]"), recursive=True) + \
                glob.glob(os.path.join(src, top, "**", "*.cu"), recursive=True):
            names |= set(re.findall(r'getenv\("(DOCQA_\w+)"\)', open(f, encoding="utf-8").read()))
    return {n for n in names if "_TEST_" not in n}


def build_options(src):
    """The DOCQA_ cache variables the CMake files define (-DDOCQA_...=)."""
    names = set()
    for f in glob.glob(os.path.join(src, "**", "CMakeLists.txt"), recursive=True):
        if "/build" in f[len(src):]:
            continue
        text = open(f, encoding="utf-8").read()
        names |= set(re.findall(r"option\((DOCQA_\w+)", text))
        names |= set(re.findall(r"set\((DOCQA_\w+)\s[^)]*\bCACHE\b", text))
    return names


def view_columns(docqa):
    """{view: [columns]} of a database docqa made (an ingest of an empty folder), and of its
    table `documents`."""
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "empty"))
        db = os.path.join(tmp, "t.db")
        subprocess.run([docqa, "ingest", "--db", db, "--allow-empty-root", "-q",
                        os.path.join(tmp, "empty")], capture_output=True, check=True)
        con = sqlite3.connect(db)
        views = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'view'")]
        views.append("documents")
        cols = {v: [r[1] for r in con.execute(f"PRAGMA table_info('{v}')")] for v in views}
        # the statements that make the schema, for the README's SQL to be compiled against
        cols[None] = [r[0] for r in con.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid")]
        con.close()
        return cols


def prose_sql(lines):
    """(line, SQL) for each statement README's prose quotes: `sqlite3 DB "SQL"`, `SELECT ...`
    (more than the word), and `WHERE ...` (added to a query of v_answers)."""
    text = "\n".join(lines)
    out = []
    for m in re.finditer(r"`([^`]+)`", text):
        quoted = " ".join(m.group(1).split())
        line = text[:m.start()].count("\n") + 1
        shell = re.fullmatch(r"sqlite3 \S+ \"([^\"]+)\"", quoted)
        if shell and not shell.group(1).startswith("."):
            out.append((line, shell.group(1)))
        elif re.match(r"SELECT \S", quoted):
            out.append((line, quoted))
        elif re.match(r"WHERE \S", quoted):
            out.append((line, "SELECT * FROM v_answers " + quoted))
    return out


# Quoted text that is no message of docqa's: commands, paths, SQL, other programs' words.
NOT_MESSAGES = ("docqa ", "sqlite3", "scripts/", "python3", "SELECT", "WHERE", "--", "export ",
                "kill", "systemctl", "ld.so", "mv ", "cp ", "psql", "pdftocairo", "tokenizer-")
# The system's and SQLite's own words, which docqa's messages carry but do not spell.
NOT_OURS = ("database is locked", "disk I/O error", "Cannot allocate memory",
            "No space left on device", "Input/output error", "File too large",
            "attempt to write a readonly database", "unable to open database file")
# What stands for a value in a quoted message: a number, a placeholder (N, PATH, HOST), a
# signal, a folder or file of the example, a device.
PLACEHOLDER = (r"\b\d[\d,.]*\b|\bSIG[A-Z]+\b|\b[A-Z]{1,5}\b|\bbig\b|\balice\b|\bbob\b|"
               r"/srv/\S*|docqa\.db\S*|\b\w+\.(?:pdf|tif)\b|cuda:\d|\bdocqa: \w+: ")
WORD_RE = re.compile(r"[\w'<>/][\w'<>/-]*|\x01|\x02")


def message_templates(src):
    """The string literals of the libraries and the CLI, adjacent ones joined as C joins them,
    each conversion (%s, %d, G_GINT64_FORMAT) a \\x01: [(tokens, set of words)]."""
    literal = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
    texts = []
    for top in LIB_DIRS:
        for f in sorted(glob.glob(os.path.join(src, top, "**", "*.[ch]"), recursive=True)):
            s = open(f, encoding="utf-8").read()
            pieces, end = [], None
            for m in literal.finditer(s):
                between = s[end:m.start()] if end is not None else None
                if between is not None and re.fullmatch(
                        r"(?:\s|//[^\n]*\n|/\*.*?\*/|G_G\w+_FORMAT)*", between, re.S):
                    pieces.append("d" * between.count("_FORMAT") + m.group(1))
                else:
                    texts.append("".join(pieces))
                    pieces = [m.group(1)]
                end = m.end()
            texts.append("".join(pieces))
    out = []
    for t in texts:
        t = re.sub(r"%[-+ #0-9.*]*(?:hh|h|ll|l|z|j|t)?[diouxXfFeEgGcsp]", "\x01", t)
        tokens = WORD_RE.findall(t.replace("\x01", " \x01 "))
        if len(tokens) >= 2:
            out.append((tokens, {stem(w) for w in tokens}))
    return out


def stem(word):
    """A word without its case and plural ending, to find the templates worth matching."""
    return re.sub(r"e?s$", "", word.lower())


def same_word(quoted, code):
    """A word of README's quote against one of the code's ("files" is "file" + a %s)."""
    q, c = quoted.lower(), code.lower()
    return q == c or (q.endswith("s") and q[:-1] == c) or (q.endswith("es") and q[:-2] == c)


def matches(words, tokens):
    """Whether the words run on through the tokens from some point, each \\x01 standing for up
    to six of them (a value, or a phrase the code picks), at least two words spelt alike."""
    def go(i, j, spelt):
        if i == len(words):
            return spelt >= 2
        if j == len(tokens):
            return False
        if tokens[j] == "\x01":
            return any(go(i + k, j + 1, spelt) for k in range(0, min(6, len(words) - i) + 1))
        if words[i] == "\x02":  # a value in README's example: any one word of the code's
            return go(i + 1, j + 1, spelt)
        return same_word(words[i], tokens[j]) and go(i + 1, j + 1, spelt + 1)
    return any(go(0, j, 0) for j in range(len(tokens)))


def quoted_messages(lines):
    """(line, quote, [pieces of three words or more]) of README's quoted messages: in
    backquotes, or in double quotes in the prose (outside backquotes and code blocks)."""
    text = "\n".join(lines)
    prose = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group(0)),
                   "\n".join("" if line.startswith("    ") else line for line in lines))
    quotes = [m for m in re.finditer(r"`([^`]+)`", text)] + \
        [m for m in re.finditer(r'"([^"\n]+(?:\n[^"\n]+)?)"', prose)]
    out = []
    for m in quotes:
        quoted = " ".join(m.group(1).split())
        if len(quoted.split()) < 4 or quoted.startswith(NOT_MESSAGES):
            continue
        rest = quoted
        for words in NOT_OURS:
            rest = rest.replace(words, "...")
        rest = re.sub(PLACEHOLDER, " \x02 ", rest)
        pieces = []
        for piece in re.split(r"\.\.\.|…|[:;()]", rest):
            words = WORD_RE.findall(piece)
            while words and "\x02" in (words[0], words[-1]):  # values at the ends: no anchor
                words = words[1:] if words[0] == "\x02" else words[:-1]
            if sum(w != "\x02" for w in words) >= 3:
                pieces.append(words)
        if pieces:
            out.append((m.string[:m.start()].count("\n") + 1, quoted, pieces))
    return out


def readme_view_lists(lines):
    """{view: (line, [columns])} from README's "Querying the answers" paragraph."""
    text = "\n".join(lines)
    out = {}
    pats = {"v_answers": r"`v_answers` has one row per answer \(([^)]*)\)",
            "v_progress": r"`v_progress` one row per question and model \(([^)]*)\)",
            "v_current_answers": r"`v_current_answers` has the same columns, then ([\w ,]+?) \(",
            "documents": r"The columns of `documents`: ((?:[\w\s,]|\([^)]*\))+)"}
    for view, pat in pats.items():
        m = re.search(pat, text)
        if m:
            line = text[:m.start()].count("\n") + 1
            listed = re.sub(r"\s*\([^)]*\)", "", " ".join(m.group(1).split()))
            out[view] = (line, [c for c in re.split(r",\s*|\s+and\s+", listed) if c])
    return out


def gather(docqa, src):
    """What the documents are checked against: the binary's options, the code, the schema."""
    options = {c: help_options(docqa, c) for c in COMMANDS}
    code = code_text(src)
    schema = "\n".join(open(f, encoding="utf-8").read()
                       for f in glob.glob(os.path.join(src, "schema", "sqlite", "*.sql")))
    return {
        "src": src,
        "options": options,
        "known": {c: {o for pair in options[c] for o in pair if o} | {"--help"}
                  for c in COMMANDS},
        "headers": {f"scripts/{os.path.basename(p)}": script_header(p)
                    for p in glob.glob(os.path.join(src, "scripts", "*.sh")) +
                    glob.glob(os.path.join(src, "scripts", "*.py"))},
        "code": code,
        "code_names": set(NAME_RE.findall(code)),
        "read": lib_env_reads(src) | build_options(src),
        "views": set(re.findall(r"CREATE VIEW (?:IF NOT EXISTS )?(\w+)", schema)),
        "columns": view_columns(docqa),
        "templates": message_templates(src),
    }


def check(ctx, lines):
    """The mismatches between the documents (their lines by name) and ctx; the counts."""
    src, options, known = ctx["src"], ctx["options"], ctx["known"]
    bad = []
    n_uses = 0
    synopsis = ""
    for doc in DOCS:
        uses = readme_uses(lines[doc])
        n_uses += len(uses)
        for n, command, text in uses:
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text):
                if opt not in known[command]:
                    bad.append(f"{doc}:{n}: docqa {command} has no {opt}: {text.strip()}")
        if doc == "README.md":
            synopsis = " ".join(t for n, c, t in uses
                                if c == "ingest" and t.lstrip().startswith("["))
    if not synopsis:
        bad.append("README.md: no `docqa ingest [--db FILE] ...` synopsis found")
    for short, long in options["ingest"]:
        if not re.search(rf"(\[|\| )({re.escape(long)}|{re.escape(short or long)})[] ]", synopsis):
            bad.append(f"README.md: the ingest synopsis lacks {long}, which --help lists")
    readme = "\n".join(lines["README.md"])
    for command in COMMANDS:
        for short, long in options[command]:
            if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", readme)
                       for o in (short, long) if o):
                bad.append(f"README.md: never names docqa {command} {long}, which --help lists")

    for doc in DOCS:
        for n, script, text in script_uses(lines[doc]):
            header = ctx["headers"].get(f"scripts/{script}")
            if header is None:
                bad.append(f"{doc}:{n}: no such script: scripts/{script}")
                continue
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text):
                if opt != "--help" and not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])",
                                                     header):
                    bad.append(f"{doc}:{n}: scripts/{script}'s usage has no {opt}: "
                               f"{text.strip()}")

    named = {}
    for where, text in [(d, "\n".join(lines[d])) for d in DOCS] + list(ctx["headers"].items()):
        for name in set(NAME_RE.findall(text)):
            named.setdefault(name, where)
    for name, where in sorted(named.items()):
        if name not in ctx["code_names"] and name not in RETIRED:
            bad.append(f"{where}: names {name}, which no code reads")
    for name in sorted(ctx["read"]):
        if name not in named:
            bad.append(f"{name}: read by the code, named in no document (README.md, "
                       f"DEVELOPERS.md, docs/performance.md, a script's usage)")

    for doc in DOCS:
        for n, line in enumerate(lines[doc], 1):
            for view in re.findall(r"\bv_[a-z_]+[a-z]", line):
                if view not in ctx["views"]:
                    bad.append(f"{doc}:{n}: no view {view} in schema/sqlite/")
    columns = ctx["columns"]
    listed = readme_view_lists(lines["README.md"])
    for view in ("v_answers", "v_current_answers", "v_progress", "documents"):
        if view not in listed:
            bad.append(f"README.md: the columns of {view} are not listed where expected")
            continue
        n, cols = listed[view]
        want = columns.get(view, [])
        if view == "v_progress":  # the paragraph names its key columns before the list
            want = [c for c in want if c not in ("question", "model")]
        if view == "v_current_answers":  # "the same columns, then ..."
            want = want[len(columns.get("v_answers", [])):]
        if cols != want:
            bad.append(f"README.md:{n}: {view}'s columns are listed as {', '.join(cols)}; "
                       f"docqa makes {', '.join(want)}")

    for n, quoted, pieces in quoted_messages(lines["README.md"]):
        for piece in pieces:
            stems = {stem(w) for w in piece}
            if not any(len(stems & words) >= 2 and matches(piece, tokens)
                       for tokens, words in ctx["templates"]):
                shown = " ".join("..." if w == "\x02" else w for w in piece)
                bad.append(f"README.md:{n}: the quoted message `{quoted}` is no message of the "
                           f"code's (no literal has \"{shown}\")")

    for doc in DOCS:
        anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                   for h in re.findall(r"^#+ (.*)$", "\n".join(lines[doc]), re.M)}
        text = "\n".join(lines[doc])
        for m in re.finditer(r"\]\(#([^)]*)\)", text):
            if m.group(1) not in anchors:
                bad.append(f"{doc}:{text[:m.start()].count(chr(10)) + 1}: no section for the "
                           f"link #{m.group(1)}")

    readme = "\n".join(lines["README.md"])
    sections = re.findall(r"^#+ (.*)$", readme, re.M) + re.findall(r"\*\*([^*]+?)[.:]?\*\*", readme)
    for cited in sorted(set(re.findall(r'README,? "([^"]+)"', ctx["code"]))):
        if not any(s.startswith(cited) for s in sections):
            bad.append(f"README.md: the code cites its section \"{cited}\", which it has not")

    schema = sqlite3.connect(":memory:")
    for statement in columns.get(None, []):
        schema.execute(statement)
    n_sql = 0
    for n, sql in prose_sql(lines["README.md"]):
        n_sql += 1
        try:
            schema.execute("EXPLAIN " + sql)
        except sqlite3.Error as e:
            bad.append(f"README.md:{n}: the SQL `{sql}` does not compile: {e}")
    schema.close()
    if n_sql < 3:
        bad.append(f"README.md: only {n_sql} SQL statements found in the prose")

    tops = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)) and
                  not d.startswith(("build", ".git")))
    path_re = re.compile(r"(?<![\w./$-])((?:%s)/[\w./-]*\w)" % "|".join(map(re.escape, tops)))
    for doc in DOCS:
        for n, line in enumerate(lines[doc], 1):
            for m in path_re.finditer(line):
                path = m.group(1)
                # a rate ("jobs/s"), not a path; a glob or placeholder is no single file
                if re.fullmatch(r"\w+/s", path) or path in MADE or \
                        re.search(r"[*<>]", line[m.end():m.end() + 1]):
                    continue
                if not os.path.exists(os.path.join(src, path)):
                    bad.append(f"{doc}:{n}: no such file: {path}")

    idents = set(re.findall(r"\w+", ctx["code"]))
    for doc in DOCS:
        for n, line in enumerate(lines[doc], 1):
            for quoted in re.findall(r"`([^`]+)`", line):
                for ident in re.findall(r"(?<![\w/.$-])([A-Za-z]\w*_\w+)(?![\w/.-])", quoted):
                    if not ident.startswith("DOCQA_") and ident not in EXTERNAL and \
                            ident not in idents:
                        bad.append(f"{doc}:{n}: `{ident}` is in no code")
                for test in re.findall(r"(?<![\w.])(/[a-z0-9_]+/[a-z0-9_/]+)", quoted):
                    if not test.startswith(NOT_TESTS) and f'"{test}' not in ctx["code"]:
                        bad.append(f"{doc}:{n}: no test {test}")
    return bad, n_uses, len(named)


def replaced(lines, old, new):
    """The lines with the first line holding `old` changed; None when none holds it."""
    for i, line in enumerate(lines):
        if old in line:
            return lines[:i] + [line.replace(old, new, 1)] + lines[i + 1:]
    return None


# Errors planted in the documents, one at a time: each must add a mismatch naming it, or the
# check that should find it has stopped looking.
PLANTED = [
    ("README.md", "--until-empty", "--until-emtpy", "docqa run has no --until-emtpy"),
    ("README.md", "`ask --max-attempts`", "`ask`", "never names docqa ask --max-attempts"),
    ("README.md", "`scripts/bench-model.sh --llama`",
     "`scripts/bench-model.sh --llamas`", "usage has no --llamas"),
    ("DEVELOPERS.md", "`DOCQA_TEST_PAUSE_AT`", "`DOCQA_TEST_PAUSE_AFTER`",
     "names DOCQA_TEST_PAUSE_AFTER, which no code reads"),
    ("README.md", "DOCQA_INGEST_DEBUG", "DOCQA_INGEST_DEBUGS", "DOCQA_INGEST_DEBUG: read by"),
    ("README.md", "`v_current_answers` has", "`v_current_answer` has", "no view v_current_answer"),
    ("README.md", "generated_tokens, ms_total,", "ms_total, generated_tokens,",
     "v_answers's columns are listed as"),
    ("README.md", "`jobs/queue.h`", "`jobs/queue_crash.h`", "no such file: jobs/queue_crash.h"),
    ("README.md", "error_message, ingested_at and", "error_message and",
     "documents's columns are listed as"),
    ("README.md", "its work was done", "its work was kept",
     "no literal has \"its work was kept and stored"),
    ("README.md", "UTF-16; save it", "UTF-16; keep it",
     "no literal has \"keep it as"),
    ("README.md", "(`no such question was asked`)", "(`no such question was ever asked`)",
     "no literal has \"no such question was ever asked"),
    ("README.md", "## Nightly jobs", "## Nightly runs", "no section for the link #nightly-jobs"),
    ("README.md", "**Withdrawing work.**", "**Withdrawing jobs.**",
     "the code cites its section \"Withdrawing work\""),
    ("README.md", "`SELECT last FROM answer_commit_seq`", "`SELECT next FROM answer_commit_seq`",
     "does not compile: no such column: next"),
    ("README.md", "(SELECT job_id FROM answers WHERE commit_seq",
     "(SELECT job_id FROM answer WHERE commit_seq", "does not compile: no such table: answer"),
    ("DEVELOPERS.md", "`store_jobs_claim`", "`queue_claim_batch`", "`queue_claim_batch` is in no"),
    ("docs/performance.md", "`/gemm_bf16/x6`", "`/gemm_bf16/x7`", "no test /gemm_bf16/x7"),
]


def main():
    docqa, src = sys.argv[1], sys.argv[2]
    if src.endswith(".md"):  # the older form: the README's path
        src = os.path.dirname(os.path.abspath(src))
    ctx = gather(docqa, src)
    lines = {d: doc_lines(os.path.join(src, d)) for d in DOCS}
    bad, n_uses, n_named = check(ctx, lines)
    for line in bad:
        print(line)
    for doc, old, new, want in PLANTED:
        planted = replaced(lines[doc], old, new)
        found = planted is not None and \
            any(want in m for m in check(ctx, {**lines, doc: planted})[0] if m not in bad)
        if not found:
            print(f"{doc}: the planted error {old!r} -> {new!r} was not reported ({want!r})")
            bad.append(want)
    print(f"{n_uses} docqa command lines in the documents, {n_named} DOCQA_ names, "
          f"{len(PLANTED)} planted errors, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
