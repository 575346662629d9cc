#!/usr/bin/env python3
"""The README's docqa command lines against the binary's --help: users copy them.

Every `docqa COMMAND ...` in README.md, in a code block (comments after ` #` left out) or in
backquotes in the prose, may use only options that `docqa COMMAND --help` lists: an option
renamed or dropped in the code, or misspelt in the README, fails here naming the line. The
synopsis under "Ingesting documents" must also list every option `docqa ingest --help` has.

    test_readme_options.py DOCQA README.md
"""
import re
import subprocess
import sys

COMMANDS = ["ingest", "ask", "run", "status", "export", "requeue", "cancel", "generate",
            "migrate", "version"]


def help_options(docqa, command):
    """(short, long) pairs of the options `docqa COMMAND --help` lists; short may be None."""
    out = subprocess.run([docqa, command, "--help"], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"^\s+(?:(-\w), )?(--[a-z][a-z0-9-]*)", out, re.M)


def readme_uses(path):
    """(line number, command, the text after it) for each docqa command the README shows."""
    uses = []
    last = None  # the command a synopsis's next lines ("    [--opt ...]") continue
    for n, line in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
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


def main():
    docqa, readme = sys.argv[1], sys.argv[2]
    options = {c: help_options(docqa, c) for c in COMMANDS}
    known = {c: {o for pair in options[c] for o in pair if o} | {"--help"} for c in COMMANDS}
    uses = readme_uses(readme)
    bad = []
    for n, command, text in uses:
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text):
            if opt not in known[command]:
                bad.append(f"README.md:{n}: docqa {command} has no {opt}: {text.strip()}")
    synopsis = " ".join(t for n, c, t in uses if c == "ingest" and t.lstrip().startswith("["))
    if not synopsis:
        bad.append("README.md: no `docqa ingest [--db FILE] ...` synopsis found")
    for short, long in options["ingest"]:
        if not re.search(rf"(\[|\| )({re.escape(long)}|{re.escape(short or long)})[] ]", synopsis):
            bad.append(f"README.md: the ingest synopsis lacks {long}, which --help lists")
    for line in bad:
        print(line)
    print(f"{len(uses)} docqa command lines in the README, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
