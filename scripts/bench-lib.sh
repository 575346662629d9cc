# Shared by the benchmark scripts (sourced, not run).

# bench_args MAX ARGS...: --help prints the calling script's header comment and exits 0; an
# option, or more than MAX arguments, is a usage error (exit 2). Checked before anything is built
# or installed.
bench_args() {
  local max=$1 name arg
  shift
  name=$(basename "$0" .sh)
  for arg in "$@"; do
    case "$arg" in
      -h | --help)
        bench_usage
        exit 0
        ;;
      -*)
        echo "$name: unknown option '$arg'" >&2
        bench_usage >&2
        exit 2
        ;;
    esac
  done
  if [ $# -gt "$max" ]; then
    echo "$name: at most $max argument$([ "$max" = 1 ] || echo s), got $#" >&2
    bench_usage >&2
    exit 2
  fi
}

bench_usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# bench_venv VENV: a virtualenv with torch, transformers 4.57.6 and Pillow 12.3.0, the versions
# the goldens were made with; created from PyPI when missing.
bench_venv() {
  local venv=$1
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, PIL" 2>/dev/null; then
    echo "$(basename "$0"): creating $venv (torch, transformers 4.57.6, pillow 12.3.0 from PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch transformers==4.57.6 pillow==12.3.0
  fi
}

# bench_corpus_pages DOCQA SHARED DIR N_RES: DIR/list names up to 64 pages of SHARED/corpus's
# PDFs rendered at N_RES by `docqa ingest`, once (damaged corpus files fail their own ingest;
# the rest give the pages).
bench_corpus_pages() {
  local docqa=$1 shared=$2 dir=$3 n_res=$4
  [ -s "$dir/list" ] && return 0
  [ -d "$shared/corpus/pdf" ] || { echo "$(basename "$0"): $shared/corpus/pdf not found" >&2; return 2; }
  mkdir -p "$dir"
  "$docqa" ingest --db "$dir/pages.db" --n-res "$n_res" -q "$shared/corpus/pdf" >/dev/null 2>&1 || true
  find "$dir/pages.db.pages" -name '*.png' 2>/dev/null | sort | head -64 >"$dir/list"
}

# bench_threading: every run of the calling script (docqa's, the reference's, and the tools built
# from tests/, which do not start through docqa's main) under the OpenMP settings docqa itself
# uses: GOMP_SPINCOUNT=300 unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set (cli/main.c;
# torch's bundled libgomp reads them too). libgomp's own default spins 300000 times at each
# barrier, and on a shared host a run then measured its neighbours as much as itself. The
# settings go to stderr.
bench_threading() {
  if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
    export GOMP_SPINCOUNT=300 # cli/main.c: DQ_OMP_SPINCOUNT
  fi
  echo "$(basename "$0" .sh): OpenMP threads ${OMP_NUM_THREADS:-one a core}," \
    "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-unset};" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" >&2
}

# bench_timed FILE CMD...: runs CMD (its stdout and stderr as they are) and writes its wall and
# CPU seconds (user + system, its children's included) to FILE as "WALL CPU"; CMD's status.
# On a shared host wall time grows with the neighbours' load, CPU time hardly.
bench_timed() {
  local file=$1 rc=0 TIMEFORMAT='%R %U %S'
  shift
  { time "$@" 2>&3; } 3>&2 2>"$file.time" || rc=$?
  awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' "$file.time" >"$file"
  rm -f "$file.time"
  return $rc
}
