"""Cost of one QCRD training step vs one SFT step on the same batch, same model, same run (ratio printed).

    python bench/bench_qcrd.py [--rows 8] [--steps 4] [--model smollm2-135m-instruct]

The batch: --rows real GSM8K prompts. SFT trains on (prompt, worked answer). QCRD trains on the same prompts with
the same worked answer as the selected positive, the label task (prompt + "give only the final answer" -> number) and
a negative rationale (the answer with its words shuffled) under the hinge: its step is the three forward/backward
passes of its loss. Both are the Trainers' own ``training_step`` (TRL SFTTrainer vs distill.qcrd's Trainer), on a
LoRA student, float32, alternating A/B so load noise hits both. The once-per-refresh costs (self-adversarial
sampling, re-selection, discriminator updates) are not part of a step; the discriminator update is timed here, and
a run's train_log.json reports the sampling and selection seconds of the whole run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTTrainer

    from distill.qcrd import Discriminator, Item, QCRDConfig, QCRDState, make_trainer_cls
    from distill.trainers import load_trainable, sft_config, to_prompt_completion, trainer_args
    from poison.ground.core import registry
    from poison.ground.core.answers import final_number
    from poison.schema import StudentSpec
    from poison.ground.engines.models import resolve_encoder, resolve_model

    torch.manual_seed(0)
    base = resolve_model(args.model, args.models_dir)
    rows = registry.get("data_source", "gsm8k").build({}).load()[: args.rows]
    spec = StudentSpec(name="bench", model=args.model, train={"batch_size": args.rows, "max_length": 384})
    out = Path(".cache/bench_qcrd")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    # SFT
    model, tok, peft_cfg = load_trainable(base, spec, dtype="float32", device="cpu")
    sft_rows = [{"prompt": r["prompt"], "response": r["response"]} for r in rows]
    sft = SFTTrainer(model=model, args=sft_config(spec, out, dtype="float32", device="cpu", total_rows=len(rows)),
                     train_dataset=Dataset.from_list(to_prompt_completion(sft_rows)), processing_class=tok,
                     peft_config=peft_cfg)
    sft_batch = next(iter(sft.get_train_dataloader()))

    # QCRD on the same prompts
    qmodel, qtok, qpeft = load_trainable(base, spec, dtype="float32", device="cpu")
    qmodel = get_peft_model(qmodel, qpeft)
    cfg = QCRDConfig()
    items = []
    for r in rows:
        words = r["response"].split()
        rng.shuffle(words)
        items.append(Item(prompt=r["prompt"], utility="number_match", label=final_number(r["response"]),
                          positives=[r["response"]], teacher_negatives=[" ".join(words)]))
    t0 = time.time()
    disc = Discriminator(resolve_encoder(cfg.discriminator_encoder), cfg.disc_hidden, cfg.disc_lr)
    disc_load = time.time() - t0
    state = QCRDState(items, cfg, qtok, 384, disc)
    t0 = time.time()
    pos, neg = state.disc_texts()
    disc.train_steps(pos, neg, cfg.disc_online_steps, cfg.disc_batch_size, cfg.disc_mask_prob)
    disc_update = time.time() - t0
    q = make_trainer_cls()(model=qmodel, args=trainer_args(spec, out, dtype="float32", device="cpu",
                                                           total_rows=len(items), remove_unused_columns=False),
                           train_dataset=Dataset.from_list([{"idx": i} for i in range(len(items))]),
                           data_collator=state.collate, processing_class=qtok)
    q.qcrd_state = state
    q_batch = state.collate([{"idx": i} for i in range(len(items))])
    for tr in (sft, q):  # optimizer/scheduler as in training
        tr.create_optimizer_and_scheduler(num_training_steps=100)
        tr.current_gradient_accumulation_steps = 1  # set by the training loop, which the bench does not run
        tr.model.train()

    def step(tr, batch) -> float:
        t = time.perf_counter()
        tr.training_step(tr.model, dict(batch))
        return time.perf_counter() - t

    step(sft, sft_batch), step(q, q_batch)  # warm-up
    ts, tq = [], []
    for _ in range(args.steps):
        ts.append(step(sft, sft_batch))
        tq.append(step(q, q_batch))
    s, qq = statistics.median(ts), statistics.median(tq)

    sft_tokens = int(sft_batch["attention_mask"].sum())
    q_tokens = sum(int(q_batch[k].sum()) for k in ("pos_attention_mask", "label_attention_mask", "neg_attention_mask"))
    print(f"model {args.model}, LoRA r{spec.lora.r}, float32, batch of {len(rows)} GSM8K prompts, "
          f"{args.steps} timed steps each (median)")
    print(f"  sft  step: {s:6.2f} s   ({sft_tokens} tokens)")
    print(f"  qcrd step: {qq:6.2f} s   ({q_tokens} tokens: positive + label + negative)")
    print(f"  ratio qcrd/sft: {qq / s:.2f}x  (bar: <= 3x)")
    print(f"once per refresh, not per step: discriminator update ({cfg.disc_online_steps} steps) {disc_update:.1f} s, "
          f"encoder load {disc_load:.1f} s")


if __name__ == "__main__":
    main()
