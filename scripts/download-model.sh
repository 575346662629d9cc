#!/usr/bin/env bash
# Downloads a SmolVLM snapshot from the Hugging Face Hub, with resume and checksum checks.
#
#   scripts/download-model.sh MODEL [DEST]
#     MODEL  a Hub repository id: HuggingFaceTB/SmolVLM-256M-Instruct, HuggingFaceTB/SmolVLM-500M-
#            Instruct, HuggingFaceTB/SmolVLM-Instruct, or any Idefics3 repository
#     DEST   folder to write (default: models/<name>)
#   HF_TOKEN     sent as a bearer token when set (gated or private repositories: accept the
#                licence on the model's page with your account, then set a token of it)
#   HF_ENDPOINT  Hub address (default https://huggingface.co), e.g. a mirror
#   HF_REVISION  branch, tag or commit (default main)
#
# Every file listed by the Hub for the revision that docqa needs is fetched with `curl -C -`
# (an interrupted download resumes: run the script again); files stored in LFS (the weights) are
# checked against the SHA-256 the Hub publishes, the others against their size. A run that fails
# before fetching anything leaves no folder behind.
# Exit status: 0 done; 1 a file failed its check; 2 bad arguments, or the Hub refused (no such
# model or revision, gated or private); 3 the Hub cannot be reached (as on machines without
# internet access): point docqa at a snapshot you copied by other means with `--model DIR`.
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
die_usage() {
  echo "download-model: $*" >&2
  echo "usage: scripts/download-model.sh MODEL [DEST] (see --help)" >&2
  exit 2
}
case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  '') die_usage "no MODEL given (e.g. HuggingFaceTB/SmolVLM-256M-Instruct)" ;;
  -*) die_usage "unknown option '$1'" ;;
esac
[ $# -le 2 ] || die_usage "unexpected argument '$3'"
model=$1
# owner/name as the Hub spells ids: anything else would be a path on the Hub's server
[[ "$model" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$ ]] ||
  die_usage "'$model' is not a Hub repository id (owner/name, e.g. HuggingFaceTB/SmolVLM-256M-Instruct)"
dest=${2:-"$(dirname "$0")/../models/${model##*/}"}
endpoint=${HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
revision=${HF_REVISION:-main}
auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")

for tool in curl python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "download-model: $tool is required" >&2; exit 2; }
done

# The folders this run makes (DEST and any missing parents): a run that fails before a file is
# fetched removes them again; partial downloads are kept, for the next run to resume.
made=""
d=$dest
while [ ! -e "$d" ]; do
  made=$d
  d=$(dirname "$d")
done
mkdir -p "$dest"
listing="$dest/.hub-listing.json"
headers="$dest/.hub-headers"
cleanup() {
  rm -f "$listing" "$headers" "$dest/.hub-files.tsv"
  if [ -n "$made" ]; then
    d=$dest
    while rmdir "$d" 2>/dev/null && [ "$d" != "$made" ]; do d=$(dirname "$d"); done
  fi
}
trap cleanup EXIT

set +e
status=$(curl -sS --connect-timeout 15 --max-time 60 "${auth[@]}" -D "$headers" -o "$listing" \
  -w '%{http_code}' "$endpoint/api/models/$model/revision/$revision?blobs=true" 2>"$dest/.hub-err")
curl_rc=$?
set -e
curl_err=$(sed -e "s/^curl: ([0-9]*) //" "$dest/.hub-err" | head -n 1)
rm -f "$dest/.hub-err"
if [ "$curl_rc" -ne 0 ] && [ "${status:-000}" = 000 ]; then
  cat >&2 <<MSG
download-model: cannot reach $endpoint to list $model@$revision (${curl_err:-no answer}).
  This machine may have no internet access (the Hugging Face Hub is not reachable from docqa's
  development and CI machines). Copy a snapshot folder here by other means and pass it with
  --model DIR, or try the bundled demo model (scripts/demo.sh; its answers are meaningless).
MSG
  exit 3
fi
if [ "$status" != 200 ]; then
  # The Hub names its refusals in X-Error-Code (GatedRepo, RepoNotFound, RevisionNotFound).
  code=$(sed -n 's/^[Xx]-[Ee]rror-[Cc]ode: *\([A-Za-z]*\).*/\1/p' "$headers" | tail -n 1)
  page="$endpoint/$model"
  if [ "$code" = GatedRepo ]; then
    why="gated: log in on $page and accept its licence, then set HF_TOKEN to a token of that account"
  elif [ "$code" = RevisionNotFound ]; then
    why="the model has no revision '$revision' (HF_REVISION: a branch, tag or commit)"
  elif [ "$status" = 401 ] || [ "$status" = 403 ]; then
    # The Hub answers 401 for a private repository and for one that does not exist alike.
    if [ -n "${HF_TOKEN:-}" ]; then
      why="refused with HF_TOKEN (HTTP $status): no such model, or your account may not read it (a gated model: accept its licence on $page)"
    else
      why="refused (HTTP $status): no such model, or it is private or gated: check the id; for a gated model log in on $page, accept its licence and set HF_TOKEN"
    fi
  elif [ "$status" = 404 ] || [ "$code" = RepoNotFound ] || [ "$code" = EntryNotFound ]; then
    why="no such model or revision (HTTP $status): check the id and HF_REVISION"
  else
    why="the Hub answered HTTP $status"
  fi
  echo "download-model: $model@$revision: $why" >&2
  exit 2
fi

# name<TAB>size<TAB>sha256-or-empty, for the files an Idefics3 snapshot needs.
python3 - "$listing" >"$dest/.hub-files.tsv" <<'PY'
import json, re, sys
info = json.load(open(sys.argv[1]))
want = re.compile(r"^(config|generation_config|preprocessor_config|processor_config|tokenizer|"
                  r"tokenizer_config|special_tokens_map|added_tokens|chat_template)\.json$|"
                  r"^model(-\d+-of-\d+)?\.safetensors$|^model\.safetensors\.index\.json$")
for s in info.get("siblings", []):
    name = s["rfilename"]
    if want.match(name):
        lfs = s.get("lfs") or {}
        print(f"{name}\t{s.get('size', lfs.get('size', ''))}\t{lfs.get('sha256', '')}")
PY
if ! grep -q safetensors "$dest/.hub-files.tsv"; then
  echo "download-model: $model@$revision lists no safetensors weights" >&2
  exit 2
fi

while IFS=$'\t' read -r name size sha; do
  out="$dest/$name"
  if [ -n "$sha" ] && [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ]; then
    echo "download-model: $name already complete"
    continue
  fi
  echo "download-model: fetching $name (${size:-?} bytes)"
  if ! curl -fL --retry 5 --retry-delay 5 -C - "${auth[@]}" \
    "$endpoint/$model/resolve/$revision/$name" -o "$out.part"; then
    echo "download-model: $name: the download failed (above); run again to resume it" >&2
    exit 1
  fi
  if [ -n "$sha" ]; then
    got=$(sha256sum "$out.part" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
      echo "download-model: $name: SHA-256 $got, the Hub says $sha; removed, run again" >&2
      rm -f "$out.part"
      exit 1
    fi
  elif [ -n "$size" ] && [ "$(stat -c %s "$out.part")" != "$size" ]; then
    echo "download-model: $name: size $(stat -c %s "$out.part"), the Hub says $size" >&2
    exit 1
  fi
  mv "$out.part" "$out"
done <"$dest/.hub-files.tsv"
made="" # done: the folder stays
echo "download-model: $model is in $dest"
