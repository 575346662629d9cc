# Prints the goldens of test_generator.c's /generator/rope-scaling (run from the repository root
# with transformers 4.57.6 and torch, float32, eager attention): the greedy ids for "hi" of
# tiny-smolvlm-b512 as it is; with text_config.rope_scaling {"type": "dynamic", "factor": 4} and
# max_position_embeddings 16 (the 9 prompt ids and 7 new ones fill all 16 positions); and with the
# linear, llama3 and yarn scalings below (session 33), each with the largest difference between
# its last-prompt-position logits and the plain model's, and its top logit there. From the
# differential test of config variants against transformers (sessions 32 and 33).
import json, shutil, tempfile, torch
from transformers import AutoModelForVision2Seq, AutoProcessor
src = "../shared/models/tiny-smolvlm-b512"
VARIANTS = [
    ({"type": "dynamic", "factor": 4.0}, 16),
    ({"rope_type": "linear", "factor": 4.0}, None),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}, None),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
      "attention_factor": 1.5}, None),
]
snaps = [(None, src)]
for rs, positions in VARIANTS:
    dst = tempfile.mkdtemp() + "/snap"
    shutil.copytree(src, dst)
    c = json.load(open(dst + "/config.json"))
    c["text_config"]["rope_scaling"] = rs
    if positions is not None:
        c["text_config"]["max_position_embeddings"] = positions
    json.dump(c, open(dst + "/config.json", "w"), indent=2)
    snaps.append((rs, dst))
runs = []
for rs, d in snaps:
    proc = AutoProcessor.from_pretrained(d)
    m = AutoModelForVision2Seq.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                    add_generation_prompt=True)
    ids = proc(text=chat, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = m(input_ids=ids).logits[0, -1]
        out = m.generate(input_ids=ids, max_new_tokens=7, min_new_tokens=7, do_sample=False)
    runs.append((first, out[0, ids.shape[1]:].tolist()))
    print(rs, ids.shape[1], "ids", runs[-1][1])
    print("  max abs logit difference from plain", (runs[0][0] - first).abs().max().item(),
          "top logit", first.max().item(), "at", first.argmax().item())
