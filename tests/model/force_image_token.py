#!/usr/bin/env python3
"""The golden of test_generator's /generator/generated-image-token: transformers' greedy tokens
when the model is made to generate <image> as its second new token.

transformers 4.57.6 merges image features only into a call that comes with pixel values (the
prompt); at a decode step a generated <image> id is embedded by embed_tokens like any token, and
generation goes on. Run in a virtualenv with transformers 4.57.6, torch and Pillow (the one
scripts/bench-model.sh makes will do):

    /tmp/docqa-bench-venv/bin/python tests/model/force_image_token.py [../shared]

prints the six new token ids the test expects (tiny-smolvlm-b512, portrait_page.png,
"What is the title?", float32): [28802, 49190, 25105, 16035, 20247, 28802].
"""
import sys

import torch
from PIL import Image
from transformers import (AutoModelForVision2Seq, AutoProcessor, LogitsProcessor,
                          LogitsProcessorList)

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
snap = f"{shared}/models/tiny-smolvlm-b512"
proc = AutoProcessor.from_pretrained(snap)
model = AutoModelForVision2Seq.from_pretrained(snap, dtype=torch.float32).eval()
image = Image.open(f"{shared}/fixtures/images/portrait_page.png").convert("RGB")
messages = [{"role": "user",
             "content": [{"type": "image"}, {"type": "text", "text": "What is the title?"}]}]
prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
inputs = proc(text=prompt, images=[image], return_tensors="pt")
n_prompt = inputs["input_ids"].shape[1]
image_id = model.config.image_token_id


class SecondTokenIsImage(LogitsProcessor):
    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == n_prompt + 1:
            scores[:] = float("-inf")
            scores[:, image_id] = 0
        return scores


with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False,
                         logits_processor=LogitsProcessorList([SecondTokenIsImage()]))
print(out[0, n_prompt:].tolist())
