#!/usr/bin/env python3
"""Generate sacreBLEU and rouge-score reference values for the `lora-train` text-metric tests
(`crates/lora-train/tests/text_metrics_parity.rs`, checking `lora_train::sacrebleu` and
`lora_train::rouge`).

With the real ``sacrebleu`` (2.6.0) and ``rouge_score`` (0.1.2), on prediction/reference pairs
written here, writes under ``crates/lora-train/tests/fixtures/text_metrics/``:

* ``pairs_zh.jsonl``: hand-written Chinese pairs (identical, partial overlap, reordered, ASCII
  words and digits, full-width punctuation and characters, an empty hypothesis);
* ``pairs_json.jsonl``: the first 20 ``output_json_minified`` of
  ``data/uidsl/heldout_test.jsonl`` as references, predictions made from them by deterministic
  edits (identical, wrong theme, dropped section, swapped positions, truncated JSON, reversed
  sections, a changed list or number);
* ``pairs_en.jsonl``: English sentences with punctuation, hyphens, numbers (``1,000.50``),
  ``$`` and HTML entities, for ``13a``;
* ``pairs_sparse.jsonl``: English pairs without matching 3- and 4-grams, for the smoothing
  methods; ``pairs_short.jsonl``: hypotheses without 3-grams, for the effective order;
* ``expected.json``: per case, ``sacrebleu.metrics.BLEU(...).corpus_score(hyps, [refs])`` (score,
  counts, totals, precisions, brevity penalty, lengths, ``get_signature()`` and the printed
  line) and ``RougeScorer(['rougeL'], tokenizer=...)`` per pair and averaged; the token lists
  of sacreBLEU's ``13a``, ``zh`` and ``none`` tokenizers and of both ROUGE tokenizers for every
  text and a few extra tokenizer edge cases.

ROUGE-L on Chinese uses ``ChineseTokenizer`` below, the tokenisation for Chinese that
``lora_train::rouge::RougeTokenizer::Chinese`` documents: each CJK ideograph, and each run of
``[a-z0-9]`` of the lowercased text.

Usage, from the repository root, with a venv holding sacrebleu and rouge-score:

    ~/.cache/fixtures-venv/bin/python scripts/gen_text_metric_fixtures.py
"""

import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import sacrebleu
from rouge_score import rouge_scorer, tokenizers
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_none import NoneTokenizer
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "lora-train" / "tests" / "fixtures" / "text_metrics"
HELDOUT = ROOT / "data" / "uidsl" / "heldout_test.jsonl"

assert sacrebleu.__version__ == "2.6.0", sacrebleu.__version__


class ChineseTokenizer:
    """The tokenisation for Chinese: each CJK ideograph (U+3400-U+4DBF, U+4E00-U+9FFF,
    U+F900-U+FAFF, U+20000-U+3FFFF) and each run of [a-z0-9] of the lowercased text."""

    PATTERN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]|[a-z0-9]+")

    def tokenize(self, text):
        return self.PATTERN.findall(text.lower())


# (hypothesis, reference)
ZH_PAIRS = [
    ("今天天气很好，我们去公园散步吧。", "今天天气很好，我们去公园散步吧。"),
    ("我想订一张明天去上海的火车票。", "我要订两张明天到上海的高铁票。"),
    ("明天下午三点开会。", "开会时间是明天下午三点。"),
    ("我在2024年买了iPhone 15，花了5,999元！", "我2024年花5,999元买了一部iPhone 15。"),
    ("“你好！”他说：“欢迎来到北京。”", "他说：“你好，欢迎来北京！”"),
    ("", "请把文件发到我的邮箱test@example.com。"),
    ("这个API的响应时间是200ms左右。", "该API的平均响应时间约为200 ms。"),
    ("价格上涨了3.5%，达到￥12.80。", "价格上涨3.5%，现在是12.80元。"),
    ("第１２３号房间在ＡＢＣ大楼。", "第123号房间在ABC大楼。"),
    ("好的。", "好的，没问题。"),
    ("他犹豫了——然后说……算了吧。", "他犹豫了一下，然后说：算了。"),
    ("我们\u3000明天\u3000见", "我们明天见！"),
]

EN_PAIRS = [
    (
        "The state-of-the-art model costs $1,000.50 (approx.) per month.",
        "The state-of-the-art model costs about $1,000.5 per month.",
    ),
    (
        "It's 3-4 p.m. in New York; U.S. markets closed at 4:00.",
        "It is 3-4 p.m. in New York, and U.S. markets closed at 4:00.",
    ),
    (
        "Revenue grew 12.5% to 1,234,567 units -- a record!",
        "Revenue rose 12.5% to 1,234,567 units, a record.",
    ),
    (
        '"Quoted" text & <tags> aren\'t e-mail-safe.',
        "&quot;Quoted&quot; text &amp; &lt;tags&gt; are not e-mail safe.",
    ),
    (
        "Version 2.0.1-beta was released on 2024-05-01.",
        "Version 2.0.1-beta was released on May 1, 2024.",
    ),
    # A trailing "-" + newline: BLEU right-strips the line before `13a` drops "-\n".
    ("The e-mail said: see you at 10:30 -\n", "The e-mail said: see you at 10:30 -"),
]

# Hypotheses with 3- and 4-grams, none of which match: zero precisions to smooth.
SPARSE_PAIRS = [
    ("the cat is on a mat today", "the cat sat on the mat"),
    ("a dog ran very fast", "the dog ran away quickly"),
    ("Hello big World", "hello there world"),
]

# Hypotheses without 3-grams: what the effective order is for.
SHORT_PAIRS = [
    ("the cat", "the cat sat on the mat"),
    ("hello world", "hello world"),
]

# Texts for the tokenizer checks only.
EXTRA_TEXTS = [
    ".5 and 5. and ,x",
    "a<skipped>b &amp;lt; &amp;quot; x-\ny\nz",
    "e.g., U.S.A. 3-4--5 x-1 1-x 1--2",
    "1.2.3 1,2,3 a.b,c ... ,,, -.- .,",
    "好—的…𠀀x ←→ ★☆ ㈱ ⿰ ㄅ",
    "\u3000前后空格\u3000 ",
    "a\x1cb\x1fc\u2028d\u00a0e\u2000f\u200bg",
    "Ｆｕｌｌ－ｗｉｄｔｈ，ＡＢＣ１２３",
    "São Paulo ÉTÉ İstanbul straße 5\u212am",
    "カタカナ한국어漢字",
    "tab\tand\nnewline-\nend -",
    '{"page":{"name":"home_page","columns":2,"items":["a-b","c.d"]}}',
    "",
    "   ",
    # `zh` strips the line before its rules: a leading ".5" and a trailing "5." stay whole.
    " .5 x 5. ",
]


def boundary_text(is_inside) -> str:
    """Every code point at the edge of a range of `is_inside` (first, last, and the ones just
    outside), each between two ASCII letters."""
    edges = []
    previous = False
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and is_inside(chr(cp))
        if inside != previous:
            edges += [cp - 1, cp]
        previous = inside
    chars = [
        chr(cp)
        for cp in sorted(set(edges))
        if 0 <= cp <= sys.maxunicode and not 0xD800 <= cp <= 0xDFFF
    ]
    return "".join(f"a{c}" for c in chars) + "a"


THEMES = [
    "sakura-pink", "ocean-blue", "night-purple", "obsidian-gold", "forest-green", "sunset-orange",
]
POSITIONS = ["top", "middle", "bottom"]


def minify(doc) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def edit_json(index: int, reference: str) -> tuple[str, str]:
    """A deterministic prediction for the `index`-th reference, and the edit's name."""
    doc = json.loads(reference)
    page = doc["page"]
    sections = page["sections"]
    kind = index % 7
    if kind == 0:
        return reference, "identical"
    if kind == 1:
        page["theme"] = THEMES[(THEMES.index(page["theme"]) + 1) % len(THEMES)]
        return minify(doc), "wrong_theme"
    if kind == 2:
        del sections[1 if len(sections) > 1 else 0]
        return minify(doc), "dropped_section"
    if kind == 3:
        placed = [s for s in sections if "position" in s]
        pair = next(
            (
                (a, b)
                for i, a in enumerate(placed)
                for b in placed[i + 1:]
                if a["position"] != b["position"]
            ),
            None,
        )
        if pair:
            a, b = pair
            a["position"], b["position"] = b["position"], a["position"]
        else:
            placed[0]["position"] = POSITIONS[(POSITIONS.index(placed[0]["position"]) + 1) % 3]
        return minify(doc), "swapped_position"
    if kind == 4:
        return reference[: len(reference) * 2 // 3], "truncated"
    if kind == 5:
        sections.reverse()
        return minify(doc), "reversed_sections"
    for section in sections:
        for key, value in section.items():
            if isinstance(value, list) and len(value) > 1:
                value.pop()
                return minify(doc), "shorter_list"
            if isinstance(value, int) and not isinstance(value, bool):
                section[key] = value + 1
                return minify(doc), "changed_number"
    page["name"] = page["name"] + "_v2"
    return minify(doc), "changed_name"


def json_pairs() -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines()[:20]]
    out = []
    for index, row in enumerate(rows):
        reference = row["output_json_minified"]
        assert minify(json.loads(reference)) == reference
        prediction, edit = edit_json(index, reference)
        out.append((prediction, reference, edit))
    return out


def write_pairs(name: str, pairs) -> None:
    with open(OUT / f"pairs_{name}.jsonl", "w", encoding="utf-8") as f:
        for pair in pairs:
            record = {"prediction": pair[0], "reference": pair[1]}
            if len(pair) > 2:
                record["edit"] = pair[2]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def bleu_case(name, sets, tokenize, smooth_method="exp", smooth_value=None, lowercase=False,
              effective_order=False) -> dict:
    pairs = sets[name.split("/")[0]]
    hyps = [p[0] for p in pairs]
    refs = [p[1] for p in pairs]
    metric = BLEU(tokenize=tokenize, smooth_method=smooth_method, smooth_value=smooth_value,
                  lowercase=lowercase, effective_order=effective_order)
    score = metric.corpus_score(hyps, [refs])
    signature = str(metric.get_signature())
    return {
        "name": name,
        "pairs": name.split("/")[0],
        "tokenize": tokenize,
        "smooth_method": smooth_method,
        "smooth_value": smooth_value,
        "lowercase": lowercase,
        "effective_order": effective_order,
        "score": score.score,
        "counts": list(score.counts),
        "totals": list(score.totals),
        "precisions": list(score.precisions),
        "bp": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": signature,
        "printed": str(score),
        "printed_with_signature": score.format(signature=signature),
    }


def rouge_case(name, sets, tokenizer) -> dict:
    pairs = sets[name.split("/")[0]]
    scorer = rouge_scorer.RougeScorer(
        ["rougeL"], tokenizer=ChineseTokenizer() if tokenizer == "chinese" else None)
    scores = [scorer.score(reference, prediction)["rougeL"] for prediction, reference, *_ in pairs]
    return {
        "name": name,
        "pairs": name.split("/")[0],
        "tokenizer": tokenizer,
        "precision": [s.precision for s in scores],
        "recall": [s.recall for s in scores],
        "fmeasure": [s.fmeasure for s in scores],
        "mean_precision": sum(s.precision for s in scores) / len(scores),
        "mean_recall": sum(s.recall for s in scores) / len(scores),
        "mean_fmeasure": sum(s.fmeasure for s in scores) / len(scores),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sets = {
        "zh": ZH_PAIRS,
        "json": json_pairs(),
        "en": EN_PAIRS,
        "sparse": SPARSE_PAIRS,
        "short": SHORT_PAIRS,
    }
    for name, pairs in sets.items():
        write_pairs(name, pairs)

    bleu = []
    for set_name in ["zh", "json", "en"]:
        for tokenize in ["13a", "zh"]:
            bleu.append(bleu_case(f"{set_name}/{tokenize}/exp", sets, tokenize))
    for set_name in ["zh", "json"]:
        bleu.append(bleu_case(f"{set_name}/zh/floor", sets, "zh", "floor", 0.1))
        bleu.append(bleu_case(f"{set_name}/zh/none", sets, "zh", "none"))
    bleu.append(bleu_case("zh/zh/add-k", sets, "zh", "add-k"))
    bleu.append(bleu_case("en/13a/floor", sets, "13a", "floor", 0.1))
    bleu.append(bleu_case("en/13a/exp/lowercase", sets, "13a", lowercase=True))
    bleu.append(bleu_case("en/none/exp", sets, "none"))
    bleu.append(bleu_case("sparse/13a/exp", sets, "13a"))
    bleu.append(bleu_case("sparse/13a/floor", sets, "13a", "floor", 0.1))
    bleu.append(bleu_case("sparse/13a/floor-0.25", sets, "13a", "floor", 0.25))
    bleu.append(bleu_case("sparse/13a/none", sets, "13a", "none"))
    bleu.append(bleu_case("sparse/13a/add-k", sets, "13a", "add-k", 1))
    bleu.append(bleu_case("sparse/13a/exp/lowercase", sets, "13a", lowercase=True))
    bleu.append(bleu_case("short/13a/exp", sets, "13a"))
    bleu.append(bleu_case("short/13a/none/effective", sets, "13a", "none", effective_order=True))
    bleu.append(bleu_case("short/13a/exp/effective", sets, "13a", effective_order=True))

    rouge = [
        rouge_case(name, sets, name.split("/")[1])
        for name in ["en/default", "en/chinese", "zh/chinese", "zh/default", "json/chinese",
                     "json/default"]
    ]

    texts = []
    for pairs in sets.values():
        for prediction, reference, *_ in pairs:
            texts += [prediction, reference]
    texts += EXTRA_TEXTS
    # The edges of sacreBLEU's Chinese ranges (as Python really compares them) and of the
    # CJK ideographs of the tokenisation for Chinese.
    texts.append(boundary_text(TokenizerZh._is_chinese_char))
    texts.append(
        boundary_text(lambda c: bool(ChineseTokenizer.PATTERN.fullmatch(c)) and not c.isascii()))
    tok13a, tokzh, toknone = Tokenizer13a(), TokenizerZh(), NoneTokenizer()
    default, chinese = tokenizers.DefaultTokenizer(), ChineseTokenizer()
    tokenizations = [
        {
            "text": text,
            "13a": tok13a(text).split(),
            "zh": tokzh(text).split(),
            "none": toknone(text).split(),
            "rouge_default": default.tokenize(text),
            "rouge_chinese": chinese.tokenize(text),
        }
        for text in dict.fromkeys(texts)
    ]

    expected = {
        "_meta": {
            "generator": "scripts/gen_text_metric_fixtures.py",
            "sacrebleu": sacrebleu.__version__,
            "rouge_score": version("rouge-score"),
            "python": sys.version.split()[0],
        },
        "bleu": bleu,
        "rouge_l": rouge,
        "tokenizations": tokenizations,
    }
    with open(OUT / "expected.json", "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(bleu)} BLEU cases, {len(rouge)} ROUGE-L cases and "
          f"{len(tokenizations)} tokenizations to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
