"""The seeds of fuzz_exif (tests/fuzz/seeds/exif: its 4-byte header, then EXIF and/or XMP) and
the image_decode seeds that carry orientation metadata the others lack (eXIf after IDAT, eXIf
with an Exif prefix, ImageMagick's "Raw profile type exif", XMP in a JPEG, two APP1 Exif
segments, two XMP packets, an empty eXIf beside a raw profile, a palette PNG without IEND).
Every orientation in them is one of Pillow 12's readings.

    /tmp/docqa-bench-venv/bin/python tests/fuzz/make_exif_seeds.py [tests/fuzz/seeds]
"""
import io, os, struct, zlib, sys
from PIL import Image
from PIL.PngImagePlugin import PngInfo

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds")
ex = os.path.join(root, "exif"); os.makedirs(ex, exist_ok=True)
idd = os.path.join(root, "image_decode")

def tiff(entries, magic=b"MM\0*", prefix=b""):
    big = magic[:2] == b"MM"
    e = ">" if big else "<"
    n = len(entries)
    data_at = 8 + 2 + 12 * n + 4
    head = bytearray(magic + struct.pack(e + "I", 8) + struct.pack(e + "H", n))
    tail = bytearray()
    for tag, typ, count, value in entries:
        head += struct.pack(e + "HHI", tag, typ, count)
        if len(value) <= 4:
            head += value.ljust(4, b"\0")
        else:
            head += struct.pack(e + "I", data_at + len(tail))
            tail += value
    head += b"\0\0\0\0"
    return prefix + bytes(head + tail)

def seed(name, flags, w, h, exif=b"", xmp=b"", split=None):
    body = exif + xmp
    if split is None:
        split = 255 if not xmp else (len(exif) * 255 + len(body) - 1) // len(body) if body else 0
    hdr = bytes([flags, w - 1, h - 1, split])
    open(os.path.join(ex, name), "wb").write(hdr + body)

B, L = ">", "<"
def S(v, e=B): return struct.pack(e + "H", v)
def I(v, e=B): return struct.pack(e + "I", v)
cases = {
    "short6_mm": tiff([(274, 3, 1, S(6))]),
    "short8_ii": tiff([(274, 3, 1, S(8, L))], b"II*\0"),
    "short3_swapped_mm": tiff([(274, 3, 1, S(3))], b"MM*\0"),
    "long5_ii_exifprefix": tiff([(274, 4, 1, I(5, L))], b"II*\0", b"Exif\0\0"),
    "sshort7": tiff([(274, 8, 1, S(7))]),
    "slong2": tiff([(274, 9, 1, I(2))]),
    "sbyte4": tiff([(274, 6, 1, b"\4")]),
    "byte6": tiff([(274, 1, 1, b"\6")]),
    "ascii6": tiff([(274, 2, 2, b"6\0")]),
    "rational12_2": tiff([(274, 5, 1, I(12) + I(2))]),
    "srational_neg": tiff([(274, 10, 1, I(0xFFFFFFF4) + I(0xFFFFFFFE))]),
    "float6": tiff([(274, 11, 1, struct.pack(">f", 6.0))]),
    "double7_ii": tiff([(274, 12, 1, struct.pack("<d", 7.0))], b"II*\0"),
    "long8_3": tiff([(274, 16, 1, struct.pack(">Q", 3))]),
    "ifd_type6": tiff([(274, 13, 1, I(6))]),
    "short_x3": tiff([(274, 3, 3, S(8) + S(1) + S(1))]),
    "two_entries": tiff([(256, 4, 1, I(100)), (274, 3, 1, S(3)), (274, 3, 1, S(6))]),
    "count0": tiff([(274, 3, 0, b"")]),
}
for name, blob in cases.items():
    seed(name, 1, 7, 5, blob)
xmp_attr = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
xmp_elem = b"<x:xmpmeta><tiff:Orientation>8</tiff:Orientation></x:xmpmeta>"
seed("xmp_attr6", 2, 70, 65, xmp=xmp_attr)
seed("xmp_elem8", 2, 3, 130, xmp=xmp_elem)
seed("exif_count0_xmp", 3, 5, 4, cases["count0"], xmp_attr)
seed("exif_short3_xmp", 3, 130, 66, cases["short_x3"], xmp_elem)

# ---- image_decode seeds that carry metadata the existing ones do not ----
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
def png_with(after_idat=(), before_idat=()):
    im = Image.new("RGB", (3, 2), (10, 200, 30))
    im.putpixel((0, 0), (255, 0, 0))
    b = io.BytesIO(); im.save(b, "PNG"); raw = b.getvalue()
    out, pos = raw[:8], 8
    while pos < len(raw):
        n = struct.unpack(">I", raw[pos:pos + 4])[0]; t = raw[pos + 4:pos + 8]
        c = raw[pos:pos + 12 + n]; pos += 12 + n
        if t == b"IDAT": out += b"".join(before_idat)
        out += c if t != b"IEND" else b"".join(after_idat) + c
    return out
exif6 = tiff([(274, 3, 1, S(6))])
open(os.path.join(idd, "rgb8_exif_after_idat.png"), "wb").write(
    png_with(after_idat=[chunk(b"eXIf", tiff([(274, 3, 1, S(8, L))], b"II*\0"))],
             before_idat=[chunk(b"eXIf", exif6)]))
open(os.path.join(idd, "rgb8_exif_prefixed_rational.png"), "wb").write(
    png_with(before_idat=[chunk(b"eXIf", tiff([(274, 5, 1, I(12) + I(2))], prefix=b"Exif\0\0"))]))
hexs = exif6.hex()
raw_profile = "\nexif\n%8d\n%s\n" % (len(exif6), "\n".join(hexs[i:i + 72] for i in range(0, len(hexs), 72)))
open(os.path.join(idd, "rgb8_raw_profile_exif.png"), "wb").write(
    png_with(before_idat=[chunk(b"tEXt", b"Raw profile type exif\0" + raw_profile.encode())]))
im = Image.new("RGB", (16, 8), (0, 0, 255)); im.putpixel((0, 0), (255, 0, 0))
b = io.BytesIO(); im.save(b, "JPEG", quality=50, xmp=xmp_elem); open(os.path.join(idd, "rgb_xmp8.jpg"), "wb").write(b.getvalue())
# Two APP1 Exif segments (extended EXIF: Pillow appends the second without its header).
b = io.BytesIO(); im.save(b, "JPEG", quality=50, exif=b"Exif\0\0" + tiff([(274, 4, 1, I(5))]))
j = b.getvalue(); seg = b"Exif\0\0" + b"\0" * 8
open(os.path.join(idd, "rgb_exif_two_app1.jpg"), "wb").write(j[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + j[2:])
# Of several XMP packets or raw profiles the last counts; an empty eXIf replaces a raw profile.
itxt = lambda x: chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + x)
open(os.path.join(idd, "rgb8_two_xmp.png"), "wb").write(png_with(before_idat=[itxt(xmp_attr), itxt(xmp_elem)]))
open(os.path.join(idd, "rgb8_empty_exif_raw_profile.png"), "wb").write(
    png_with(before_idat=[chunk(b"tEXt", b"Raw profile type exif\0" + raw_profile.encode())],
             after_idat=[chunk(b"eXIf", b"")]))
# 8-bit palette, the file cut after IDAT (no IEND: the decoder keeps the pixels, as Pillow).
im = Image.new("P", (5, 3)); im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9] * 759)
for x in range(5): im.putpixel((x, 1), x % 3)
b = io.BytesIO(); im.save(b, "PNG"); raw = b.getvalue()
open(os.path.join(idd, "palette8_no_iend.png"), "wb").write(raw[:raw.index(b"IEND") - 4])
