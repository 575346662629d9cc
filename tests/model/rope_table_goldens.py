# Prints the goldens of test_config.c's /config/rope-tables: LlamaRotaryEmbedding's inv_freq and
# attention_scaling (transformers 4.57.6, torch, CPU) for each rope_scaling case below, as the
# float32 bits of every entry. Run with transformers installed: python3 rope_table_goldens.py
import sys
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

CASES = [
    # name, head_dim, rope_theta, max_position_embeddings, rope_scaling
    ("default", 64, 100000.0, 8192, None),
    ("linear", 64, 100000.0, 8192, {"rope_type": "linear", "factor": 2.0}),
    ("linear-legacy", 16, 10000.0, 2048, {"type": "linear", "factor": 3.5}),
    ("llama3", 64, 500000.0, 131072, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}),
    ("llama3-small", 16, 100000.0, 8192, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 64}),
    ("yarn", 64, 100000.0, 8192, {"rope_type": "yarn", "factor": 4.0}),
    ("yarn-full", 64, 10000.0, 32768, {"rope_type": "yarn", "factor": 4.0, "beta_fast": 16.0,
                                        "beta_slow": 2.0, "original_max_position_embeddings": 8192,
                                        "truncate": False, "mscale": 1.0, "mscale_all_dim": 0.5}),
    ("yarn-af", 16, 100000.0, 8192, {"rope_type": "yarn", "factor": 2.0, "attention_factor": 0.75}),
    ("yarn-clamped", 16, 3.0, 64, {"rope_type": "yarn", "factor": 2.0}),
    ("yarn-empty-range", 16, 10000.0, 6, {"rope_type": "yarn", "factor": 2.0}),
]

for name, hd, theta, maxpos, rs in CASES:
    cfg = LlamaConfig(hidden_size=hd * 4, num_attention_heads=4, head_dim=hd, rope_theta=theta,
                      max_position_embeddings=maxpos, rope_scaling=rs)
    emb = LlamaRotaryEmbedding(cfg)
    bits = emb.inv_freq.float().view(torch.int32).tolist()
    factor = torch.tensor(float(emb.attention_scaling), dtype=torch.float32).view(torch.int32).item()
    print("%s %d %s" % (name, len(bits), " ".join("%08x" % (b & 0xffffffff) for b in [factor] + bits)))
