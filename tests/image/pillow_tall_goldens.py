# Prints the goldens of test_image.c's /image/resize/tall_vertical_first (run with Pillow 12.3.0).
# Pillow 12.3.0 LANCZOS goldens for tall (> 100:1) shrinks, where Image.resize runs the vertical
# pass first. Input pattern: byte (x*7 + y*13 + c*101 + (x*y) % 17) & 255.
import hashlib, numpy as np
from PIL import Image
cases = [(20, 3000, 14, 2048), (6, 1000, 512, 512), (3, 4097, 2, 2048), (20, 2000, 14, 1400),
         (3000, 20, 2048, 14), (5, 900, 5, 300)]
for w, h, ow, oh in cases:
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    a = ((x * 7 + y * 13 + c * 101 + (x * y) % 17) & 255).astype(np.uint8)
    out = np.asarray(Image.fromarray(a, "RGB").resize((ow, oh), Image.LANCZOS))
    print(f"{{{w}, {h}, {ow}, {oh}, \"{hashlib.sha256(out.tobytes()).hexdigest()}\"}},")
