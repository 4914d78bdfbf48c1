"""transformers `generate`: no engine start-up cost, so the fastest teacher for tiny CPU runs and tests."""

from __future__ import annotations

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines import formats
from distill.engines.base import (
    Completion,
    EngineConfig,
    Request,
    SamplingConfig,
    local_model_path,
    local_tokenizer_path,
)
from distill.engines.chat import render, template_kwargs


class HFEngine:
    def __init__(self, cfg: EngineConfig, model: ModelRef, paths: Paths):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.hf_threads:
            torch.set_num_threads(cfg.hf_threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(
            local_tokenizer_path(model, paths),
            revision=None if model.tokenizer else model.revision,  # a hub model's own tokenizer, same rev
            trust_remote_code=model.trust_remote_code,
        )
        if model.chat_template:
            self.tokenizer.chat_template = model.chat_template
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            local_model_path(model, paths),
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=model.trust_remote_code,
            revision=model.revision,
        ).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        )
        self.enable_thinking = model.enable_thinking
        self.format = formats.resolve(
            model.reasoning_format, self.tokenizer, {"enable_thinking": model.enable_thinking}
        )

    def _one(self, r: Request, sampling: SamplingConfig) -> list[Completion]:
        torch = self.torch
        prompt = render(self.tokenizer, r.messages, self.enable_thinking, template_kwargs(sampling))
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        plen = ids["input_ids"].shape[1]
        torch.manual_seed(r.seed)
        sample = sampling.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                **ids,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=sampling.top_k if sample and sampling.top_k > 0 else None,
                max_new_tokens=sampling.max_tokens,
                num_return_sequences=r.n,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad_id,
            )
        comps = []
        for seq in out[:, plen:].tolist():
            end = next((i for i, t in enumerate(seq) if t in self.eos_ids), None)
            toks = seq if end is None else seq[: end + 1]  # vLLM counts the EOS token too
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            finish = "length" if end is None else "stop"
            comps.append(formats.completion(self.format, text, finish, plen, toks, self.tokenizer))
        return comps

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return [self._one(r, sampling) for r in requests]

    def close(self) -> None:
        del self.model
