#!/usr/bin/env python3
"""README's "JSON" lists (under "Exit statuses, signals and JSON") against what --json writes.

Every command that has --json is run on the bundled demo model (its weights written afresh by
scripts/make-demo-model.py), as a user would: ingest, ask, run, status, requeue, cancel and
generate. For each:
- standard output is one JSON object and nothing else;
- its top-level keys are exactly the names README's list gives outside parentheses: a key the
  code added or dropped, or a name misspelt in the list, fails here naming it (a user's script
  reads what the list promises);
- every key written, at any depth, is a name the list gives (the nested ones in parentheses),
  but for the objects keyed by data (`failed_by_code`, `by_state`); requeue's and cancel's
  `groups` objects are checked against the `groups` entry;
- the numbers the paragraph above the lists says are rounded (`percent_done` to one decimal,
  `answers_per_second` to two, ...) are rounded so, and a whole one keeps its `.0`.
Each check finds an error planted in README's text (PLANTED), so that one that stopped looking
fails too.

    test_readme_json.py DOCQA SOURCE_DIR
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

COMMANDS = ["ingest", "ask", "run", "status", "requeue", "cancel", "prune", "generate"]
# Objects whose keys are data (error codes, job states), not names a list could give.
DATA_KEYED = {"failed_by_code", "partial_by_code", "by_state"}
# README: "`percent_done` to one decimal (as `v_progress`), `answers_per_second` to two,
# `eta_seconds` to whole seconds, ingest's `seconds` and `pages_per_second` and run's `seconds`
# to one, generate's milliseconds to three, `decode_tokens_per_s` to two and `peak_rss_mb` to
# one". (command, path of keys; "*" every item of a list or member of an object) -> decimals.
ROUNDED = {
    ("status", ("progress", "*", "percent_done")): 1,
    ("status", ("answers_per_second",)): 2,
    ("run", ("answers_per_second",)): 2,
    ("status", ("eta_seconds",)): 0,
    ("ingest", ("seconds",)): 1,
    ("ingest", ("pages_per_second",)): 1,
    ("run", ("seconds",)): 1,
    ("generate", ("timings_ms", "*")): 3,
    ("generate", ("cpu_ms", "*")): 3,
    ("generate", ("decode_tokens_per_s",)): 2,
    ("generate", ("peak_rss_mb",)): 1,
}


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def json_of(docqa, args, cwd, status=0):
    """The one JSON object `docqa ARGS` prints on stdout, and the raw text."""
    r = sh([docqa] + args, cwd=cwd)
    if r.returncode != status:
        sys.exit(f"docqa {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    try:
        obj, end = json.JSONDecoder().raw_decode(r.stdout.lstrip())
    except ValueError as e:
        sys.exit(f"docqa {' '.join(args)}: standard output is not JSON ({e}): {r.stdout[:200]}")
    if not isinstance(obj, dict) or r.stdout.lstrip()[end:].strip():
        sys.exit(f"docqa {' '.join(args)}: standard output is not one JSON object")
    return obj, r.stdout


def outputs(docqa, src, tmp):
    """{command: (object, raw text)} of every --json command, run on the demo model."""
    model = os.path.join(tmp, "demo-tiny")
    shutil.copytree(os.path.join(src, "models", "demo-tiny"), model)
    for f in glob.glob(os.path.join(model, "model.safetensors")):
        os.remove(f)
    r = sh([sys.executable, os.path.join(src, "scripts", "make-demo-model.py"), "--model-dir",
            model])
    if r.returncode != 0:
        sys.exit(f"make-demo-model.py failed: {r.stderr}")
    archive = os.path.join(tmp, "archive")
    os.mkdir(archive)
    for name in ("letter.pdf", "invoice.pdf"):
        shutil.copy(os.path.join(src, "examples", "docs", name), archive)
    # a failure and a link not followed, so that their objects' members are written too
    with open(os.path.join(archive, "page.pdf"), "w", encoding="utf-8") as f:
        f.write("<html><body>not a PDF</body></html>")
    os.symlink("nowhere.pdf", os.path.join(archive, "broken.pdf"))
    db = ["--db", os.path.join(tmp, "t.db")]
    out = {}
    out["ingest"] = json_of(docqa, ["ingest"] + db + ["--model", model, "--json", "-q", archive],
                            tmp, status=1)
    if not out["ingest"][0]["failures"] or not out["ingest"][0]["links_not_followed"]:
        sys.exit("ingest --json: no failure or link not followed listed")
    out["ask"] = json_of(docqa, ["ask"] + db + ["--model", model, "--json", "What is the date?",
                                                "What is the date?"], tmp)
    out["run"] = json_of(docqa, ["run"] + db + ["--model", model, "--json", "-q",
                                                "--until-empty"], tmp)
    out["status"] = json_of(docqa, ["status"] + db + ["--json"], tmp)
    out["requeue"] = json_of(docqa, ["requeue"] + db + ["--done", "--dry-run", "--json"], tmp)
    json_of(docqa, ["ask"] + db + ["--model", model, "--json", "Who signed it?"], tmp)
    out["cancel"] = json_of(docqa, ["cancel"] + db + ["--question", "Who signed it?", "--json"],
                            tmp)
    out["prune"] = json_of(docqa, ["prune"] + db + ["--dry-run", "--json"], tmp)
    page = sorted(glob.glob(os.path.join(tmp, "t.db.pages", "*", "*", "*.png")))[0]
    out["generate"] = json_of(docqa, ["generate", "--model", model, "--image", page, "--prompt",
                                      "What is the date?", "--max-new-tokens", "3", "--json"],
                              tmp)
    return out


def without_parens(text):
    """The text with every parenthesized part (nested ones too) left out."""
    out, depth = [], 0
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)


def readme_lists(readme):
    """{entry: (line, top-level names, every name)} of README's --json lists."""
    start = readme.find("**JSON.**")
    end = readme.find("\n## ", start)
    if start < 0 or end < 0:
        return {}
    lists = {}
    for m in re.finditer(r"^- `(\w+)`(?: \([^)]*\))?: (.*?)(?=\n- |\n\n|\Z)",
                         readme[start:end], re.M | re.S):
        body = m.group(2)
        top = set(re.findall(r"`(\w+)`(?!'s)", without_parens(body)))
        every = set(re.findall(r"`(\w+)`(?!'s)", body))
        line = readme[:start + m.start()].count("\n") + 1
        if m.group(1) == "groups":  # "- `groups` (requeue, cancel): ..." names its members
            lists["groups"] = (line, top, every)
        else:
            lists[m.group(1)] = (line, top, every)
    return lists


def keys(o, skip=()):
    """Every key of o at any depth, not descending into data-keyed objects or `skip`."""
    if isinstance(o, dict):
        for k, v in o.items():
            yield k
            if k not in DATA_KEYED and k not in skip:
                yield from keys(v, skip)
    elif isinstance(o, list):
        for v in o:
            yield from keys(v, skip)


def at(o, path):
    """The values at a path of keys ("*": every item or member)."""
    if not path:
        yield o
        return
    head, rest = path[0], path[1:]
    if head == "*":
        items = o.values() if isinstance(o, dict) else o if isinstance(o, list) else []
        for v in items:
            yield from at(v, rest)
    elif isinstance(o, dict) and head in o:
        yield from at(o[head], rest)


def check(out, readme):
    bad = []
    lists = readme_lists(readme)
    for command in COMMANDS:
        if command not in lists:
            bad.append(f"README.md: no list of {command}'s --json keys under JSON")
            continue
        line, top, every = lists[command]
        obj = out[command][0]
        written = set(obj)
        for k in sorted(written - top):
            bad.append(f"README.md:{line}: {command} --json writes `{k}`, which its list "
                       f"does not give")
        for k in sorted(top - written):
            bad.append(f"README.md:{line}: {command} --json has no `{k}`, which its list gives")
        groups_ok = command in ("requeue", "cancel") and "groups" in lists
        for k in sorted(set(keys(obj, skip=("groups",) if groups_ok else ())) - every):
            bad.append(f"README.md:{line}: {command} --json writes `{k}` (nested), which its "
                       f"list does not name")
        if groups_ok:
            gline, gtop, gevery = lists["groups"]
            gtop = gtop - {"groups"}
            groups = obj.get("groups") or []
            if not groups:
                bad.append(f"{command} --json: no groups to check")
            for g in groups:
                for k in sorted(set(g) ^ gtop):
                    bad.append(f"README.md:{gline}: {command}'s groups: `{k}` "
                               f"{'written, not listed' if k in g else 'listed, not written'}")
                for k in sorted(set(keys(g)) - gevery):
                    bad.append(f"README.md:{gline}: {command}'s groups write `{k}` (nested), "
                               f"not named")
    for (command, path), decimals in ROUNDED.items():
        obj, raw = out[command]
        values = list(at(obj, path))
        if not values:
            bad.append(f"{command} --json: nothing at {'.'.join(path)} to check the rounding of")
        for v in values:
            if v is not None and (not isinstance(v, float) or round(v, decimals) != v):
                bad.append(f"{command} --json: {'.'.join(path)} is {v!r}, not a number rounded "
                           f"to {decimals} decimals")
        # "a whole one keeps its .0": a number README calls rounded is written as a float
        for m in re.finditer(r'"%s"\s*:\s*(-?[0-9][0-9eE.+-]*)' % re.escape(path[-1]), raw):
            if path[-1] != "*" and not re.search(r"[.eE]", m.group(1)):
                bad.append(f"{command} --json: \"{path[-1]}\": {m.group(1)} has no .0")
    return bad


# Errors planted in README's text, one at a time: each must add a mismatch naming it.
PLANTED = [
    ("`documents_ok`, ", "", "ingest --json writes `documents_ok`"),
    ("`jobs_existing` (asked before)", "`jobs_existing` (asked before), `jobs_old`",
     "ask --json has no `jobs_old`"),
    ("`buried_answered_late`, ", "", "run --json writes `buried_answered_late`"),
    ("`answers_by_snapshot` (`model`, `model_fingerprint`, `answers`)",
     "`answers_by_snapshot` (`model`, `answers`)", "writes `model_fingerprint` (nested)"),
    ("`by_state` (", "`by_states` (", "groups: `by_state` written, not listed"),
    ("(`path`, `status`, `code`, `message` each)", "(`path`, `code`, `message` each)",
     "ingest --json writes `status` (nested)"),
    ("`draft` (`guessed`", "`drafts` (`guessed`", "generate --json has no `drafts`"),
    ("`back_to_done` (", "`back_to_done`, `withdrawn` (", "cancel --json has no `withdrawn`"),
]


def main():
    docqa, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    readme = open(os.path.join(src, "README.md"), encoding="utf-8").read()
    with tempfile.TemporaryDirectory() as tmp:
        out = outputs(docqa, src, tmp)
    bad = check(out, readme)
    for line in bad:
        print(line)
    for old, new, want in PLANTED:
        if old not in readme:
            print(f"README.md: the text to plant an error in is gone: {old!r}")
            bad.append(old)
            continue
        found = [m for m in check(out, readme.replace(old, new, 1)) if m not in bad]
        if not any(want in m for m in found):
            print(f"README.md: the planted error {old!r} -> {new!r} was not reported ({want!r})")
            bad.append(want)
    print(f"{len(COMMANDS)} commands' --json against README's lists, {len(ROUNDED)} rounded "
          f"numbers, {len(PLANTED)} planted errors, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
