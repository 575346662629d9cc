#!/usr/bin/env bash
# scripts/download-model.sh against a stand-in for the Hugging Face Hub on localhost (HF_ENDPOINT):
# a good snapshot is fetched and checked; a gated model, a missing model or revision and an
# unreachable Hub each get their own message and exit status, and leave no empty folder behind.
set -euo pipefail
src=$1
script=$src/scripts/download-model.sh
tmp=$(mktemp -d)
server=""
trap '[ -z "$server" ] || kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT

mkdir -p "$tmp/files"
printf '{"model_type": "idefics3"}' >"$tmp/files/config.json"
printf 'weights' >"$tmp/files/model.safetensors"
cat >"$tmp/hub.py" <<'PY'
import hashlib, http.server, json, os, sys
files = sys.argv[1]
def listing():
    sib = []
    for name in sorted(os.listdir(files)):
        data = open(os.path.join(files, name), "rb").read()
        s = {"rfilename": name, "size": len(data)}
        if name.endswith(".safetensors"):
            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        sib.append(s)
    return json.dumps({"siblings": sib}).encode()
class Hub(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body=b"", code=None):
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/api/models/org/good/revision/main":
            self.reply(200, listing())
        elif p.startswith("/org/good/resolve/main/"):
            self.reply(200, open(os.path.join(files, p.rsplit("/", 1)[1]), "rb").read())
        elif p.startswith("/api/models/org/gated/"):
            self.reply(403, b'{"error": "gated"}', "GatedRepo")
        elif p.startswith("/api/models/org/good/revision/"):
            self.reply(404, b'{"error": "no revision"}', "RevisionNotFound")
        elif p.startswith("/api/models/org/private/"):
            self.reply(401, b'{"error": "Repository not found"}', "RepoNotFound")
        else:
            self.reply(404, b'{"error": "not found"}', "RepoNotFound")
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), Hub)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
python3 "$tmp/hub.py" "$tmp/files" >"$tmp/port" &
server=$!
# (a minute at most: Python's start takes seconds on a loaded machine, not the 5 s once given)
for _ in $(seq 600); do [ -s "$tmp/port" ] && break; sleep 0.1; done
port=$(cat "$tmp/port")
[ -n "$port" ] || {
  echo "FAIL: the stand-in hub ($tmp/hub.py) did not say its port within a minute"
  exit 1
}
hub=http://127.0.0.1:$port

fail() {
  echo "FAIL: $*"
  cat "$tmp/out" "$tmp/err" 2>/dev/null
  exit 1
}
# expect RC TEXT ARGS...: download-model.sh ARGS exits RC saying TEXT on stderr
expect() {
  local want_rc=$1 want=$2
  shift 2
  local rc=0
  HF_ENDPOINT=${ENDPOINT:-$hub} bash "$script" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  [ "$rc" = "$want_rc" ] || fail "download-model.sh $*: exit $rc, expected $want_rc"
  grep -qF -- "$want" "$tmp/err" || fail "download-model.sh $*: stderr does not say '$want'"
}

bash "$script" --help >"$tmp/out" || fail "--help exit $?"
grep -q 'scripts/download-model.sh MODEL \[DEST\]' "$tmp/out" || fail "--help prints no usage"
[ ! -e "$src/models/--help" ] || fail "--help made models/--help"
bash "$script" -h >/dev/null || fail "-h exit $?"
expect 2 "no MODEL given"
expect 2 "unknown option '--bogus'" --bogus
expect 2 "unexpected argument 'x'" org/good "$tmp/d" x
expect 2 "not a Hub repository id" '../etc' "$tmp/d"

expect 2 "gated: log in on $hub/org/gated and accept its licence, then set HF_TOKEN" \
  org/gated "$tmp/new/gated"
expect 2 "no such model, or it is private or gated" org/private "$tmp/new/private"
expect 2 "no such model or revision (HTTP 404)" org/missing "$tmp/new/missing"
HF_REVISION=v9 expect 2 "the model has no revision 'v9'" org/good "$tmp/new/rev"
ENDPOINT=http://127.0.0.1:1 expect 3 "cannot reach http://127.0.0.1:1 to list org/good@main" \
  org/good "$tmp/new/offline"
[ ! -e "$tmp/new" ] || fail "failed downloads left $(find "$tmp/new")"
# A folder that was there before is the user's: it stays, with what it held.
mkdir -p "$tmp/mine"
touch "$tmp/mine/notes.txt"
expect 2 "gated" org/gated "$tmp/mine"
[ -f "$tmp/mine/notes.txt" ] && [ "$(ls -A "$tmp/mine")" = notes.txt ] ||
  fail "a failed download changed the existing folder: $(ls -A "$tmp/mine")"

HF_ENDPOINT=$hub bash "$script" org/good "$tmp/new/good" >"$tmp/out" 2>"$tmp/err" ||
  fail "good download failed"
cmp -s "$tmp/files/model.safetensors" "$tmp/new/good/model.safetensors" || fail "weights differ"
cmp -s "$tmp/files/config.json" "$tmp/new/good/config.json" || fail "config.json differs"
[ "$(ls -A "$tmp/new/good" | sort | tr '\n' ' ')" = "config.json model.safetensors " ] ||
  fail "stray files: $(ls -A "$tmp/new/good")"
echo "download-model.sh: fetched and checked; gated, missing, bad revision and offline told apart"
