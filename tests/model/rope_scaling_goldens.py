# Prints the goldens of test_generator.c's /generator/rope-scaling (run from the repository root
# with transformers 4.57.6 and torch, float32, eager attention): the greedy ids for "hi" of
# tiny-smolvlm-b512 as it is, and with text_config.rope_scaling {"type": "dynamic", "factor": 4}
# and max_position_embeddings 16 (the 9 prompt ids and 7 new ones fill all 16 positions), and the
# largest difference between their last-prompt-position logits. From the differential test of
# config variants against transformers (session 32).
import json, shutil, tempfile, torch
from transformers import AutoModelForVision2Seq, AutoProcessor
src = "../shared/models/tiny-smolvlm-b512"
dst = tempfile.mkdtemp() + "/snap"
shutil.copytree(src, dst)
c = json.load(open(dst + "/config.json"))
c["text_config"]["rope_scaling"] = {"type": "dynamic", "factor": 4.0}
c["text_config"]["max_position_embeddings"] = 16
json.dump(c, open(dst + "/config.json", "w"), indent=2)
runs = []
for d in (src, dst):
    proc = AutoProcessor.from_pretrained(d)
    m = AutoModelForVision2Seq.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                    add_generation_prompt=True)
    ids = proc(text=chat, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = m(input_ids=ids).logits[0, -1]
        out = m.generate(input_ids=ids, max_new_tokens=7, min_new_tokens=7, do_sample=False)
    runs.append((first, out[0, ids.shape[1]:].tolist()))
    print(d, ids.shape[1], "ids", runs[-1][1])
print("max abs logit difference", (runs[0][0] - runs[1][0]).abs().max().item())
