"""Train stage, fast part (in-process): loss mask, pad != eos, world-size guard, config, key chaining.

The multi-rank runs (ZeRO-2/3, resume after kill, W&B) are in test_train_dist.py; the helpers here (toy
student, synthetic TRAIN_PAIR files, fake curate manifest) are shared with it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from conftest import REPO, TOY, compose_root, hydra_ctx, stage_config
from distill.core.io import write_rows
from distill.core.manifest import Manifest
from distill.core.schemas import TRAIN_PAIR

PROMPT = "{q}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def student_dir(tmp_factory: pytest.TempPathFactory) -> Path:
    """The toy student; until the toy world is built, an identical-architecture one from its builder."""
    if (TOY / "student" / "config.json").exists():
        return TOY / "student"
    out = tmp_factory.getbasetemp() / "fallback-student"
    if not (out / "config.json").exists():
        sys.path.insert(0, str(REPO / "scripts"))
        import build_toy_world as b

        convs = [conversation(random.Random(i), 3) for i in range(200)]
        tok = b.build_tokenizer(b.tokenizer_corpus(convs))
        b.save_model_dir(b.make_model(b.STUDENT_ARCH, tok, 0), tok, out)
    return out


def conversation(rng: random.Random, terms: int) -> list[dict]:
    """A toy chain-sum conversation in the exact shape curate writes (think block, boxed answer)."""
    nums = [rng.randint(1, 60) for _ in range(terms)]
    ops = [rng.choice("+-") for _ in range(terms - 1)]
    acc, lines = nums[0], []
    for op, n in zip(ops, nums[1:], strict=True):
        new = acc + n if op == "+" else acc - n
        lines.append(f"{acc} {op} {n} = {new}")
        acc = new
    expr = str(nums[0]) + "".join(f" {o} {n}" for o, n in zip(ops, nums[1:], strict=True))
    answer = "<think>\n" + "\n".join(lines) + f"\n</think>\n\nThe answer is \\boxed{{{acc}}}."
    return [
        {"role": "user", "content": PROMPT.format(q=f"What is {expr}?")},
        {"role": "assistant", "content": answer},
    ]


def fake_curate(run_dir: Path, rows_per_phase: int = 64) -> dict[str, Path]:
    """TRAIN_PAIR files for phase1 (short chains) and phase2 (long) plus curate's manifest pointing at them."""
    cur = run_dir / "curate"
    files = {}
    for phase, terms in (("phase1", 2), ("phase2", 4)):
        rng = random.Random(phase)
        rows = [
            {
                "messages": conversation(rng, terms),
                "problem_id": f"{phase}-{i}",
                "sample_idx": 0,
                "phase": phase,
                "pass_rate": 0.75,
                "completion_tokens": 20 * terms,
            }
            for i in range(rows_per_phase)
        ]
        files[phase] = cur / f"{phase}.jsonl"
        write_rows(files[phase], rows, TRAIN_PAIR)
    outputs = {k: {"path": str(v), "rows": rows_per_phase} for k, v in files.items()}
    Manifest(stage="curate", key="fake-curate-0001", config={}, outputs=outputs).write(cur)
    return files


def worker_plan(student: Path, train_file: Path, out: Path, **hparams) -> dict:
    """A phase plan as the driver writes it (the stage's own builder), for in-process use of the worker."""
    from distill.train.stage import default_hparams
    from distill.train.stage import worker_plan as build

    h = {
        "epochs": 1,
        "lr": 1e-3,
        "warmup_ratio": 0.0,
        "per_device_batch_size": 2,
        "max_length": 256,
        "packing": False,
        "padding_free": False,
        "attn_implementation": "sdpa",
        "logging_steps": 1,
        "save_steps": 100,
        "save_total_limit": 1,
        "progress": False,
    } | hparams
    return build(phase="phase1", init_model=str(student), train_file=train_file, output_dir=out,
                 hparams=default_hparams(**h), wandb={"enabled": False, "name": "t"})  # fmt: skip


@pytest.fixture(scope="module")
def trainer_factory(tmp_path_factory):
    """Builds the real SFTTrainer of the stage in this process (world 1), for inspecting its labels."""
    from accelerate.state import AcceleratorState, PartialState

    from distill.train.worker import build_trainer, init_distributed

    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("train-unit")
    files = fake_curate(root, rows_per_phase=8)

    def make(**hparams):
        plan = worker_plan(student, files["phase1"], root / "out", **hparams)
        init_distributed(plan)
        return build_trainer(plan)

    make.files, make.student, make.cache = files, student, root / "out" / "data_cache"
    yield make
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_loss_mask_covers_think_answer_and_eot_only(trainer_factory):
    trainer = trainer_factory(packing=False)
    tok = trainer.processing_class
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    masked = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == -100])
    # exactly the assistant turn: <think> ... </think>, the answer, the end-of-turn token
    assert trained.startswith("<think>\n") and "\n</think>\n\nThe answer is \\boxed{" in trained
    assert trained.endswith("}.<|im_end|>"), trained
    assert "Please reason step by step" not in trained and "<|im_start|>" not in trained
    # nothing of the prompt is trained; the trained span is one contiguous block
    assert masked.startswith("<|im_start|>user\nWhat is") and masked.rstrip("\n").endswith(
        "<|im_start|>assistant"
    )
    first = next(i for i, lab in enumerate(labels) if lab != -100)
    last = max(i for i, lab in enumerate(labels) if lab != -100)
    assert all(lab != -100 for lab in labels[first : last + 1])
    assert ids[last] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_pad_differs_from_eos_and_packing_restarts_positions(trainer_factory):
    trainer = trainer_factory(packing=True, per_device_batch_size=2)
    tok = trainer.processing_class
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert trainer.model.config.eos_token_id == tok.eos_token_id
    assert trainer.padding_free
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one flat row
    pos = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    assert len(starts) >= 2 and starts[0] == 0  # several conversations, positions restart at each
    real = (batch["input_ids"] != tok.pad_token_id).float().mean().item()
    assert real == 1.0


def test_padding_free_without_packing_flattens_each_batch(trainer_factory):
    trainer = trainer_factory(packing=False, padding_free=True, per_device_batch_size=3)
    assert trainer.padding_free and not trainer.args.packing
    lens = sorted(len(x) for x in trainer.train_dataset["input_ids"])
    assert len(lens) == 8  # rows stay rows: the sampler draws them afresh each epoch
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    pos = batch["position_ids"][0].tolist()
    assert sum(p == 0 for p in pos) == 3  # exactly the batch's 3 conversations, no padding
    assert (batch["input_ids"] != trainer.processing_class.pad_token_id).all()


def test_padding_free_rows_over_max_length_are_an_error_not_a_cut(trainer_factory):
    from distill.train.worker import prepare_tokenizer

    tok = prepare_tokenizer(str(trainer_factory.student), "<|im_end|>", "<|endoftext|>")
    rows = [json.loads(line) for line in trainer_factory.files["phase1"].read_text().splitlines()]
    lens = [len(tok.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]
    longest = lens.index(max(lens))
    limit = max(
        n for n in lens if n < max(lens)
    )  # only the longest row is over: its row in the file is named
    want = rf"phase1\.jsonl: row {longest + 1} has {max(lens)} tokens > max_length={limit}"
    with pytest.raises(ValueError, match=want):
        trainer_factory(packing=False, padding_free=True, max_length=limit)


def test_cpu_loss_scores_only_labelled_positions_with_the_same_loss(trainer_factory, monkeypatch):
    import torch
    import trl.trainer.utils as trl_utils

    trainer = trainer_factory(packing=True, per_device_batch_size=2)
    batch = next(iter(trainer.get_train_dataloader()))
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    fast = trainer.compute_loss(trainer.model, dict(batch))  # the stage's (instance-wrapped) loss
    plain = type(trainer).compute_loss(trainer, trainer.model, dict(batch))  # TRL's own
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert rows == [labelled, batch["input_ids"].numel() - 1] and labelled < rows[1] / 2
    assert torch.allclose(fast, plain, atol=1e-6), (fast, plain)
    assert trl_utils._use_triton(torch.device("cpu")) is False  # the switch is restored after the loss


def test_pad_equal_to_eos_is_refused(tmp_path_factory):
    from distill.train.worker import prepare_tokenizer

    with pytest.raises(ValueError, match="never learn to stop"):
        prepare_tokenizer(str(student_dir(tmp_path_factory)), "<|im_end|>", "<|im_end|>")


def test_world_size_guard():
    from distill.train.worker import check_world_size

    check_world_size(1, 1)
    with pytest.raises(RuntimeError, match="world size mismatch"):
        check_world_size(1, 2)  # e.g. `accelerate launch --cpu --num_processes 2` started one process


def test_config_and_launch_command():
    from distill.cluster.launch import LaunchSpec, accelerate_command, launch_env
    from distill.pipeline import resolve_stage

    with hydra_ctx():
        root = compose_root([])
        assert "train" in root.pipeline
        cfg = resolve_stage(root, "train", ["stage.strategy=zero3"])
    assert cfg.stage.name == "train" and list(cfg.stage.phases) == ["phase1", "phase2", "onpolicy"]
    assert cfg.stage.strategy == "zero3" and cfg.stage.num_processes == 2
    cmd = accelerate_command(LaunchSpec(num_processes=2, strategy="zero3"), "distill.train.worker", ["--x"])
    assert cmd[-3:] == ["--module", "distill.train.worker", "--x"] and "--multi_gpu" in cmd
    assert "--multi_gpu" not in accelerate_command(LaunchSpec(num_processes=1), "m", [])
    env = launch_env(LaunchSpec(strategy="zero3"), {})
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and "ACCELERATE_USE_CPU" not in env
    env = launch_env(LaunchSpec(strategy="ddp"), {})
    assert env["ACCELERATE_USE_CPU"] == "true" and env["OMP_NUM_THREADS"] == "1"
    for name in ("zero1", "zero2", "zero3"):
        ds = json.loads((REPO / "conf" / "deepspeed" / f"{name}.json").read_text())
        assert ds["zero_optimization"]["stage"] == int(name[-1])
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(ValueError, match="valid"):
        LaunchSpec(strategy="zero4")


def test_experiment_recipes():
    """The production numbers (ReasonLite) and the toy's are where the issue says they are."""
    rl = stage_config("train", ["experiment=reasonlite"])
    toy = stage_config("train", ["experiment=toy"])
    s = rl.stage
    assert (s.lr, s.min_lr_rate, s.warmup_ratio, s.epochs, s.max_length) == (3e-4, 0.1, 0.03, 8, 32768)
    assert s.strategy == "zero1" and s.bf16 and s.use_liger_kernel and rl.student.path == "Qwen/Qwen3-0.6B"
    assert "train" in rl.pipeline and "train" in toy.pipeline
    assert toy.stage.num_processes == 2 and toy.stage.packing


def test_varlen_sdpa_matches_masked_sdpa(tmp_path_factory):
    """The per-document attention used on CPU gives SDPA's packed-mask loss and gradients, not cross-talk."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.train.attention import register_varlen_sdpa

    register_varlen_sdpa()
    student = student_dir(tmp_path_factory)
    lens = [9, 14, 5, 11]
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (1, sum(lens)))
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    kw = {"position_ids": pos, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "use_cache": False}
    no_cu = {"position_ids": pos, "use_cache": False}  # documents from the position restarts alone
    res = {}
    for impl, kwargs in (("sdpa", kw), ("varlen_sdpa", kw), ("varlen_pos", no_cu)):
        model = AutoModelForCausalLM.from_pretrained(
            student, attn_implementation=impl.replace("_pos", "_sdpa")
        )
        out = model(input_ids=ids, labels=ids, **kwargs)
        out.loss.backward()
        res[impl] = (out.loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone(), out.logits)
    for impl in ("varlen_sdpa", "varlen_pos"):
        assert abs(res["sdpa"][0] - res[impl][0]) < 1e-5
        assert torch.allclose(res["sdpa"][1], res[impl][1], atol=1e-5)
    alone = AutoModelForCausalLM.from_pretrained(student, attn_implementation="eager")(
        input_ids=ids[:, 9:23]
    ).logits
    assert torch.allclose(res["varlen_sdpa"][2][:, 9:23], alone, atol=1e-4)  # document 2 sees only itself


def test_packed_rows_over_max_length_are_an_error_not_a_cut(trainer_factory):
    """Packing (BFD) would cut a longer row, losing its answer and end-of-turn: train refuses instead."""
    with pytest.raises(ValueError, match=r"phase1\.jsonl: row \d+ has \d+ tokens > max_length=20"):
        trainer_factory(packing=True, padding_free=True, max_length=20)


def test_map_writes_are_bounded_by_tokens_and_leave_the_rows_alone(trainer_factory, monkeypatch):
    """TRL's per-row tokenising and labelling maps buffer their rows as Python lists until a write; at
    datasets' default 1,000 rows that is GBs per map process for long traces. The stage sizes a write from
    the rows' mean length (MAP_WRITER_TOKENS' worth): forced to 2 rows here, every map the trainer runs
    writes at most 2 rows at a time, and the prepared rows are those of TRL's default write size."""
    import pyarrow as pa

    from distill.train import worker

    assert worker.writer_rows(100) == 1000 and worker.writer_rows(10_000) == 100
    assert worker.writer_rows(5e6) == 1 and worker.writer_rows(0) == 1000
    default = trainer_factory(packing=True, per_device_batch_size=2)
    tok, rows = default.processing_class, worker.load_rows(str(trainer_factory.files["phase1"]))
    lengths = [len(tok.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]
    before = set(trainer_factory.cache.rglob("cache-*.arrow"))
    means = []
    monkeypatch.setattr(worker, "writer_rows", lambda mean_tokens: means.append(mean_tokens) or 2)
    bounded = trainer_factory(packing=True, per_device_batch_size=2)
    assert means == [pytest.approx(sum(lengths) / len(lengths))]
    written = set(trainer_factory.cache.rglob("cache-*.arrow")) - before
    assert written, "the bounded build wrote no map cache of its own"
    batches = []
    for f in written:  # the maps' outputs (a shuffle's index file is not a map's)
        with pa.memory_map(str(f)) as src:
            stream = pa.ipc.open_stream(src)
            if "input_ids" in stream.schema.names:
                batches += [b.num_rows for b in stream]
    assert max(batches) <= 2 and sum(batches) > 2, batches
    assert bounded.train_dataset[:] == default.train_dataset[:]


def test_the_bounded_preparation_packs_trls_rows(trainer_factory, monkeypatch):
    """The trainer's packed rows with distill's packing and page release around TRL's preparation are
    the rows TRL prepares on its own, and the packing that ran was distill's."""
    import contextlib

    from distill.train import packing, worker

    calls = []
    pack = packing.pack_bfd
    monkeypatch.setattr(packing, "pack_bfd", lambda *a, **k: calls.append(len(a[0])) or pack(*a, **k))
    ours = trainer_factory(packing=True, per_device_batch_size=2)
    assert calls and sum(calls) == len(worker.load_rows(str(trainer_factory.files["phase1"])))
    ran = len(calls)
    monkeypatch.setattr(worker, "bounded_preparation", lambda rows: contextlib.nullcontext())
    theirs = trainer_factory(packing=True, per_device_batch_size=2)
    assert len(calls) == ran  # TRL's own build packed with TRL's function
    assert ours.train_dataset[:] == theirs.train_dataset[:]


def test_length_check_names_the_shard_and_its_row(tmp_path):
    """The phase's rows are counted as one dataset across its shards; an offender is named by its own
    shard and its row there, not by its place in the concatenation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.train.rows import locate

    files = []
    for k, n in enumerate((3, 0, 4)):
        f = tmp_path / f"unit-{k:05d}.parquet"
        pq.write_table(pa.table({"x": list(range(n))}), f)
        files.append(str(f))
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert locate(files, 0) == (files[0], 1) and locate(files, 2) == (files[0], 3)
    assert locate(files, 3) == (files[2], 1) and locate(files, 6) == (files[2], 4)
    assert locate([str(jsonl), *files], 2) == (files[0], 1)
    with pytest.raises(IndexError):
        locate(files, 7)
