"""A tiny random Llama model made locally in about a second (no download), for running the real
vLLM engine in tests: a byte-level BPE tokenizer trained with `tokenizers` (vocabulary 512) and a
random LlamaConfig (hidden 64, 2 layers, 1 head of size 64; vLLM's CPU attention needs head size
32, 64, 80, ...). Its answers are nonsense, which is the point: whatever it says, the service
must still answer with valid category sets."""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "You are the planner of a video recommender. Categories: A. Action B. Comedy C. Drama",
    "This session: Step 1: liked «Toy Story (1995)» (Comedy); skipped Drama, Action",
    "Which category should come next? Answer with one letter. A B C D E F G H I J K L M N O P Q R S T",
    "Advice for the next session: favour Comedy and avoid repeating Drama. [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_start|>assistant\n",
] * 20


def make_tiny_llama(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
                         bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    return folder
