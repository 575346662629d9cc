#!/usr/bin/env python3
"""Writes the random weights of the bundled demo model: models/demo-tiny/model.safetensors.

The demo model has SmolVLM-256M's geometry (512 px tiles, patch 16, pixel shuffle 4, 64 tokens a
tile) and its real tokenizer, but tiny random bf16 weights (vision width 32, text width 64, two
layers each). It exists so that the whole pipeline runs on a fresh machine without downloading
anything. ITS ANSWERS ARE MEANINGLESS: random weights produce random tokens.

Standard library only (a fresh machine has python3 but no numpy). Deterministic: the same seed
gives the same bytes.

    scripts/make-demo-model.py [--model-dir models/demo-tiny] [--seed 20261125]
"""
import argparse
import json
import math
import os
import random
import struct
import sys


def tensor_specs(cfg):
    """(name, shape, kind) for every tensor of an Idefics3 checkpoint with this config."""
    v, t = cfg["vision_config"], cfg["text_config"]
    vd, vi, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    npos = (v["image_size"] // p) ** 2
    td, ti = t["hidden_size"], t["intermediate_size"]
    hd = t.get("head_dim", td // t["num_attention_heads"])
    kvd = t["num_key_value_heads"] * hd
    s = cfg.get("scale_factor", 2)
    out = [("model.connector.modality_projection.proj.weight", [td, vd * s * s], "linear"),
           ("model.text_model.embed_tokens.weight", [t["vocab_size"], td], "embed")]
    for i in range(t["num_hidden_layers"]):
        pre = f"model.text_model.layers.{i}."
        out += [(pre + "input_layernorm.weight", [td], "norm"),
                (pre + "post_attention_layernorm.weight", [td], "norm"),
                (pre + "self_attn.q_proj.weight", [t["num_attention_heads"] * hd, td], "linear"),
                (pre + "self_attn.k_proj.weight", [kvd, td], "linear"),
                (pre + "self_attn.v_proj.weight", [kvd, td], "linear"),
                (pre + "self_attn.o_proj.weight", [td, t["num_attention_heads"] * hd], "linear"),
                (pre + "mlp.gate_proj.weight", [ti, td], "linear"),
                (pre + "mlp.up_proj.weight", [ti, td], "linear"),
                (pre + "mlp.down_proj.weight", [td, ti], "linear")]
    out.append(("model.text_model.norm.weight", [td], "norm"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [t["vocab_size"], td], "linear"))
    ve = "model.vision_model.embeddings."
    out += [(ve + "patch_embedding.weight", [vd, 3, p, p], "linear"),
            (ve + "patch_embedding.bias", [vd], "bias"),
            (ve + "position_embedding.weight", [npos, vd], "embed")]
    for i in range(v["num_hidden_layers"]):
        pre = f"model.vision_model.encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            out += [(pre + ln + ".weight", [vd], "norm"), (pre + ln + ".bias", [vd], "bias")]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(pre + f"self_attn.{proj}.weight", [vd, vd], "linear"),
                    (pre + f"self_attn.{proj}.bias", [vd], "bias")]
        out += [(pre + "mlp.fc1.weight", [vi, vd], "linear"), (pre + "mlp.fc1.bias", [vi], "bias"),
                (pre + "mlp.fc2.weight", [vd, vi], "linear"), (pre + "mlp.fc2.bias", [vd], "bias")]
    out += [("model.vision_model.post_layernorm.weight", [vd], "norm"),
            ("model.vision_model.post_layernorm.bias", [vd], "bias")]
    return out


def bf16_bytes(values):
    # Round to nearest even, as torch does when casting float32 to bfloat16.
    f32 = struct.pack(f"<{len(values)}f", *values)
    words = struct.unpack(f"<{len(values)}I", f32)
    out = bytearray(2 * len(words))
    for i, w in enumerate(words):
        w = (w + 0x7FFF + ((w >> 16) & 1)) >> 16
        out[2 * i] = w & 0xFF
        out[2 * i + 1] = w >> 8
    return bytes(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=os.path.join(here, "..", "models", "demo-tiny"))
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()
    with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    rng = random.Random(args.seed)
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, kind in sorted(tensor_specs(cfg)):
        n = math.prod(shape)
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        if kind == "norm":
            vals = [1.0 + rng.gauss(0, 0.1) for _ in range(n)]
        elif kind == "bias":
            vals = [rng.gauss(0, 0.05) for _ in range(n)]
        elif kind == "embed":
            vals = [rng.gauss(0, 0.3) for _ in range(n)]
        else:
            std = 1.5 / math.sqrt(fan_in)
            vals = [rng.gauss(0, std) for _ in range(n)]
        blob = bf16_bytes(vals)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)  # keep the data 8-byte aligned
    out = os.path.join(args.model_dir, "model.safetensors")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, out)
    print(f"make-demo-model: wrote {out} ({offset / 1e6:.1f} MB of random bf16 weights; "
          "answers from this model are meaningless)", file=sys.stderr)


if __name__ == "__main__":
    main()
