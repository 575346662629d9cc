#!/usr/bin/env python3
"""Writes the example documents of the demo (examples/docs/): small hand-made PDFs with text,
rules and a table. Standard library only; the committed files were made with it."""
import sys


def pdf(pages, path):
    """pages: list of (width_pt, height_pt, content_stream_text)."""
    objs = []  # 1-based object bodies

    def add(body):
        objs.append(body)
        return len(objs)

    font = add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    bold = add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>")
    pages_id = len(objs) + 1 + 2 * len(pages)
    kids = []
    for w, h, content in pages:
        data = content.encode("latin-1")
        c = add(f"<< /Length {len(data)} >>\nstream\n{content}\nendstream")
        kids.append(add(f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {w} {h}] "
                        f"/Resources << /Font << /F1 {font} 0 R /F2 {bold} 0 R >> >> "
                        f"/Contents {c} 0 R >>"))
    assert add("<< /Type /Pages /Kids [" + " ".join(f"{k} 0 R" for k in kids) +
               f"] /Count {len(kids)} >>") == pages_id
    catalog = add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for o in offsets:
        out += f"{o:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    with open(path, "wb") as f:
        f.write(out)


def text(x, y, s, size=11, f="F1"):
    return f"BT /{f} {size} Tf {x} {y} Td ({s}) Tj ET\n"


def invoice():
    c = text(72, 720, "ACME Office Supplies Ltd.", 18, "F2")
    c += text(72, 700, "12 Harbour Road, Portsmouth PO1 3AX")
    c += text(400, 720, "INVOICE", 18, "F2")
    c += text(400, 700, "Invoice no: 2024-0173")
    c += text(400, 685, "Date: 14 March 2024")
    c += "0.5 w 72 660 m 540 660 l S\n"
    rows = [("Item", "Qty", "Unit price", "Amount"), ("Copy paper A4, 500 sheets", "10", "4.20", "42.00"),
            ("Ballpoint pens, blue (box)", "3", "6.50", "19.50"), ("Stapler, heavy duty", "1", "23.90", "23.90")]
    y = 630
    for i, (a, b, cc, d) in enumerate(rows):
        f = "F2" if i == 0 else "F1"
        c += text(80, y, a, 11, f) + text(330, y, b, 11, f) + text(380, y, cc, 11, f) + text(470, y, d, 11, f)
        c += f"0.3 w 72 {y - 8} m 540 {y - 8} l S\n"
        y -= 24
    c += "0.3 w 72 654 m 72 {0} l S 320 654 m 320 {0} l S 370 654 m 370 {0} l S 460 654 m 460 {0} l S 540 654 m 540 {0} l S\n".format(y + 16)
    c += text(380, y - 10, "Total due:", 12, "F2") + text(470, y - 10, "85.40 GBP", 12, "F2")
    c += text(72, 120, "Payment within 30 days. Thank you for your business.", 10)
    return [(612, 792, c)]


def letter():
    p1 = text(72, 720, "Northfield Borough Council", 16, "F2")
    p1 += text(72, 690, "Ref: PL/2023/0418") + text(72, 675, "Date: 2 October 2023")
    lines = ["Dear Ms Okafor,", "", "Planning application for a rear extension at 7 Elm Close",
             "", "We have reviewed your application and are pleased to confirm that",
             "permission has been granted, subject to the conditions on page 2.",
             "Work must begin within three years of the date of this letter."]
    y = 640
    for s in lines:
        p1 += text(72, y, s)
        y -= 16
    p2 = text(72, 720, "Conditions", 14, "F2")
    for i, s in enumerate(["1. The extension must not exceed 4.0 metres in depth.",
                           "2. Materials must match the existing house.",
                           "3. No windows on the east side elevation."]):
        p2 += text(72, 690 - 18 * i, s)
    p2 += text(72, 600, "Yours sincerely,") + text(72, 560, "J. Hartley, Planning Officer")
    return [(612, 792, p1), (612, 792, p2)]


def receipt_landscape():
    c = text(60, 540, "Riverside Cafe - Receipt", 16, "F2")
    items = [("Flat white", "3.10"), ("Croissant", "2.40"), ("Orange juice", "2.95")]
    y = 500
    for a, b in items:
        c += text(60, y, a) + text(300, y, b)
        y -= 18
    c += text(60, y - 10, "Total", 12, "F2") + text(300, y - 10, "8.45", 12, "F2")
    c += text(60, 80, "Table 12 - 09:41 - 21/05/2024", 10)
    return [(792, 612, c)]


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "docs"
    pdf(invoice(), f"{out}/invoice.pdf")
    pdf(letter(), f"{out}/letter.pdf")
    pdf(receipt_landscape(), f"{out}/receipt.pdf")
