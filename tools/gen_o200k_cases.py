#!/usr/bin/env python3
"""gen_o200k_cases.py: write tests/data/o200k_cases.jsonl, strings built to stress the o200k
pre-tokenizer's backtracking (letters of every case class, marks before/after/between letters,
contractions including "'ſ", numbers, CR/LF and '/' tails, Unicode spaces), with the ids an
independent implementation gives: the o200k regex in Python's `regex` module (Debian
python3-regex) and tiktoken's byte-pair merge loop, written here, over Meta's Llama 4 rank file.

    python3 tools/gen_o200k_cases.py $GUARD_SHARED/fixtures_lg4/tokenizer/tokenizer.model > tests/data/o200k_cases.jsonl

Every character used is assigned with the same General_Category in Unicode 14 through 16, so the
ids do not depend on the regex module's Unicode version.
"""
import base64
import json
import random
import sys

import regex

PAT = regex.compile(
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
    r"""\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

ALPHABET = list("abcXYZ") + ["'", "'s", "'T", "'re", "'LL", "\u017f", "'\u017f"] + list("0123") + \
    [" ", "  ", "\t", "\n", "\r\n", "\r", "/", "!", "$", ".", ","] + \
    ["\u0300", "\u0301", "\u093f", "\u20dd", "\u02b0", "\u4e2d", "\u05d0", "\u01c5", "\u2160", "\u00bd", "\u3000",
     "\u00a0", "\U0001F600", "\u0905", "\u00e9", "\u00c9", "\u0130", "\u1f88", "\u0663", "\u200b", "\u0085"]


def main():
    ranks = {}
    with open(sys.argv[1], "rb") as f:
        for line in f:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)

    def bpe(piece):
        if piece in ranks:  # tiktoken: a whole piece that is a token is emitted as it is
            return [ranks[piece]]
        parts = [bytes([b]) for b in piece]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                return [ranks[p] for p in parts]
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    # the [\r\n/]* tail after punctuation: only these show it (the rank file has ";\n//" etc.)
    fixed = ["int x;\n// comment", "}\n\n/* c */", " */\n/", "f();\n//", "a.\n//b", "x)\r\n///y", "{\n//\n//"]
    random.seed(20)
    for k in range(400):
        text = fixed[k] if k < len(fixed) else "".join(random.choice(ALPHABET) for _ in range(random.randint(1, 16)))
        ids = [i for m in PAT.findall(text) for i in bpe(m.encode("utf-8"))]
        print(json.dumps({"id": "o%03d" % k, "text": text, "ids": ids}, ensure_ascii=False))


if __name__ == "__main__":
    main()
