#!/usr/bin/env python3
"""Generate the fixtures of the generation controls (`lora-generate`, `lora-t5`).

Runs the real Hugging Face ``transformers`` and writes:

* ``crates/lora-generate/tests/fixtures/processors.json``: fixed scores
  ``[4, 3000]``, decoder ids and encoder ids, and for each case the scores after
  the ``LogitsProcessorList`` that ``GenerationMixin._get_logits_processor``
  builds from the case's generation settings (processors, and the sampling
  warpers when ``do_sample``), as changes: per row the columns set to ``-inf``
  (``neg_inf``, or ``finite_only`` listing the others when most are) and the
  other changed values.
* ``crates/lora-t5/tests/fixtures/generation_controls.json``: two padded prompts
  for the tiny ``t5_v1_1`` fixture model and, for each run, the ``generate()``
  keyword arguments and transformers' sequences (and ``sequences_scores`` /
  processed ``scores`` where asked). Every run is computed in float32 and in
  float64 and must give the same ids, so that no result rests on a near-tie.

Usage, from the repository root, with a venv holding torch and transformers:

    $VENV/bin/python scripts/gen_generation_fixtures.py

Deterministic: torch is seeded and single-threaded; running it twice writes the
same files.
"""

import json
import math
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig, LogitsProcessorList, T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "crates" / "lora-t5" / "tests" / "fixtures" / "t5_v1_1"
PROCESSORS_OUT = ROOT / "crates" / "lora-generate" / "tests" / "fixtures" / "processors.json"
CONTROLS_OUT = ROOT / "crates" / "lora-t5" / "tests" / "fixtures" / "generation_controls.json"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROWS, VOCAB = 4, 3000
START, EOS, PAD = 0, 1, 0


def f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32."""
    return float(f"{v:.9g}")


def floats(t: torch.Tensor):
    return [[None if math.isinf(v) and v < 0 else f32(v) for v in row] for row in t.tolist()]


def changes(before: torch.Tensor, after: torch.Tensor):
    """Per row, the columns set to -inf (or, when most are, the columns that are not) and
    the other changed entries as [column, value]."""
    out = []
    for b, a in zip(before.tolist(), after.tolist()):
        banned = [c for c, v in enumerate(a) if math.isinf(v) and v < 0]
        changed = [[c, f32(v)] for c, (x, v) in enumerate(zip(b, a)) if v != x and not math.isinf(v)]
        if 2 * len(banned) > len(a):
            finite = [c for c, v in enumerate(a) if not math.isinf(v)]
            out.append({"finite_only": finite, "changed": changed})
        else:
            out.append({"neg_inf": banned, "changed": changed})
    return out


def processors_for(model, kwargs: dict, encoder_ids: torch.Tensor) -> LogitsProcessorList:
    gc = GenerationConfig(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=PAD, **kwargs)
    model._prepare_special_tokens(gc, kwargs_has_attention_mask=True, device="cpu")
    return model._get_logits_processor(
        generation_config=gc,
        input_ids_seq_length=1,
        encoder_input_ids=encoder_ids,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(),
        device="cpu",
        model_kwargs={},
    )


# Each case: generation settings, and how many decoder ids are given (the step's position).
PROCESSOR_CASES = {
    "repetition_penalty": ({"repetition_penalty": 1.3}, 6),
    "encoder_repetition_penalty": ({"encoder_repetition_penalty": 1.5}, 6),
    "no_repeat_ngram_size": ({"no_repeat_ngram_size": 2}, 6),
    "encoder_no_repeat_ngram_size": ({"encoder_no_repeat_ngram_size": 2}, 6),
    "bad_words_ids": ({"bad_words_ids": [[5], [7, 9], [EOS], [3, 4, 11]]}, 6),
    "min_new_tokens": ({"min_new_tokens": 8}, 6),
    "min_length": ({"min_length": 8}, 6),
    "forced_bos_token_id": ({"forced_bos_token_id": 42}, 1),
    "forced_eos_token_id": ({"forced_eos_token_id": [EOS, 2], "max_length": 7}, 6),
    "suppress_tokens": ({"suppress_tokens": [2, 17, 2999]}, 6),
    "begin_suppress_tokens": ({"begin_suppress_tokens": [2, 17]}, 1),
    "begin_suppress_tokens_after_forced_bos": (
        {"begin_suppress_tokens": [2, 17], "forced_bos_token_id": 42}, 2),
    "top_k": ({"do_sample": True, "top_k": 50}, 6),
    "top_p": ({"do_sample": True, "top_k": 0, "top_p": 0.9}, 6),
    "top_p_small": ({"do_sample": True, "top_k": 0, "top_p": 0.05}, 6),
    "top_k_top_p_temperature": ({"do_sample": True, "top_k": 50, "top_p": 0.5, "temperature": 0.8}, 6),
    "min_p": ({"do_sample": True, "top_k": 0, "min_p": 0.1}, 6),
    "typical_p": ({"do_sample": True, "top_k": 0, "typical_p": 0.9}, 6),
    "epsilon_cutoff": ({"do_sample": True, "top_k": 0, "epsilon_cutoff": 3e-4}, 6),
    "eta_cutoff": ({"do_sample": True, "top_k": 0, "eta_cutoff": 3e-4}, 6),
    "everything": ({
        "do_sample": True, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3,
        "bad_words_ids": [[5]], "min_new_tokens": 3, "temperature": 1.3, "top_k": 200,
        "top_p": 0.95, "min_p": 0.02, "typical_p": 0.95, "epsilon_cutoff": 1e-4,
    }, 6),
}


def processor_fixtures(model) -> dict:
    g = torch.Generator().manual_seed(1234)
    scores = torch.randn((ROWS, VOCAB), generator=g) * 2.5
    # Sharper rows, so that the mass rules keep few tokens in some rows and many in others.
    scores[1] *= 3.0
    scores[2, :40] += 8.0
    decoder_ids = torch.randint(2, 60, (ROWS, 6), generator=g)
    decoder_ids[:, 0] = START
    # Repeats, so that the n-gram and bad-word rules ban something.
    decoder_ids[0, 3:6] = torch.tensor([decoder_ids[0, 1], decoder_ids[0, 2], decoder_ids[0, 1]])
    decoder_ids[1, 4:6] = torch.tensor([7, 7])
    decoder_ids[2, 3:6] = torch.tensor([3, 4, 9])
    decoder_ids[3, 5] = 7
    encoder_ids = torch.randint(2, 60, (ROWS, 7), generator=g)
    encoder_ids[:, -1] = EOS
    encoder_ids[0, 2] = decoder_ids[0, 5]
    encoder_ids[3, 0] = 7
    cases = {}
    for name, (kwargs, length) in PROCESSOR_CASES.items():
        processors = processors_for(model, kwargs, encoder_ids)
        with torch.no_grad():
            out = processors(decoder_ids[:, :length].clone(), scores.clone())
        kept = int(torch.isfinite(out).sum())
        assert 0 < kept, name
        cases[name] = {
            "kwargs": kwargs,
            "decoder_length": length,
            "processors": [type(p).__name__ for p in processors],
            "changes": changes(scores, out),
        }
    return {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "scores": floats(scores),
        "decoder_ids": decoder_ids.tolist(),
        "encoder_ids": encoder_ids.tolist(),
        "cases": cases,
    }


def control_runs(greedy: torch.Tensor) -> dict:
    """The generate() runs, some built from the plain greedy output so that they bite."""
    first = int(greedy[0, 1])
    pair = [int(greedy[1, 2]), int(greedy[1, 3])]
    seen = int(greedy[0, 3])
    return {
        "greedy_plain": {"max_new_tokens": 12},
        "greedy_repetition_penalty": {"max_new_tokens": 12, "repetition_penalty": 1.5},
        "greedy_encoder_repetition_penalty": {"max_new_tokens": 12, "encoder_repetition_penalty": 2.0},
        "greedy_no_repeat_ngram_size": {"max_new_tokens": 12, "no_repeat_ngram_size": 2},
        "greedy_encoder_no_repeat_ngram_size": {"max_new_tokens": 12, "encoder_no_repeat_ngram_size": 2},
        "greedy_bad_words_ids": {"max_new_tokens": 12, "bad_words_ids": [[first], pair]},
        "greedy_forced_bos_and_eos": {"max_new_tokens": 8, "forced_bos_token_id": 7, "forced_eos_token_id": EOS},
        "greedy_suppress_tokens": {"max_new_tokens": 12, "suppress_tokens": [seen], "begin_suppress_tokens": [first]},
        "greedy_min_length": {"max_new_tokens": 10, "min_length": 6},
        "greedy_max_length": {"max_length": 7},
        "greedy_two_eos": {"max_new_tokens": 12, "eos_token_id": [EOS, seen]},
        "greedy_output_scores": {"max_new_tokens": 6, "repetition_penalty": 1.2, "output_scores": True},
        "beam_penalties": {"max_new_tokens": 10, "num_beams": 3, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
        "beam_num_return_sequences": {"max_new_tokens": 10, "num_beams": 4, "num_return_sequences": 3,
                                      "output_scores": True},
        "beam_bad_words_forced_eos": {"max_new_tokens": 8, "num_beams": 3, "bad_words_ids": [[first], pair],
                                      "forced_eos_token_id": EOS},
        "beam_two_eos": {"max_new_tokens": 10, "num_beams": 3, "eos_token_id": [EOS, seen]},
    }


def run(model, inputs, kwargs):
    with torch.no_grad():
        return model.generate(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            do_sample=False, return_dict_in_generate=True,
            # transformers 5.x's cache fails on a T5 whose decoder has more layers than its
            # encoder (IndexError in `update`), as the t5_v1_1 fixture records.
            use_cache=False, **kwargs)


def control_fixtures() -> dict:
    model = T5ForConditionalGeneration.from_pretrained(str(MODEL_DIR)).eval()
    model64 = T5ForConditionalGeneration.from_pretrained(str(MODEL_DIR), dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(77)
    input_ids = torch.full((2, 9), PAD, dtype=torch.long)
    attention_mask = torch.zeros((2, 9), dtype=torch.long)
    for row, length in enumerate([9, 6]):
        input_ids[row, : length - 1] = torch.randint(2, 80, (length - 1,), generator=g)
        input_ids[row, length - 1] = EOS
        attention_mask[row, :length] = 1
    # Repeat some prompt tokens so that the encoder n-gram rule has something to ban.
    input_ids[0, 4:6] = input_ids[0, 1:3]
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    greedy = run(model, inputs, {"max_new_tokens": 12}).sequences
    runs = {}
    for name, kwargs in control_runs(greedy).items():
        out = run(model, inputs, kwargs)
        out64 = run(model64, inputs, kwargs)
        assert torch.equal(out.sequences, out64.sequences), f"{name}: float32 and float64 disagree"
        entry = {"kwargs": kwargs, "sequences": out.sequences.tolist()}
        if kwargs.get("output_scores") and kwargs.get("num_beams", 1) > 1:
            entry["sequences_scores"] = [f32(v) for v in out.sequences_scores.tolist()]
        elif kwargs.get("output_scores"):
            entry["scores"] = [floats(s) for s in out.scores]
        runs[name] = entry
    distinct = {json.dumps(r["sequences"]) for r in runs.values()}
    print(f"{len(runs)} runs, {len(distinct)} distinct outputs")
    return {
        "transformers_version": transformers.__version__,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "runs": runs,
    }


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def main() -> None:
    torch.manual_seed(0)
    model = T5ForConditionalGeneration.from_pretrained(str(MODEL_DIR)).eval()
    write(PROCESSORS_OUT, processor_fixtures(model))
    write(CONTROLS_OUT, control_fixtures())


if __name__ == "__main__":
    main()
