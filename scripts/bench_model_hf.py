#!/usr/bin/env python3
"""transformers' side of scripts/bench-model.sh, and its page and sgemm-peak helpers.

    bench_model_hf.py page OUT.png          letter-size page (text, rules, a table) at 150 dpi
    bench_model_hf.py peak THREADS          float32 GEMM GFLOP/s (torch.mm, 2048^3, best of 5)
    bench_model_hf.py run SNAPSHOT IMAGE N_RES MAX_NEW THREADS

`run` uses Idefics3ForConditionalGeneration in torch float32 with eager attention on the CPU and
prints one line in bench_model's key=value format: preprocess (processor), vision+connector
(get_image_features), prefill (the prompt's forward with those image features), decode tokens/s
over MAX_NEW - 1 greedy steps (the first token comes from prefill, as in bench_model), peak RSS,
and the process's CPU time in each stage (*_cpu_ms, time.process_time: every thread's), which a
shared host's neighbours hardly move. `peak` also prints the GFLOP/s of the CPU time per thread
(sgemm_gflops_cpu), what the threads did while they ran.
"""
import resource
import sys
import time

QUESTION = ("<|im_start|>User:<image>Look at the document and answer the question. Question: "
            "What is the date?<end_of_utterance>\nAssistant:")


def make_page(out):
    from PIL import Image, ImageDraw
    w, h = 1275, 1650  # US letter at 150 dpi
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((90, 70), "INVOICE 2026-0417        Date: November 25, 2026", fill="black")
    d.line((90, 100, w - 90, 100), fill="black", width=3)
    y = 130
    for i in range(28):
        d.text((90, y), f"Line {i + 1}: the quick brown fox jumps over the lazy dog; "
               f"account {1000 + 37 * i}, reference R-{i * i:04d}.", fill="black")
        y += 22
    y += 20
    cols = [90, 420, 700, 950, w - 90]
    for r in range(16):
        d.line((cols[0], y + 30 * r, cols[-1], y + 30 * r), fill="black", width=1)
        for c in range(4):
            txt = ["Item", "Quantity", "Unit price", "Total"][c] if r == 0 else \
                [f"Part {r:02d}", str(r * 3), f"{r * 1.25:.2f}", f"{r * r * 3.75:.2f}"][c]
            d.text((cols[c] + 8, y + 30 * r + 9), txt, fill="black")
    for x in cols:
        d.line((x, y, x, y + 30 * 15), fill="black", width=1)
    d.line((90, h - 120, w - 90, h - 120), fill="black", width=2)
    d.text((90, h - 100), "Signed: ____________________   Page 1 of 1", fill="black")
    img.save(out)


def peak(threads):
    import torch
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = best_cpu = 0.0
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        best_cpu = max(best_cpu, 2 * n ** 3 / ((time.process_time() - c0) / threads) / 1e9)
    print(f"sgemm_gflops={best:.1f} sgemm_gflops_cpu={best_cpu:.1f}")


def run(snap, image, n_res, max_new, threads):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(snap)
    tile = processor.image_processor.max_image_size["longest_edge"]
    processor.image_processor.size = {"longest_edge": n_res * tile}
    model = Idefics3ForConditionalGeneration.from_pretrained(
        snap, dtype=torch.float32, attn_implementation="eager").eval()
    page = Image.open(image).convert("RGB")
    cpu = {}
    t0, c0 = time.perf_counter(), time.process_time()
    inputs = processor(text=[QUESTION], images=[[page]], return_tensors="pt")
    prep = time.perf_counter() - t0
    cpu["preprocess"] = time.process_time() - c0
    with torch.inference_mode():
        t0, c0 = time.perf_counter(), time.process_time()
        feats = model.model.get_image_features(inputs["pixel_values"],
                                               inputs["pixel_attention_mask"])
        vision = time.perf_counter() - t0
        cpu["vision"] = time.process_time() - c0
        ids, am = inputs["input_ids"], inputs["attention_mask"]
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(input_ids=ids, attention_mask=am, image_hidden_states=feats, use_cache=True)
        prefill = time.perf_counter() - t0
        cpu["prefill"] = time.process_time() - c0
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(max_new - 1):
            am = torch.cat([am, torch.ones_like(am[:, :1])], dim=1)
            out = model(input_ids=tok, attention_mask=am, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - t0
        cpu["decode"] = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model=hf tiles={inputs['pixel_values'].shape[1]} prompt_tokens={ids.shape[1]} "
          f"preprocess_ms={prep * 1000:.0f} vision_ms={vision * 1000:.0f} "
          f"prefill_ms={prefill * 1000:.0f} decode_tok_s={(max_new - 1) / decode:.2f} "
          f"peak_rss_mb={rss:.0f} decode_ms={decode * 1000:.0f} "
          + " ".join(f"{k}_cpu_ms={v * 1000:.0f}" for k, v in cpu.items()), flush=True)


def main():
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "page":
        make_page(sys.argv[2])
    elif sys.argv[1] == "peak":
        peak(int(sys.argv[2]))
    elif sys.argv[1] == "run" and len(sys.argv) == 7:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
