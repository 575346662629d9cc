#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_corpus.json: token ids from the Hugging Face `tokenizers`
library (the reference) for a few hundred strings, for both SmolVLM tokenizer.json files.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.22.2
    /tmp/tokvenv/bin/python scripts/make-tokenizer-corpus.py [--shared ../shared]

The strings are fixed lists plus a seeded random generator, so the output is reproducible.
`invalid_utf8` entries hold raw bytes (hex) that Python cannot even pass to the tokenizer: the
ids are those of `bytes.decode("utf-8", "replace")`, which is what docqa's tokenizer_encode
documents for invalid input (every maximal invalid subsequence becomes one U+FFFD).
`decode_cases` are id lists (special ids, split multi-byte characters) with HF's decode.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

TOKENIZERS = {
    "SmolVLM-256M-Instruct": "models/SmolVLM-256M-Instruct/tokenizer.json",
    "tiny-smolvlm-a384-v1tok": "models/tiny-smolvlm-a384-v1tok/tokenizer.json",
}

FIXED = [
    "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\n", "\n\n", "\n\n\n", "a\n\nb",
    "\t", "\ttab\tseparated\t", "line1\r\nline2\r\n", "\r", " \n \n ", "end with space ",
    "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life; they've said we'd go, I'm sure you'll see. DON'T SHOUT'S",
    "Invoice No. 12345, dated 2023-07-14, total $1,234.56 (incl. 19% VAT).",
    "0", "00", "0123456789", "3.14159", "1e-10", "+49 (0)30 1234-5678", "1st 2nd 3rd 4th",
    "version 1.2.3-rc4", "x²+y³=z⁴", "½ ¼ ¾", "Ⅻ Ⅳ ⅷ", "٣٤٥ ١٢٣", "०१२३", "０１２３", "①②③",
    "!!!", "...", "?!", "—–-", "«quotes» „German“ “curly” ‘single’", "(a)[b]{c}<d>",
    "@#$%^&*_+=|\\/~`", "a,b;c:d", "'s 's 'S 'll 'LL 'd 've 're 'm 't",
    "café", "cafe\u0301", "naïve résumé façade", "Ångström", "ÆØÅ æøå ß ẞ", "ﬁnance ﬂow",
    unicodedata.normalize("NFD", "Ça va? À bientôt, Élodie!"),
    unicodedata.normalize("NFC", "Ça va? À bientôt, Élodie!"),
    "Γειά σου κόσμε", "Привет, мир! Ёжик.", "你好，世界。", "日本語のテキストです。", "한국어 텍스트입니다",
    "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "שלום עולם", "Xin chào thế giới",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇫🇷🇯🇵", "📊🙂 日本", "a😀b", "❤️", "#️⃣", "🧑🏿‍🚀",
    "def f(x):\n    return x ** 2  # square\n", "int main(void) {\n\treturn 0;\n}\n",
    "for (i = 0; i < n; ++i) a[i] += b[i];", "SELECT * FROM pages WHERE id = 42;",
    '{"key": [1, 2, 3], "nested": {"a": null}}', "<html><body><p>Hi</p></body></html>",
    "https://example.com/path?query=1&x=y#frag", "mailto:someone@example.org",
    "C:\\Users\\docs\\file.pdf", "/usr/local/bin/docqa --n-res 5",
    "<image>", "<image><image>", "a<image>b", "<fake_token_around_image>", "<end_of_utterance>",
    "<|im_start|>User: hi<end_of_utterance>\nAssistant:", "<|im_end|>", "<|endoftext|>",
    "<global-img>", "<row_1_col_1>", "<row_6_col_6>", "<row_7_col_7>", "<row_1_col_1><image>",
    "<image >", "< image>", "<Image>", "<image", "image>", "<<image>>", "<im<image>age>",
    "<|im_start|", "<end_of_utterance", "<fake_token_around_image><global-img><image>",
    "<|reserved_special_token_3|>", "<|reserved_special_token_87|>x", "<row_1_col_1 >",
    "\u00a0nbsp\u00a0", "ideo\u3000space", "line\u2028sep", "nel\u0085x", "mongol\u180evs",
    "zero\u200bwidth", "bom\ufeffx", "soft\u00adhyphen", "\x01\x02\x7f",
    "tab\t\t\tand  spaces \t mixed", "    \n    indented", "trailing\n   ", "x \n",
]

PROSE = (
    "Please answer the question using the document. Question: What is the date on the receipt? "
    "The meeting was held on March 3rd, 2021 at 10:30 a.m. in room B-204. Attendees: 12. "
    "Die Rechnung enthält 3 Positionen zu je 9,99 €. La facture est payée. "
    "Le 14 juillet 1789, la Bastille fut prise. El niño comió 25 manzanas."
)

POOLS = [
    [chr(c) for c in range(0x20, 0x7F)],
    [chr(c) for c in range(0xA0, 0x180)],
    [chr(c) for c in range(0x300, 0x370)],
    [chr(c) for c in range(0x391, 0x3CA)] + [chr(c) for c in range(0x410, 0x450)],
    [chr(c) for c in range(0x4E00, 0x4E80)] + [chr(c) for c in range(0x3040, 0x30A0)],
    [chr(c) for c in range(0xAC00, 0xAC40)] + [chr(c) for c in range(0x600, 0x660)],
    [chr(c) for c in range(0x900, 0x970)] + [chr(c) for c in range(0xE01, 0xE3A)],
    [chr(c) for c in range(0x1F600, 0x1F650)] + ["\u200d", "\ufe0f", "\U0001F3FB"],
    list(" \t\n\r\u00a0\u3000\u2028\u0085\u180e\u2009") + list("0123456789٣٤०१０²½Ⅻ①"),
    ["<image>", "<row_1_col_2>", "<global-img>", "<end_of_utterance>", "<", ">", "'s", "'ll"],
]


def random_strings(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        pools = rng.sample(POOLS, rng.randint(1, 4))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(k)))
    return out


INVALID = [
    b"\xff", b"abc\xffdef", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80",
    b"\x80\x80\x80", b"a\xfe\xfeb", b"caf\xe9 cr\xe8me", b"<image>\xff<image>", b"12\xff34",
    b"\xf8\x88\x80\x80\x80", b"\xc3\xa9\xc3", b"  \xa0 ",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures",
                                                  "tokenizer_corpus.json"))
    args = ap.parse_args()
    import tokenizers  # after the arguments: --help needs no tokenizers
    from tokenizers import Tokenizer

    toks = {name: Tokenizer.from_file(os.path.join(args.shared, rel))
            for name, rel in TOKENIZERS.items()}

    rng = random.Random(20240611)
    texts = list(FIXED)
    words = PROSE.split(" ")
    for i in range(40):
        a = rng.randrange(len(words))
        texts.append(" ".join(words[a:a + rng.randint(1, 25)]))
    texts += random_strings(rng, 260)
    seen = set()
    texts = [t for t in texts if not (t in seen or seen.add(t))]

    def ids_of(s):
        return {name: t.encode(s).ids for name, t in toks.items()}

    cases = [{"text": t, "ids": ids_of(t)} for t in texts]
    invalid = []
    for b in INVALID:
        r = b.decode("utf-8", "replace")
        invalid.append({"hex": b.hex(), "replaced": r, "ids": ids_of(r)})

    decode_cases = []
    for name, t in toks.items():
        n = t.get_vocab_size(with_added_tokens=True)
        lists = [[0, 1, 2], [10813, 237, 228], [237, 228], [228], [49153, 49154, 1]]
        for _ in range(30):
            lists.append([rng.randrange(n) for _ in range(rng.randint(1, 8))])
        for ids in lists:
            decode_cases.append({"tokenizer": name, "ids": ids,
                                 "decode": t.decode(ids, skip_special_tokens=False),
                                 "decode_skip_special": t.decode(ids, skip_special_tokens=True)})

    doc = {
        "description": "HF tokenizers ids for the docqa tokenizer corpus (scripts/make-tokenizer-corpus.py)",
        "tokenizers_version": tokenizers.__version__,
        "python": sys.version.split()[0],
        "tokenizers": TOKENIZERS,
        "cases": cases,
        "invalid_utf8": invalid,
        "decode_cases": decode_cases,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{args.out}: {len(cases)} strings, {len(invalid)} invalid, "
          f"{len(decode_cases)} decode lists, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
