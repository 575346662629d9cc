#!/usr/bin/env python3
"""llama.cpp's SmolVLM on the benchmark page, for scripts/bench-model.sh (nothing of llama.cpp
is part of docqa: the user builds it, see bench-model.sh).

  bench_llama.py convert LLAMA_CPP_DIR SNAPSHOT OUT_DIR
      the snapshot as OUT_DIR/model-f16.gguf, model-q8_0.gguf and mmproj-f16.gguf (once)
  bench_llama.py run LLAMA_MTMD_CLI MODEL.gguf MMPROJ.gguf PAGE THREADS MAX_NEW
      one key=value line: tiles, vision_ms, prefill_ms, decode_tok_s, peak_rss_mb

llama-mtmd-cli prints no stage timings of its own in recent versions, only a line for each image
slice it encodes ("mtmd batch encoding done in N ms") with a timestamp before it. So it runs
for 1 and for 1 + MAX_NEW tokens (--ignore-eos: random weights end early), each twice, after a
run that reads the files in, and the best of each is kept:
  vision   the sum of its slice encodings;
  prefill  a 1-token run's time from its first slice to its exit, less its encodings: the
           interleaved text and image-embedding batches, the last text and the first token;
  decode   MAX_NEW / (the longer run's time less its encodings - the same of the 1-token run);
  RSS      the largest run's peak (getrusage of the children).
Its preprocessing differs from transformers' (it encodes 17 slices of the letter page where
transformers makes 21 tiles at N=5), so `tiles` says how many it encoded.
"""
import os
import re
import resource
import subprocess
import sys
import time

PROMPT = "Look at the document and answer the question. Question: What is the date?"


def convert(llama_dir, snapshot, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_dir, "gguf-py"))
    script = os.path.join(llama_dir, "convert_hf_to_gguf.py")
    for name, args in (("model-f16.gguf", ["--outtype", "f16"]),
                       ("model-q8_0.gguf", ["--outtype", "q8_0"]),
                       ("mmproj-f16.gguf", ["--outtype", "f16", "--mmproj"])):
        out = os.path.join(out_dir, name)
        if os.path.exists(out):
            continue
        done = subprocess.run([sys.executable, script, snapshot, *args, "--outfile",
                               out + ".part"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench_llama: converting {snapshot} to {out} failed:\n{done.stderr[-2000:]}")
        os.rename(out + ".part", out)


def stamp_ms(line):
    """llama.cpp's log timestamp (minutes.seconds.milliseconds.microseconds) in ms."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)\.(\d+) ", line)
    if m is None:
        return None
    mi, s, ms, us = (int(g) for g in m.groups())
    return (mi * 60 + s) * 1000 + ms + us / 1000


EXTRA = []  # ["--no-repack"] once a run has died of a signal (below)


def one_run(cli, model, mmproj, page, threads, n):
    args = [cli, "-m", model, "--mmproj", mmproj, "--image", page, "-t", str(threads),
            "-n", str(n), "--temp", "0", "--ignore-eos", "-p", PROMPT, *EXTRA]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate()
    wall_ms = (time.monotonic() - t0) * 1000
    if proc.returncode in (-4, -11) and not EXTRA:
        # llama.cpp's AMX path for q8_0 weights (repacked at load) died of SIGILL or SIGSEGV on
        # a Xeon with AMX-INT8 (llama.cpp of llama-cpp-python 0.3.36): its plain CPU path then
        print(f"bench_llama: {os.path.basename(model)}: signal {-proc.returncode}; "
              "again with --no-repack", file=sys.stderr)
        EXTRA.append("--no-repack")
        return one_run(cli, model, mmproj, page, threads, n)
    if proc.returncode != 0:
        sys.exit(f"bench_llama: {cli} failed ({proc.returncode}):\n{out[-2000:]}")
    encodings = [int(x) for x in re.findall(r"batch encoding done in (\d+) ms", out)]
    first = next((stamp_ms(l) for l in out.splitlines() if "encoding mtmd batch" in l), None)
    if not encodings or first is None:
        sys.exit(f"bench_llama: no image slice encoded by {cli}:\n{out[-2000:]}")
    return wall_ms, first, encodings


def run(cli, model, mmproj, page, threads, max_new, repeats=2):
    one_run(cli, model, mmproj, page, threads, 1)  # reads the files into the page cache
    best = {}
    for _ in range(repeats):
        for n in (1, 1 + max_new):
            wall, first, enc = one_run(cli, model, mmproj, page, threads, n)
            got = (wall - sum(enc), sum(enc), wall - first - sum(enc))
            best[n] = min(best.get(n, got), got)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    decode_s = (best[1 + max_new][0] - best[1][0]) / 1000
    print(f"tiles={len(enc)} vision_ms={min(best[1][1], best[1 + max_new][1])} "
          f"prefill_ms={best[1][2]:.0f} "
          f"decode_tok_s={max_new / decode_s if decode_s > 0 else float('nan'):.2f} "
          f"peak_rss_mb={rss_mb:.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) == 5 and sys.argv[1] == "convert":
        convert(*sys.argv[2:])
    elif len(sys.argv) == 8 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))
    else:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
