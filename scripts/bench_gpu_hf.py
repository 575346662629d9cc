#!/usr/bin/env python3
"""transformers' side of scripts/bench-gpu.sh: the same pages, prompt and token count as
tests/model/bench_gpu.c, with Idefics3ForConditionalGeneration in torch bf16 and sdpa attention.

    bench_gpu_hf.py SNAPSHOT DEVICE N_RES MAX_NEW BATCHES IMAGE...

Prints one line per batch size, in bench_gpu's format:
    hf device=cuda:0 batch=16 pages=16 seconds=1.234 pages_per_s=12.97 preprocess_ms_per_page=...
Processing (resize, tiling, tokenization) is timed apart and left out of pages/s, as bench_gpu
leaves its preprocessing out. Each batch size runs twice and the second run is timed, as in
bench_gpu: a cold batch of 64 ran at 13 pages/s, a warm one at 26 (H200, SmolVLM-256M). A batch that runs out of GPU memory prints `oom` and the next
batch size is tried.
"""
import sys
import time

QUESTION = ("<|im_start|>User:<image>Look at the document and answer the question. Question: "
            "What is the date?<end_of_utterance>\nAssistant:")


def load_bf16(cls, snap, torch):
    """The model in bf16 with sdpa attention, on any transformers: `dtype=` since 4.56, before
    that `torch_dtype=` (where `dtype=` raised TypeError, or was ignored and left float32
    parameters, whose first batch then failed on bf16 pixel_values)."""
    def dtypes(model):
        return sorted({str(p.dtype) for p in model.parameters()})

    want = [str(torch.bfloat16)]
    model = None
    try:
        model = cls.from_pretrained(snap, dtype=torch.bfloat16, attn_implementation="sdpa")
    except TypeError:
        pass
    if model is None or dtypes(model) != want:
        model = cls.from_pretrained(snap, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    if dtypes(model) != want:
        sys.exit(f"bench_gpu_hf: {snap}: parameters loaded as {', '.join(dtypes(model))}, "
                 f"not {want[0]}")
    return model


def main():
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) < 7 or sys.argv[1].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    snap, device, n_res, max_new, batches = sys.argv[1:6]
    n_res, max_new = int(n_res), int(max_new)
    images = sys.argv[6:]
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    if not torch.cuda.is_available():
        sys.exit("bench_gpu_hf: torch sees no CUDA GPU")
    processor = AutoProcessor.from_pretrained(snap)
    tile = processor.image_processor.max_image_size["longest_edge"]
    processor.image_processor.size = {"longest_edge": n_res * tile}
    processor.tokenizer.padding_side = "left"
    model = load_bf16(Idefics3ForConditionalGeneration, snap, torch).to(device).eval()
    pages = [Image.open(p).convert("RGB") for p in images]

    def run(batch):
        t0 = time.perf_counter()
        inputs = processor(text=[QUESTION] * batch,
                           images=[[pages[i % len(pages)]] for i in range(batch)],
                           return_tensors="pt", padding=True)
        prep = time.perf_counter() - t0
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=max_new, min_new_tokens=max_new,
                           do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t0, prep

    for b in batches.split(","):
        batch = int(b)
        try:
            run(batch)  # a warm-up of this size (allocator, kernels for its shapes), as bench_gpu
            seconds, prep = run(batch)
        except torch.cuda.OutOfMemoryError:
            print(f"hf device={device} batch={batch} oom", flush=True)
            torch.cuda.empty_cache()
            continue
        print(f"hf device={device} batch={batch} pages={batch} seconds={seconds:.3f} "
              f"pages_per_s={batch / seconds:.3f} preprocess_ms_per_page={1000 * prep / batch:.0f}",
              flush=True)


if __name__ == "__main__":
    main()
