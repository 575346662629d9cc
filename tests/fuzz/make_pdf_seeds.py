"""Small PDFs for fuzz_pdf_page: one page each, with the page geometry docqa's code around poppler
handles (MediaBox and CropBox, /Rotate, /UserUnit, extreme and degenerate sizes), a drawn rectangle
and no font (so that fontconfig is not loaded), and a valid xref so that poppler does not rebuild.

    python3 tests/fuzz/make_pdf_seeds.py [tests/fuzz/seeds/pdf_page]
"""
import os, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds", "pdf_page")


def pdf(name, page_extra, pages=1):
    content = b"0 0 1 rg 10 10 50 30 re f"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (4 + i) for i in range(pages)) +
            b"] /Count %d >>" % pages,
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    for _ in range(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /Contents 3 0 R " + page_extra + b" >>")
    body = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    body += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    with open(os.path.join(out, name), "wb") as f:
        f.write(body)


os.makedirs(out, exist_ok=True)
pdf("letter.pdf", b"/MediaBox [0 0 612 792]")
pdf("rotate90-cropbox.pdf", b"/MediaBox [0 0 612 792] /CropBox [100 100 300 200] /Rotate 90")
pdf("userunit.pdf", b"/MediaBox [0 0 200 100] /UserUnit 75000 /Rotate 270")
pdf("sliver.pdf", b"/MediaBox [0 0 0.001 14400]")
pdf("huge.pdf", b"/MediaBox [-1e30 0 1e30 1]")
pdf("empty-box.pdf", b"/MediaBox [5 5 5 5]")
pdf("three-pages.pdf", b"/MediaBox [0 0 72 72] /Rotate -90", pages=3)
