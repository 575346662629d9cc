#!/usr/bin/env bash
# Downloads a SmolVLM snapshot from the Hugging Face Hub, with resume and checksum checks.
#
#   scripts/download-model.sh [MODEL] [DEST]
#     MODEL  HuggingFaceTB/SmolVLM-256M-Instruct (default), HuggingFaceTB/SmolVLM-500M-Instruct,
#            HuggingFaceTB/SmolVLM-Instruct, or any Idefics3 repository id
#     DEST   folder to write (default: models/<name>)
#   HF_TOKEN     sent as a bearer token when set (gated or private repositories)
#   HF_ENDPOINT  Hub address (default https://huggingface.co), e.g. a mirror
#   HF_REVISION  branch, tag or commit (default main)
#
# Every file listed by the Hub for the revision that docqa needs is fetched with `curl -C -`
# (an interrupted download resumes); files stored in LFS (the weights) are checked against the
# SHA-256 the Hub publishes, the others against their size. Where the Hub cannot be reached (as on
# machines without internet access) the script says so and exits 3; point docqa at a snapshot you
# copied by other means with `--model DIR`.
set -euo pipefail

model=${1:-HuggingFaceTB/SmolVLM-256M-Instruct}
dest=${2:-"$(dirname "$0")/../models/${model##*/}"}
endpoint=${HF_ENDPOINT:-https://huggingface.co}
revision=${HF_REVISION:-main}
auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")

for tool in curl python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "download-model: $tool is required" >&2; exit 2; }
done
mkdir -p "$dest"
listing="$dest/.hub-listing.json"
if ! curl -fsS --connect-timeout 15 --max-time 60 "${auth[@]}" \
     "$endpoint/api/models/$model/revision/$revision?blobs=true" -o "$listing"; then
  cat >&2 <<MSG
download-model: cannot reach $endpoint to list $model@$revision.
  This machine may have no internet access (the Hugging Face Hub is not reachable from docqa's
  development and CI machines). Copy a snapshot folder here by other means and pass it with
  --model DIR, or try the bundled demo model (scripts/demo.sh; its answers are meaningless).
MSG
  rm -f "$listing"
  exit 3
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
  curl -fL --retry 5 --retry-delay 5 -C - "${auth[@]}" \
    "$endpoint/$model/resolve/$revision/$name" -o "$out.part"
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
rm -f "$listing" "$dest/.hub-files.tsv"
echo "download-model: $model is in $dest"
