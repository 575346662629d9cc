#!/usr/bin/env python3
"""A one-page PDF written byte by byte, for the sweeps and the soak (no PDF library needed)."""


def one_page_pdf(text, x, y):
    """A 400 x 300 pt page with `text` (no parentheses or backslashes) in 18 pt Helvetica at
    (x, y): each text or place renders to a page image of its own."""
    stream = ("BT /F1 18 Tf %d %d Td (%s) Tj ET" % (x, y, text)).encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 300] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser(
        prog="pdf_fixture.py",
        description="Write a one-page PDF with one line of text (a test document; the sweeps and "
        "the soak import one_page_pdf from here).")
    ap.add_argument("text", help="the line (no parentheses or backslashes)")
    ap.add_argument("out", help="the PDF file to write")
    ap.add_argument("--x", type=int, default=20, help="points from the left (default 20)")
    ap.add_argument("--y", type=int, default=150, help="points from the bottom (default 150)")
    a = ap.parse_args()
    if any(c in a.text for c in "()\\"):
        ap.error("the text may not hold parentheses or backslashes")
    with open(a.out, "wb") as f:
        f.write(one_page_pdf(a.text, a.x, a.y))


if __name__ == "__main__":
    main()
