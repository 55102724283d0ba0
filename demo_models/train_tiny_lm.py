"""Train the tiny Llama-style demo LM (demo_models/tiny-llama/) — the transformer case out of the box.

    pip install -e '.[hf]' && python demo_models/train_tiny_lm.py     # about a minute on 2 cores

A byte-level BPE tokenizer (2,048 tokens) and a LlamaForCausalLM (hidden 64, 2 layers, 4 heads,
untied embeddings, 262k parameters) trained for a fixed number of seeded AdamW steps on the first
80 % of CPython's `pydoc_data.topics` (the reference manual's prose, present in every Python
install; topics in sorted order). The built-in hf-causal-lm evaluator reads its windows from the
last 20 %, so what it scores is held out. Fixed steps, not a time budget: the same model on any
machine (up to float reductions across thread counts).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.evaluate.hf import TEXT_OFFSET, default_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "tiny-llama"
VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE = 2048, 64, 2, 4, 256
STEPS, BATCH, CONTEXT, LR, SEED = 300, 32, 128, 1e-2, 0


def main() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    text, source = default_text()
    train_text = text[:int(len(text) * TEXT_OFFSET)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = torch.tensor(fast(train_text, add_special_tokens=False)["input_ids"])
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for step in range(STEPS):
        starts = torch.randint(0, len(ids) - CONTEXT - 1, (BATCH,), generator=g)
        batch = torch.stack([ids[s:s + CONTEXT] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT)
    fast.save_pretrained(OUT)
    (OUT / "README.md").write_text(
        f"Tiny Llama-style causal LM for rmt-tui's demo: {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, trained by `demo_models/train_tiny_lm.py` ({STEPS} seeded AdamW steps, batch "
        f"{BATCH}×{CONTEXT}) on the first {TEXT_OFFSET:.0%} of {source}.\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
