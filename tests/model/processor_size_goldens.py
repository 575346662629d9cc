# Prints the goldens of test_image_processor.c's /image_processor/size_goldens (run with
# transformers 4.57.6 and Pillow 12.3.0; numpy outputs, no torch needed). Sizes from the
# differential test against transformers (session 31): tile multiples and one off them,
# float-truncation traps and extreme aspect ratios, both tile geometries, split mode, N = 4.
# Input pattern: byte (x*7 + y*13 + c*101 + (x*y) % 17) & 255. The hash covers every tile's
# uint8 HWC bytes, in feed order (global tile last), as recovered from pixel_values.
import hashlib, numpy as np
from PIL import Image
from transformers import Idefics3ImageProcessor
cases = [(511, 513, 512), (513, 512, 512), (2561, 2560, 512), (2048, 211, 512), (5000, 2, 512),
         (2, 5000, 384), (385, 1537, 384), (1537, 1536, 384), (383, 384, 384), (1, 101, 384)]
for w, h, t in cases:
    ip = Idefics3ImageProcessor(size={"longest_edge": 4 * t}, max_image_size={"longest_edge": t},
                                resample=Image.LANCZOS, do_image_splitting=True)
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    a = ((x * 7 + y * 13 + c * 101 + (x * y) % 17) & 255).astype(np.uint8)
    o = ip(images=[[Image.fromarray(a, "RGB")]], return_tensors="np", return_row_col_info=True)
    pv = o["pixel_values"][0]
    u8 = np.rint((pv.astype(np.float64) * 0.5 + 0.5) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    print(f"{{{w}, {h}, {t}, {o['rows'][0][0]}, {o['cols'][0][0]}, {pv.shape[0]}, "
          f"\"{hashlib.sha256(u8.tobytes()).hexdigest()}\"}},")
