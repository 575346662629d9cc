# Prints the goldens of test_generator.c's /generator/activations (run from the repository root
# with transformers 4.57.6 and torch, float32, eager attention): tiny-smolvlm-b512 with
# text_config.hidden_act "gelu" (erf) and "gelu_pytorch_tanh" in LlamaMLP (session 33), and the
# other parameter-free ACT2CLS activations (session 34); for each, the greedy ids for "hi" (7
# new), the top 3 logits of the last prompt position and the largest difference from the SiLU
# model there.
import json, shutil, tempfile, torch
from transformers import AutoModelForVision2Seq, AutoProcessor
src = "../shared/models/tiny-smolvlm-b512"


def run(d):
    proc = AutoProcessor.from_pretrained(d)
    m = AutoModelForVision2Seq.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                    add_generation_prompt=True)
    ids = proc(text=chat, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = m(input_ids=ids).logits[0, -1]
        out = m.generate(input_ids=ids, max_new_tokens=7, min_new_tokens=7, do_sample=False)
    return first, out[0, ids.shape[1]:].tolist()


plain, _ = run(src)
for act in ("gelu", "gelu_pytorch_tanh", "gelu_10", "gelu_accurate", "quick_gelu", "relu", "relu6", "relu2",
            "leaky_relu", "sigmoid", "tanh", "mish", "laplace", "linear"):
    dst = tempfile.mkdtemp() + "/snap"
    shutil.copytree(src, dst)
    c = json.load(open(dst + "/config.json"))
    c["text_config"]["hidden_act"] = act
    json.dump(c, open(dst + "/config.json", "w"), indent=2)
    first, ids = run(dst)
    top = torch.topk(first, 3)
    print(act, "ids", ids, "top logits",
          ", ".join("%.9g at %d" % (v, i) for v, i in zip(top.values.tolist(), top.indices.tolist())),
          "max abs difference from silu", (first - plain).abs().max().item())
