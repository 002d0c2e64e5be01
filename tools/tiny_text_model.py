"""Write a tiny random-weight BERT text model folder whose vocabulary covers a data file's words.

For checks that must run a whole export / train / deploy flow fast (the aarch64 emulation job in
CI): a 2-layer, 64-wide encoder learns the shipped smart-home intents in a few epochs when its
WordPiece vocabulary holds their words.

    python tools/tiny_text_model.py OUT_FOLDER [DATA.csv ...]
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path


def build(folder: Path, texts: list[str], seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars, *(f"##{c}" for c in chars)]))
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]", model_max_length=64).save_pretrained(folder)
    return folder


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    texts = []
    for path in argv[1:]:
        with open(path, newline="", encoding="utf-8") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    print(build(Path(argv[0]), texts))


if __name__ == "__main__":
    main(sys.argv[1:])
