"""Small uncompressed TIFFs for fuzz_tiff_page in the layouts render_tiff.c's own put routines
handle (the corpus seeds reach none of them): 8-bit CMYK contiguous and planar, 16-bit samples
(RGBA planar with associated alpha, signed MinIsWhite gray with alpha), a palette with alpha,
gray with an unspecified extra sample, RGB without ExtraSamples; some with Orientation 5-8.

    python3 tests/fuzz/make_tiff_seeds.py [tests/fuzz/seeds/tiff_page]
"""
import os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds", "tiff_page")


def tiff(name, w, h, photometric, spp, bps, planar=1, extra=None, sformat=1, orientation=1,
         colormap=False, big=False):
    e = ">" if big else "<"
    nb = bps // 8
    fmt = {1: "B", 2: "H"}[nb]
    # Sample s of pixel (x, y): distinct ramps per channel, mid-range alpha.
    def sample(x, y, s):
        v = (x * 53 + y * 97 + s * 71) % 256
        if extra is not None and s == spp - 1:
            v = 128 + x * 20
        return v * 257 if nb == 2 else v
    if planar == 1:
        strips = [b"".join(struct.pack(e + fmt, sample(x, y, s))
                           for y in range(h) for x in range(w) for s in range(spp))]
    else:
        strips = [b"".join(struct.pack(e + fmt, sample(x, y, s)) for y in range(h) for x in range(w))
                  for s in range(spp)]
    entries = []  # (tag, type, values)
    entries += [(256, 3, [w]), (257, 3, [h]), (258, 3, [bps] * spp), (259, 3, [1]),
                (262, 3, [photometric])]
    entries += [(273, 4, None), (274, 3, [orientation]), (277, 3, [spp]), (278, 3, [h]),
                (279, 4, [len(s) for s in strips]), (284, 3, [planar])]
    if colormap:
        n = 1 << bps
        entries.append((320, 3, [(i * 37 % 256) * 257 for i in range(n)] +
                        [(i * 91 % 256) * 257 for i in range(n)] + [(255 - i % 256) * 257 for i in range(n)]))
    if extra is not None:
        entries.append((338, 3, [extra]))
    if sformat != 1:
        entries.append((339, 3, [sformat] * spp))
    if photometric == 5:
        entries.append((332, 3, [1]))  # InkSet CMYK
    entries.sort()
    ifd_at = 8
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = ifd_at + ifd_size
    blobs = b""
    strip_at = []
    pixel_blob_at = data_at
    pixels = b"".join(strips)
    pos = 0
    for s in strips:
        strip_at.append(pixel_blob_at + pos)
        pos += len(s)
    extra_at = pixel_blob_at + len(pixels)
    ifd = struct.pack(e + "H", len(entries))
    for tag, typ, vals in entries:
        if tag == 273:
            vals = strip_at
        size = {3: 2, 4: 4}[typ]
        packed = b"".join(struct.pack(e + ("H" if typ == 3 else "I"), v) for v in vals)
        if len(packed) <= 4:
            ifd += struct.pack(e + "HHI", tag, typ, len(vals)) + packed.ljust(4, b"\0")
        else:
            ifd += struct.pack(e + "HHII", tag, typ, len(vals), extra_at + len(blobs))
            blobs += packed
            if len(blobs) % 2:
                blobs += b"\0"
    ifd += b"\0\0\0\0"
    head = (b"MM\0*" if big else b"II*\0") + struct.pack(e + "I", ifd_at)
    with open(os.path.join(out, name), "wb") as f:
        f.write(head + ifd + pixels + blobs)


tiff("gen-cmyk8-contig.tif", 5, 3, 5, 4, 8)
tiff("gen-cmyk8-planar-orient6.tif", 5, 3, 5, 4, 8, planar=2, orientation=6, big=True)
tiff("gen-rgba16-planar-assoc.tif", 4, 3, 2, 4, 16, planar=2, extra=1)
tiff("gen-gray16-signed-miniswhite-alpha.tif", 4, 3, 0, 2, 16, extra=2, sformat=2, big=True)
tiff("gen-palette8-alpha-orient7.tif", 4, 3, 3, 2, 8, extra=2, colormap=True, orientation=7)
tiff("gen-gray8-unspecified-extra-orient8.tif", 5, 2, 1, 2, 8, extra=0, orientation=8)
tiff("gen-rgb8-planar-orient5.tif", 3, 4, 2, 3, 8, planar=2, orientation=5)
tiff("gen-rgb4samples8-no-extrasamples.tif", 4, 2, 2, 4, 8)
