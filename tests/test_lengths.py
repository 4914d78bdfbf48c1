"""Curate: a teacher's format problems are named rejections, and pairs are bounded in student tokens."""

from __future__ import annotations

from conftest import TOY, output_rows, run_distill
from distill.core.io import write_rows
from distill.core.manifest import Manifest
from distill.core.schemas import SAMPLE
from distill.curate.lengths import student_lengths, student_tokenizer
from distill.engines import formats

PROMPT = "{p}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def row(pid: str, problem: str, answer: str, completion: str, **kw) -> dict:
    return {
        "problem_id": pid, "problem": problem, "answer": answer, "sample_idx": 0, "prompt": PROMPT.format(p=problem),
        "completion": completion, "reasoning": None, "response": None, "finish_reason": "stop",
        "prompt_tokens": 12, "completion_tokens": 10, "teacher": "fake", "sampling": {}, **kw,
    }  # fmt: skip


def test_format_rejections_and_student_length(tmp_path):
    long_steps = "\n".join(f"{i} + 1 = {i + 1}" for i in range(40))
    rows = [
        row("a", "What is 3 + 4?", "7", "<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}."),
        row("b", "What is 5 + 1?", "6", "analysis5 + 1 = 6assistantfinalThe answer is \\boxed{6}."),
        row("c", "What is 2 + 2?", "4", formats.parse_harmony_text(
            "<|channel|>commentary<|message|>hm<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"
        ).raw, format_problem="harmony_commentary", format_detail="hm"),
        row("d", "What is 9 - 1?", "8", f"<think>\n{long_steps}\n</think>\n\nThe answer is \\boxed{{8}}."),
    ]  # fmt: skip
    gdir = tmp_path / "runs" / "t" / "generate"
    write_rows(gdir / "samples.jsonl", rows, SAMPLE)
    Manifest("generate", "genkey", {}, outputs={"samples": {"path": str(gdir / "samples.jsonl")}}).write(gdir)
    m = run_distill(
        ["stage=curate", f"run.root={tmp_path / 'runs'}", "run.name=t", "stage.progress=false",
         "stage.verify.num_workers=0", "stage.decontam.enabled=false", "stage.lengths.max_length=120",
         "+stage.phases=[{name: phase1, by: all}]"]
    )["curate"]  # fmt: skip
    rej = {r["problem_id"]: r for r in output_rows(tmp_path / "runs/t/curate", "rejected")}
    assert {k: v["reject_reason"] for k, v in rej.items()} == {
        "b": "channel_markers",
        "c": "harmony_commentary",
        "d": "over_max_length",
    }
    assert rej["d"]["reject_detail"].endswith("> 120 student tokens")
    kept = output_rows(tmp_path / "runs/t/curate", "phase1")
    assert [p["problem_id"] for p in kept] == ["a"] and 30 < kept[0]["student_tokens"] <= 120
    steps = {s["step"]: s["removed"] for s in m.metrics["steps"]}
    assert steps["over_max_length"] == steps["channel_markers"] == steps["harmony_commentary"] == 1


def test_student_lengths_are_what_train_counts():
    from omegaconf import OmegaConf

    from distill.core.config import ModelRef
    from distill.core.paths import Paths
    from distill.train.tokenizer import prepare_tokenizer

    student = OmegaConf.to_object(OmegaConf.structured(ModelRef(path=str(TOY / "student"))))
    tok = student_tokenizer(student, Paths.for_run("/tmp", "x"))
    r = row("a", "What is 3 + 4?", "7", "<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}.")
    train_tok = prepare_tokenizer(str(TOY / "student"), "<|im_end|>", "<|endoftext|>")
    msgs = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
    assert student_lengths([r], tok) == [
        len(train_tok.apply_chat_template(msgs, return_dict=True)["input_ids"])
    ]
