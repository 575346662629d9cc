#!/usr/bin/env python3
"""transformers' side of scripts/bench-prep.sh: pages/s through Idefics3Processor.

    bench_prep_hf.py SNAPSHOT N_RES REPEATS IMAGE...

Per page, what docqa's preparing threads do: load_image (EXIF applied), then the processor on the
DocVQA prompt and the page at size.longest_edge = N_RES x tile (pixel_values as float32 numpy, the
prompt expanded and tokenized). One process, one page at a time; a warm-up pass over the list,
then the best of REPEATS passes. Prints one line in bench_prep's format (cpu_seconds: the pass
with the least CPU time, time.process_time).
"""
import sys
import time

QUESTION = ("<|im_start|>User:<image>Look at the document and answer the question. Question: "
            "What is the date?<end_of_utterance>\nAssistant:")


def main():
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) < 5 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    snap, n_res, repeats, pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    from transformers import AutoProcessor
    from transformers.image_utils import load_image
    proc = AutoProcessor.from_pretrained(snap)
    tile = proc.image_processor.max_image_size["longest_edge"]
    size = {"longest_edge": n_res * tile}

    def one_pass():
        tiles = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for p in pages:
            out = proc(text=QUESTION, images=[[load_image(p)]], size=size, return_tensors="np")
            tiles += out["pixel_values"].shape[1]
        return time.perf_counter() - t0, tiles, time.process_time() - c0

    one_pass()
    passes = [one_pass() for _ in range(repeats)]
    best, tiles, _ = min(passes)
    best_cpu = min(p[2] for p in passes)
    print(f"hf_prep threads=1 pages={len(pages)} seconds={best:.3f} "
          f"pages_per_s={len(pages) / best:.2f} tiles={tiles} failed=0 cpu_seconds={best_cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
