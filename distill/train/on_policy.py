"""The on-policy phase: the student samples its own completions and the teacher scores every token of them.

SFT phases imitate the teacher's perfect prefixes; a student that slips once is then in states it never saw
in training, and compounds the error. Here the loss is a divergence between the student's and the teacher's
next-token distributions on the student's own samples (TRL's `DistillationTrainer`: generalized JSD, `beta`
= 1 reverse KL, the default; 0 forward KL; 0.5 JSD), so the student is trained on its own mistakes.

The driver (distill.train.stage) uses the config-time parts (`prompt_rows`, `check_vocab`, `resolve`); the
ranks (distill.train.worker, plan kind `on_policy`) call `build_trainer` and `summary`.

The teacher sits beside the student on every rank (its forward is no-grad; ZeRO-3 shards it like the
student), and the loss sees its full next-token distribution. For a teacher too large for that, the phase's
`teacher_server` names a vLLM server that scores the student's samples instead (distill.train.teacher_server:
TRL's server-distillation trainer; the loss then sees top-k log-probs only, and that module says exactly
what reaches it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_text
from distill.core.manifest import model_fingerprint
from distill.core.paths import Paths
from distill.core.secrets import scrub_value
from distill.core.shards import iter_dataset
from distill.engines.base import model_location
from distill.train import teacher_server
from distill.train.args import run_summary, shared_args
from distill.train.teacher_server import TeacherServer

KINDS = ("sft", "on_policy")


@dataclass
class OnPolicySpec:
    """The on-policy settings of a phase (values from `stage.per_phase.<phase>`; None there: these)."""

    beta: float = 1.0  # 0 forward KL(teacher || student), 1 reverse KL(student || teacher), between: JSD
    temperature: float = 1.0  # sampling and loss temperature (TRL uses one for both)
    max_new_tokens: int = 512  # the student's completion budget per prompt
    use_vllm: bool = True  # GPU only (colocated with the ranks); CPU ranks sample with transformers generate
    teacher_dtype: str | None = None  # None: the stage's model_dtype
    teacher_server: TeacherServer | None = None  # a vLLM server scores instead (distill.train.teacher_server)


SPEC_FIELDS = tuple(OnPolicySpec.__dataclass_fields__)


def resolve(override: dict[str, Any], where: str) -> dict[str, Any]:
    """The phase's on-policy settings with defaults filled; bad values fail here, before any rank starts."""
    spec = {k: v for k, v in OnPolicySpec().__dict__.items()} | {
        k: v for k, v in override.items() if k in SPEC_FIELDS and v is not None
    }
    if not 0.0 <= spec["beta"] <= 1.0:
        raise ValueError(f"{where}.beta={spec['beta']}: must be in [0, 1] (0 forward KL, 1 reverse KL)")
    if spec["temperature"] <= 0 or spec["max_new_tokens"] < 1:
        raise ValueError(f"{where}: temperature must be > 0 and max_new_tokens >= 1")
    if spec["teacher_server"] is not None:
        spec["teacher_server"] = {**asdict(TeacherServer()), **spec["teacher_server"]}
        teacher_server.check(spec, where)
    return spec


def keyed_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The phase spec as the phase key sees it: a teacher server's address is left out (a moved server
    resumes the phase), and a phase without one keys exactly as before the field existed."""
    if "on_policy" not in spec:
        return spec
    op = dict(spec["on_policy"])
    if op.get("teacher_server") is None:
        op.pop("teacher_server", None)
    else:
        op["teacher_server"] = teacher_server.keyed(op["teacher_server"])
    return {**spec, "on_policy": op}


def prompt_rows(train_pairs: str | Path | dict) -> list[dict]:
    """One prompt per curated problem of the source: the pair's turns before the assistant's answer, which
    are the problem through generate's prompt template (and system prompt) exactly as the teacher saw it.
    `train_pairs`: curate's output record (its shards, streamed) or one .jsonl file."""
    rec = train_pairs if isinstance(train_pairs, dict) else {"path": str(train_pairs)}
    where = rec["path"]
    seen: dict[str, list[dict]] = {}
    for i, row in enumerate(iter_dataset(rec, columns=["messages", "problem_id"]), 1):
        msgs = row["messages"]
        if not msgs or msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise ValueError(f"{where}: row {i} does not end in an assistant turn after a prompt")
        seen.setdefault(row["problem_id"], msgs[:-1])
    if not seen:
        raise ValueError(f"{where}: no curated problems to sample prompts from")
    return [{"prompt": p, "problem_id": pid} for pid, p in seen.items()]


def write_prompts(train_pairs: str | Path | dict, out: Path) -> int:
    rows = prompt_rows(train_pairs)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def check_vocab(student: str, teacher: str, student_revision: str | None = None,
                teacher_revision: str | None = None) -> None:  # fmt: skip
    """The divergence compares full next-token distributions id by id: a teacher whose token ids mean other
    strings gives a finite, silently meaningless loss. Refuse any difference in the token -> id maps or in
    the models' output sizes, naming both tokenizers."""
    from transformers import AutoConfig, AutoTokenizer

    s_tok = _tokenizer(AutoTokenizer, student, student_revision, "student")
    t_tok = _tokenizer(AutoTokenizer, teacher, teacher_revision, "teacher")
    sv, tv = s_tok.get_vocab(), t_tok.get_vocab()
    if sv != tv:
        diff = sorted(set(sv.items()) ^ set(tv.items()), key=lambda x: x[1])[:3]
        raise ValueError(
            f"on-policy distillation needs one vocabulary: student tokenizer {student} ({len(sv)} tokens) and "
            f"teacher tokenizer {teacher} ({len(tv)} tokens) differ (e.g. {diff}); use a teacher of the "
            "student's family (Qwen3-8B/32B -> Qwen3-0.6B) or drop the on_policy phase"
        )
    sizes = {}
    for name, path, rev in (("student", student, student_revision), ("teacher", teacher, teacher_revision)):
        try:
            sizes[name] = AutoConfig.from_pretrained(path, revision=rev).get_text_config().vocab_size
        except (OSError, ValueError):  # a bare tokenizer dir: the model's own check in TRL still runs
            continue
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"on-policy distillation: student {student} has {sizes['student']} output rows, teacher {teacher} "
            f"{sizes['teacher']}; the tokenizers match but the LM heads do not"
        )


def _tokenizer(auto: Any, path: str, revision: str | None, role: str) -> Any:
    """The library's own error repeats the path it was given, credentials in a URL included: re-raised
    scrubbed, without the original chained (a traceback would print it)."""
    try:
        return auto.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as e:
        msg = f"on-policy vocabulary check: the {role} tokenizer {path} does not load: {e}"
        raise ValueError(scrub_value(msg)) from None


def phase_spec(g: DictConfig, phase: str) -> dict[str, Any]:
    """The phase's kind, data source and (on_policy) settings, checked before any phase trains."""
    over = g.per_phase.get(phase)
    o = OmegaConf.to_container(over, resolve=True) if over is not None else {}
    kind = o.get("kind") or "sft"
    where = f"stage.per_phase.{phase}"
    if kind not in KINDS:
        raise ValueError(f"{where}.kind={kind!r}; valid: {', '.join(KINDS)}")
    spec: dict[str, Any] = {"kind": kind, "source": o.get("source") or phase}
    if kind == "on_policy":
        spec["on_policy"] = resolve(o, where)
    return spec


def teacher_settings(cfg: DictConfig, paths: Paths, spec: dict) -> dict | None:
    """An on_policy phase's settings plus where the ranks load the run's teacher from (sft: None)."""
    if spec["kind"] != "on_policy":
        return None
    t = cfg.teacher
    return {
        **spec["on_policy"],
        "teacher": model_location(t.path, paths),
        "teacher_revision": t.revision,
        "enable_thinking": bool(cfg.student.enable_thinking),
    }


def teacher_fingerprint(cfg: DictConfig, paths: Paths) -> dict:
    t = cfg.teacher
    return model_fingerprint(paths.resolve(t.path), t.name, t.revision, "teacher")


def check_phases(cfg: DictConfig, paths: Paths) -> None:
    """Every phase's kind and settings, and an on_policy teacher's vocabulary, checked before phase 1
    trains: a config error must not surface after hours of SFT."""
    g = cfg.stage
    specs = [phase_spec(g, p) for p in g.phases]
    if any(s["kind"] == "on_policy" for s in specs):
        s, t = cfg.student, cfg.teacher
        check_vocab(
            model_location(s.tokenizer or s.path, paths),
            model_location(t.tokenizer or t.path, paths),
            s.revision,
            t.revision,
        )


def distillation_config(plan: dict) -> Any:
    """DistillationConfig (ServerDistillationConfig with a teacher server) from the plan: the arguments every
    phase shares (distill.train.args: the CPU settings included) plus the on-policy ones (no vLLM on CPU)."""
    op, cpu = plan["on_policy"], plan["use_cpu"]
    config_class, server_kwargs = teacher_server.config_class_and_kwargs(op)
    return config_class(
        **shared_args(plan),
        **server_kwargs,
        beta=op["beta"],
        temperature=op["temperature"],
        top_p=1.0,  # the student's own distribution, untruncated: the reverse KL is over its samples
        max_completion_length=op["max_new_tokens"],
        use_vllm=op["use_vllm"] and not cpu,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.3,  # TRL's default: the student's engine beside its training state
        chat_template_kwargs={"enable_thinking": bool(op.get("enable_thinking", True))},
        disable_dropout=True,
    )


def _load(path: str, revision: str | None, dtype: str, attn: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, revision=revision, dtype=getattr(torch, dtype), attn_implementation=attn, use_safetensors=True
    )


def build_trainer(plan: dict) -> Any:
    """The DistillationTrainer of one on-policy phase: student from the previous phase's weights (or the
    student), teacher from the run's teacher (or its server), prompts from the phase's prompts file."""
    from datasets import load_dataset
    from trl import DistillationTrainer

    from distill.train.tokenizer import prepare_tokenizer

    h, op = plan["hparams"], plan["on_policy"]
    tok = prepare_tokenizer(
        plan.get("tokenizer") or plan["init_model"],
        plan["eos_token"],
        plan["pad_token"],
        revision=None if plan.get("tokenizer") else plan.get("init_revision"),
        chat_template=plan.get("chat_template"),
    )
    tok.padding_side = "left"
    args = distillation_config(plan)
    attn = (
        "sdpa" if h["attn_implementation"] == "varlen_sdpa" else h["attn_implementation"]
    )  # no packing here
    model = _load(plan["init_model"], plan.get("init_revision"), h["model_dtype"], attn)
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    prompts = load_dataset("json", data_files=plan["train_file"], split="train").select_columns(["prompt"])
    if op.get("teacher_server"):  # the teacher's log-probs come from a vLLM server: nothing to load here
        return teacher_server.build_trainer(model, args, prompts, tok)
    teacher = _load(op["teacher"], op.get("teacher_revision"), op["teacher_dtype"] or h["model_dtype"], attn)
    return DistillationTrainer(
        model=model, teacher_model=teacher, args=args, train_dataset=prompts, processing_class=tok
    )


def summary(trainer: Any, resumed_from: str | None, seconds: float, world: int) -> dict:
    """The phase manifest's metrics, with the cost per optimizer step: the teacher scores (and the student
    trains on) every prompt + completion token once; the student generates the completion tokens."""
    out = {"kind": "on_policy", **run_summary(trainer, resumed_from, seconds, world)}
    hist, args = out["log_history"], trainer.args
    steps = max(trainer.state.global_step, 1)
    prompts_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    lengths = [r["completions/mean_length"] for r in hist if "completions/mean_length" in r]
    seen = trainer.state.num_input_tokens_seen
    return out | {
        "prompts": len(trainer.train_dataset),
        "prompts_per_step": prompts_per_step,
        # student forward+backward tokens = teacher forward tokens (prompt + completion, no padding)
        "teacher_forward_tokens": seen,
        "teacher_forward_tokens_per_step": seen / steps,
        "student_generated_tokens_per_step": (sum(lengths) / len(lengths) * prompts_per_step)
        if lengths
        else None,
        "wall_s_per_step": out["train_runtime_s"] / max(steps - out["resume_step"], 1),
    }
