#!/usr/bin/env python3
"""Tops a benchmark's page list up to N distinct page images.

    pages_fill.py LIST N OUT_DIR

LIST holds one page image path a line. When it names fewer than N images, mirror images of its
pages (left-right, then top-bottom, then both) are written into OUT_DIR as PNG and appended, so
that a batch of N pages holds no page twice: docqa encodes identical tiles once and transformers
every time, so repeated pages would flatter docqa. A mirrored page has its original's size and
tile grid, so the work a page takes is unchanged. Prints how many pages were added.
"""
import os
import sys


def main() -> int:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) != 4 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    list_path, want, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from PIL import Image, ImageOps  # after the usage check: --help needs no Pillow
    with open(list_path) as f:
        pages = [line.strip() for line in f if line.strip()]
    if not pages:
        print(f"pages_fill: {list_path} lists no pages", file=sys.stderr)
        return 2
    flips = [("lr", ImageOps.mirror), ("tb", ImageOps.flip),
             ("rot", lambda im: im.transpose(Image.Transpose.ROTATE_180))]
    added = []
    for tag, flip in flips:
        for src in pages:
            if len(pages) + len(added) >= want:
                break
            dst = os.path.join(out_dir, f"{tag}-{len(added):03d}-{os.path.basename(src)}")
            dst = os.path.splitext(dst)[0] + ".png"
            with Image.open(src) as im:
                flip(im).save(dst)
            added.append(dst)
    with open(list_path, "a") as f:
        for p in added:
            f.write(p + "\n")
    print(f"pages_fill: {len(pages)} pages listed, {len(added)} mirrored copies added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
