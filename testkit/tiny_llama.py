"""A tiny random Llama with a tokenizer trained on given texts: a stand-in for a pretrained model, in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from thresher.train.data import FALLBACK_CHAT_TEMPLATE

CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(path: Path, texts: list[str], **shape) -> Path:
    """A random 2-layer Llama (hidden 64, tied embeddings; ``shape`` overrides these ``LlamaConfig`` fields) and a
    byte-level BPE tokenizer (2,000 tokens) trained on ``texts``, saved together in ``path`` like a pretrained
    checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.train_from_iterator(
        texts + [FALLBACK_CHAT_TEMPLATE + CHATML],
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            **{
                **dict(
                    vocab_size=len(tokenizer),
                    hidden_size=64,
                    intermediate_size=128,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                    max_position_embeddings=512,
                    tie_word_embeddings=True,
                    bos_token_id=None,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                ),
                **shape,
            }
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
