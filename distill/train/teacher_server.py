"""The on-policy teacher as a vLLM server, for a teacher too large to sit beside the student on every rank.

`stage.per_phase.<phase>.teacher_server.base_url=http://teacher:8000` makes the phase a TRL 1.16
`trl.experimental.server_distillation.ServerDistillationTrainer`: the student samples as before, and the
teacher's log-probabilities of each sampled sequence come from a plain `vllm serve <teacher>` (no TRL server
script) through `POST /v1/completions` with the token ids as the prompt, `max_tokens: 1` and
`prompt_logprobs: top_k`; every rank asks for its own micro-batch.

Why this path and not distill's openai engine: the loss needs the teacher's log-probability of the student's
exact tokens, position by position. The openai engine is a chat-completions client (text in, text out): the
server would re-tokenize text, and it has no prompt-logprobs request. TRL's client sends token ids and aligns
the answer with the student's completion, and the trainer inherits everything else of the local-teacher
phase (generation, buffering, metrics, checkpoints), so the two paths differ only in the teacher.

What reaches the loss is not what the local teacher gives, and it cannot be over HTTP (a full distribution
is 151,936 numbers per position for Qwen3): vLLM returns the top `top_k` log-probs per position (capped by
the server's `--max-logprobs`, default 20) plus the log-prob of the token actually there. With `add_tail`
(the default), TRL's loss at completion position t, sampled token x_t, is the divergence between the two
(k+1)-point distributions "each support token, then everything else":
- beta = 1 (reverse KL, the default): support {x_t}; the loss is the binary KL
  KL(Bern(p_s(x_t)) || Bern(p_t(x_t))). It is exact for that coarse-graining, a lower bound of the
  full-vocabulary reverse KL (coarse-graining never increases a KL), and its gradient flows only through
  the student's probability of the token it sampled. TRL allows top_k = 1 only for beta > 0.
- 0 < beta < 1 (JSD): support {teacher's top-1, x_t}.
- beta = 0 (forward KL): support the teacher's top-k; top_k up to the server's `--max-logprobs`.
vLLM computes prompt log-probs from the raw logits (its `logprobs_mode` note: prompt tokens do not go
through the sampling processors), so the request's temperature does not reach them: the phase refuses a
temperature other than 1 with a server teacher rather than compare a tempered student with an untempered
teacher. The loss is normalised per micro-batch (TRL: `batchmean`, then / grad_accum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING


@dataclass
class TeacherServer:
    """Where the phase's teacher log-probs come from (None on the phase: the teacher sits beside the student).
    The server must serve the run's `teacher` (its tokenizer is the one checked against the student's)."""

    base_url: str = MISSING  # the server root, e.g. http://teacher:8000 (a trailing /v1 is dropped)
    top_k: int = 1  # teacher log-probs per position; beta > 0: 1 (TRL); beta 0: up to --max-logprobs
    add_tail: bool = True  # the "everything else" bucket; without it the support is renormalised


# Where the server is, not what the loss is: not in the phase key (a moved server resumes the phase).
NOT_IN_KEY = ("base_url",)


def root_url(base_url: str) -> str:
    """TRL's client appends /v1/... itself; distill's openai engine takes the /v1 root: accept both."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


def check(spec: dict[str, Any], where: str) -> None:
    """The settings TRL's server path can honour, refused at config time (TRL would refuse beta/top_k only
    on the ranks, and would silently compare a tempered student with an untempered teacher)."""
    server = spec["teacher_server"]
    if not str(server.get("base_url") or "").startswith(("http://", "https://")):
        raise ValueError(
            f"{where}.teacher_server.base_url={server.get('base_url')!r}: an http(s) URL is needed"
        )
    k = server["top_k"]
    if spec["beta"] > 0 and k != 1:
        raise ValueError(
            f"{where}.teacher_server.top_k={k} with beta={spec['beta']}: TRL's server path scores the sampled "
            "token only (top_k 1) when beta > 0; set top_k=1, or beta=0 (forward KL over the teacher's top-k)"
        )
    if k < 1:
        raise ValueError(
            f"{where}.teacher_server.top_k={k}: must be >= 1 (a server gives no full vocabulary)"
        )
    if not server["add_tail"] and (spec["beta"] == 1 or k == 1 and spec["beta"] == 0):
        raise ValueError(
            f"{where}.teacher_server.add_tail=false with beta={spec['beta']}, top_k={k}: a one-token support "
            "renormalised is probability 1 for both models, so the loss would be 0 at every token"
        )
    if spec["temperature"] != 1.0:
        raise ValueError(
            f"{where}.temperature={spec['temperature']}: with teacher_server the teacher's log-probs are vLLM's "
            "prompt log-probs, which are computed at temperature 1 whatever the request says; use 1.0"
        )


def keyed(server: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of the server settings that changes what the phase trains (the phase key's view)."""
    return None if server is None else {k: v for k, v in server.items() if k not in NOT_IN_KEY}


def config_class_and_kwargs(op: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """(DistillationConfig or ServerDistillationConfig, the extra keyword arguments of the latter)."""
    server = op.get("teacher_server")
    if not server:
        from trl import DistillationConfig

        return DistillationConfig, {}
    from trl.experimental.server_distillation import ServerDistillationConfig

    return ServerDistillationConfig, {
        "teacher_model_server_url": root_url(server["base_url"]),
        "loss_top_k": server["top_k"],
        "loss_add_tail": server["add_tail"],
        "reverse_kl_top_1_mode": "sampled",  # the only mode a server can score
    }


def build_trainer(model: Any, args: Any, prompts: Any, tok: Any) -> Any:
    """TRL's server trainer (no teacher loaded here); each rank's client waits up to 60 s for /health."""
    from trl.experimental.server_distillation import ServerDistillationTrainer

    return ServerDistillationTrainer(model=model, args=args, train_dataset=prompts, processing_class=tok)
