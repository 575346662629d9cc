# Prints the goldens of test_generator.c's /generator/biases (run from the repository root with
# transformers 4.57.6, torch and safetensors, float32, eager attention): tiny-smolvlm-b512 with
# text_config.attention_bias and mlp_bias true and biases appended as the test appends them
# (snapshot_with_biases: entry i of bias k of layer l is ((37 i + 11 l + 5 k) % 41 - 20) / 100,
# k = 0..6 for q, k, v, o, gate, up and down_proj), then only attention_bias, then only mlp_bias;
# for each, the greedy ids for "hi" (7 new), the top 3 logits of the last prompt position and the
# largest difference from the model without biases there.
import json, shutil, tempfile, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForVision2Seq, AutoProcessor
src = "../shared/models/tiny-smolvlm-b512"
NAMES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def snapshot(attn, mlp):
    dst = tempfile.mkdtemp() + "/snap"
    shutil.copytree(src, dst)
    c = json.load(open(dst + "/config.json"))
    c["text_config"]["attention_bias"] = attn
    c["text_config"]["mlp_bias"] = mlp
    json.dump(c, open(dst + "/config.json", "w"), indent=2)
    sd = load_file(dst + "/model.safetensors")
    for l in range(c["text_config"]["num_hidden_layers"]):
        for k, name in enumerate(NAMES):
            if (k < 4 and not attn) or (k >= 4 and not mlp):
                continue
            rows = sd["model.text_model.layers.%d.%s.weight" % (l, name)].shape[0]
            sd["model.text_model.layers.%d.%s.bias" % (l, name)] = torch.tensor(
                [((37 * i + 11 * l + 5 * k) % 41 - 20) / 100 for i in range(rows)], dtype=torch.float32)
    save_file(sd, dst + "/model.safetensors", metadata={"format": "pt"})
    return dst


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
for attn, mlp in ((True, True), (True, False), (False, True)):
    first, ids = run(snapshot(attn, mlp))
    top = torch.topk(first, 3)
    print("attention_bias", attn, "mlp_bias", mlp, "ids", ids, "top logits",
          ", ".join("%.9g at %d" % (v, i) for v, i in zip(top.values.tolist(), top.indices.tolist())),
          "max abs difference from no biases", (first - plain).abs().max().item())
