"""conf/input/ presets, each on a few rows written in its dataset's exact schema, through the curate stage."""

from __future__ import annotations

import json

import pytest

from conftest import output_rows, run_distill
from distill.core.io import write_rows
from distill.core.schemas import RowError
from distill.curate.external import ExternalConfig, flatten, get_path


def think(r: str, a: str) -> str:
    return f"<think>\n{r}\n</think>\n\nThe answer is $\\boxed{{{a}}}$."


OPENR1 = [  # open-r1/OpenR1-Math-220k, default config
    {"problem": "What is $2+3$?", "solution": "2+3=5", "answer": "5", "problem_type": "Algebra",
     "question_type": "math-word-problem", "source": "olympiads", "uuid": "u-1",
     "is_reasoning_complete": [True, True], "generations": [think("We add two and three.", "5"), think("Two plus three is six.", "6")],
     "correctness_math_verify": [True, False], "correctness_llama": None, "finish_reasons": None,
     "correctness_count": 1, "messages": [{"role": "user", "content": "What is $2+3$?"},
                                          {"role": "assistant", "content": think("We add two and three.", "5")}]},
    {"problem": "Find $x$ if $x-4=10$.", "solution": "x=14", "answer": "14", "problem_type": "Algebra",
     "question_type": "math-word-problem", "source": "cn_contest", "uuid": "u-2",
     "is_reasoning_complete": [True, False, True],
     "generations": [think("Add four to both sides.", "14"), "<think>\nAdd four to", think("So x is fourteen.", "14")],
     "correctness_math_verify": [True, False, True], "correctness_llama": [True, False, True],
     "finish_reasons": ["stop", "length", "stop"], "correctness_count": 2, "messages": []},
]  # fmt: skip
OPENTHOUGHTS = [  # open-thoughts/OpenThoughts-114k, default config
    {"system": "Your role as an assistant involves thoroughly exploring questions ...",
     "conversations": [
         {"from": "user", "value": "Return your final response within \\boxed{}. Compute $7 \\cdot 6$."},
         {"from": "assistant", "value": "<|begin_of_thought|>\n\nSeven sixes make forty-two.\n\n<|end_of_thought|>\n\n"
                                        "<|begin_of_solution|>\n\nThe product is $\\boxed{42}$.\n\n<|end_of_solution|>"}]},
    {"system": "Your role as an assistant involves thoroughly exploring questions ...",
     "conversations": [
         {"from": "human", "value": "Return your final response within \\boxed{}. What is $9-3$?"},
         {"from": "gpt", "value": "<|begin_of_thought|>\n\nNine less three is six.\n\n<|end_of_thought|>\n\n"
                                  "<|begin_of_solution|>\n\n$\\boxed{6}$\n\n<|end_of_solution|>"}]},
]  # fmt: skip
AM = [  # a-m-team/AM-DeepSeek-R1-Distilled-1.4M
    {"messages": [
        {"role": "user", "content": "How many sides does a hexagon have?",
         "info": {"source": "natural_reasoning", "reference_answer": "6", "test_case": None, "think_content": None, "answer_content": None}},
        {"role": "assistant", "content": "<think>\nA hexagon has six sides.\n</think>\n<answer>\nIt has $\\boxed{6}$ sides.\n</answer>",
         "info": {"source": "am-0309", "think_content": "A hexagon has six sides.", "answer_content": "It has $\\boxed{6}$ sides.",
                  "reference_answer": None, "test_case": None}}]},
    {"messages": [
        {"role": "user", "content": "What is $10/4$?",
         "info": {"source": "big_math", "reference_answer": "5/2", "test_case": None, "think_content": None, "answer_content": None}},
        {"role": "assistant", "content": "<think>\nTen over four is two point five.\n</think>\n<answer>\n$\\boxed{3}$\n</answer>",
         "info": {"source": "am-0309", "think_content": "", "answer_content": "", "reference_answer": None, "test_case": None}}]},
]  # fmt: skip
OMR = [  # nvidia/OpenMathReasoning, cot split
    {"expected_answer": "12", "problem": "Compute $3 \\times 4$.", "generated_solution": think("Three fours are twelve.", "12"),
     "problem_type": "has_answer_extracted", "problem_source": "aops_c4_high_school_math", "inference_mode": "cot",
     "generation_model": "DeepSeek-R1", "pass_rate_72b_tir": "0.9", "used_in_kaggle": False},
    {"expected_answer": "\\frac{1}{2}", "problem": "Simplify $2/4$.", "generated_solution": think("Halve both.", "\\frac{1}{2}"),
     "problem_type": "has_answer_extracted", "problem_source": "aops_c6_high_school_olympiads", "inference_mode": "cot",
     "generation_model": "QwQ-32B", "pass_rate_72b_tir": "n/a", "used_in_kaggle": True},
]  # fmt: skip

# preset, rows, file suffix, extra overrides, samples in, pairs kept, meta of the first kept pair's row
CASES = [
    ("openr1_math", OPENR1, ".parquet", [], 5, 3, {"source": "olympiads", "correctness_math_verify": True}),
    ("openthoughts", OPENTHOUGHTS, ".jsonl", ["stage.verify.keep_unverified=true"], 2, 2, {}),
    ("am_deepseek_r1_distilled", AM, ".jsonl", [], 2, 1, {"source": "natural_reasoning"}),
    ("openmathreasoning", OMR, ".parquet", [], 2, 2, {"problem_source": "aops_c4_high_school_math"}),
]


def _write(path, rows):
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("preset,rows,suffix,extra,n_in,n_kept,meta", CASES, ids=[c[0] for c in CASES])
def test_preset(tmp_path, preset, rows, suffix, extra, n_in, n_kept, meta):
    f = tmp_path / f"{preset}{suffix}"
    _write(f, rows)
    keys = "[" + ",".join(f"meta.{k}" for k in meta) + "]"
    m = run_distill(
        ["stage=curate", f"input={preset}", f"stage.input={f}", f"run.root={tmp_path}", "run.name=p",
         "stage.progress=false", "stage.verify.num_workers=0", "stage.decontam.enabled=false",
         f"stage.meta_keys={keys}", *extra]
    )["curate"]  # fmt: skip
    assert (m.metrics["input"], m.metrics["kept"]) == (n_in, n_kept)
    pairs = output_rows(tmp_path / "p/curate", "phase1")
    asst = pairs[0]["messages"][1]["content"]
    assert asst.startswith("<think>\n") and "\n</think>\n\n" in asst
    assert not any(m in asst for m in ("<|begin_of", "<|end_of", "<answer>", "</answer>"))
    assert {k: pairs[0][k] for k in meta} == meta
    rej = output_rows(tmp_path / "p/curate", "rejected")
    assert all(set(r["meta"]) <= {k.rsplit(".", 1)[-1] for k in _preset_meta(preset)} for r in rej)
    print(f"{preset}: {n_in} samples -> {n_kept} pairs; {json.dumps(pairs[0]['messages'])}")


def _preset_meta(preset: str) -> list[str]:
    from omegaconf import OmegaConf

    from conftest import REPO

    return list(OmegaConf.load(REPO / "conf" / "input" / f"{preset}.yaml").external.meta_columns)


def test_meta_keeps_only_named_columns_and_per_index_values():
    ext = ExternalConfig(
        explode=["generations", "correctness_math_verify"], meta_columns=["source", "correctness_math_verify"]
    )
    cols = {"problem": "problem", "answer": "answer", "completion": "generations"}
    out = flatten(OPENR1[0], cols, ext, "f:1")
    assert [m for _, _, m in out] == [
        {"source": "olympiads", "correctness_math_verify": True},
        {"source": "olympiads", "correctness_math_verify": False},
    ]
    assert [w for _, w, _ in out] == ["f:1 [0]", "f:1 [1]"]
    assert get_path(AM[0], "messages.0.info.reference_answer") == "6"
    bad = {**OPENR1[0], "correctness_math_verify": [True]}
    with pytest.raises(RowError, match=r"f:1: exploded columns differ in length"):
        flatten(bad, cols, ext, "f:1")


def test_external_rows_schema_checked(tmp_path):
    from distill.curate.inputs import read_external

    f = tmp_path / "x.jsonl"
    write_rows(f, [{"conversations": [{"speaker": "user", "text": "hi"}]}])
    ext = ExternalConfig()
    ext.roles.role_key, ext.roles.content_key = "from", "value"
    with pytest.raises(RowError, match=r"x.jsonl:1: message 0 lacks 'from'/'value'"):
        read_external(f, {"messages": "conversations"}, ext=ext)
