"""Small random-weight models of the architectures edgeft supports, built locally (no model hub).

Shared by the tests (gradient parity, export errors) and by ``tools/support_table.py`` (the
README's support table): each builder writes a folder (or an .onnx file) that ``edgeft export``
takes as a user's model, with a config small enough to export and train in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

IMAGE = 32  # pixels: enough for a stride-32 network to keep a 1x1 map
AUDIO_RATE = 16000


def _bert_tokenizer(folder: Path) -> None:
    from conftest import _tokenizer

    _tokenizer(folder)


def _image_processor(folder: Path, kind: str) -> None:
    from transformers import (ConvNextImageProcessor, MobileNetV2ImageProcessor, ViTImageProcessor)

    if kind == "convnext":
        ConvNextImageProcessor(size={"shortest_edge": IMAGE}, crop_pct=None).save_pretrained(folder)
    elif kind == "mobilenet_v2":
        MobileNetV2ImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                  do_center_crop=True).save_pretrained(folder)
    else:
        ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}).save_pretrained(folder)


def _lively(model: "torch.nn.Module") -> "torch.nn.Module":  # noqa: F821
    """Weights that keep the signal alive through a deep random network (transformers' default
    initialisation with running statistics of 0 and 1 lets a random MobileNet output constants,
    whose gradients are all zero and prove nothing), and running statistics that are not the identity."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.8, 1.2, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / module.in_features ** 0.5)
    return model


def _image_classifier(folder: Path, seed: int, config: "transformers.PretrainedConfig", kind: str) -> Path:  # noqa: F821
    """A lively random-weight image classifier of ``config``'s architecture, with its image processor."""
    import torch
    from transformers import AutoModelForImageClassification

    torch.manual_seed(seed)
    _lively(AutoModelForImageClassification.from_config(config)).save_pretrained(folder)
    _image_processor(folder, kind)
    return folder


def resnet(folder: Path) -> Path:
    from transformers import ResNetConfig

    return _image_classifier(folder, 3, ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                                     depths=[1, 1], layer_type="basic", num_labels=3), "resnet")


def convnext(folder: Path) -> Path:
    from transformers import ConvNextConfig

    return _image_classifier(folder, 4, ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16],
                                                       depths=[1, 1], patch_size=4, num_labels=3), "convnext")


def mobilenet_v2(folder: Path) -> Path:
    from transformers import MobileNetV2Config

    return _image_classifier(folder, 5, MobileNetV2Config(num_channels=3, image_size=IMAGE, depth_multiplier=0.25,
                                                          min_depth=4, num_labels=3), "mobilenet_v2")


def deberta_v2(folder: Path) -> Path:
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(6)
    config = DebertaV2Config(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                             position_buckets=16, pos_att_type=["p2c", "c2p"], num_labels=3)
    DebertaV2ForSequenceClassification(config).save_pretrained(folder)
    _bert_tokenizer(folder)
    return folder


def _text_classifier(folder: Path, seed: int, config: "transformers.PretrainedConfig") -> Path:  # noqa: F821
    """A random-weight sequence classifier of ``config``'s architecture, with the tests' WordPiece tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    _bert_tokenizer(folder)
    return folder


_TEXT = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": 3}


def distilbert(folder: Path) -> Path:
    from transformers import DistilBertConfig

    return _text_classifier(folder, 14, DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                         max_position_embeddings=64, num_labels=3))


def roberta(folder: Path) -> Path:
    from transformers import RobertaConfig

    return _text_classifier(folder, 15, RobertaConfig(pad_token_id=0, **_TEXT))


def xlm_roberta(folder: Path) -> Path:
    from transformers import XLMRobertaConfig

    return _text_classifier(folder, 16, XLMRobertaConfig(pad_token_id=0, **_TEXT))


def electra(folder: Path) -> Path:
    from transformers import ElectraConfig

    return _text_classifier(folder, 17, ElectraConfig(embedding_size=16, **_TEXT))


def mobilebert(folder: Path) -> Path:
    from transformers import MobileBertConfig

    return _text_classifier(folder, 18, MobileBertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=2,
        max_position_embeddings=64, num_labels=3))


def efficientnet(folder: Path) -> Path:
    """EfficientNet-B0's design at a quarter width: "same"-padded depthwise convolutions and a
    ceil-mode pooling window larger than the map."""
    from transformers import EfficientNetConfig

    return _image_classifier(folder, 19, EfficientNetConfig(num_channels=3, image_size=IMAGE, width_coefficient=0.25,
                                                            depth_coefficient=0.25, hidden_dim=320, num_labels=3), "vit")


def albert(folder: Path) -> Path:
    """ALBERT: four layers that all run one shared layer's weights."""
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(13)
    config = AlbertConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=37, max_position_embeddings=64, num_labels=3)
    AlbertForSequenceClassification(config).save_pretrained(folder)
    _bert_tokenizer(folder)
    return folder


def mobilenet_v3_onnx(folder: Path) -> Path:
    """An ONNX MobileNetV3-style network (inverted residuals with squeeze-excitation, HardSwish and
    HardSigmoid), exported by torch as a user would: torchvision's mobilenet_v3 in miniature."""
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.reduce = nn.Conv2d(channels, max(channels // 4, 4), 1)
            self.expand = nn.Conv2d(max(channels // 4, 4), channels, 1)

        def forward(self, x):
            scale = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(scale))))

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            wide = cin * 4
            self.expand = nn.Sequential(nn.Conv2d(cin, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.Hardswish())
            self.depthwise = nn.Sequential(nn.Conv2d(wide, wide, 3, stride, 1, groups=wide, bias=False),
                                           nn.BatchNorm2d(wide), nn.Hardswish())
            self.se = SqueezeExcite(wide)
            self.project = nn.Sequential(nn.Conv2d(wide, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.project(self.se(self.depthwise(self.expand(x))))
            return x + y if self.residual else y

    class MobileNetV3(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
            self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2), Block(16, 16, 1))
            self.classifier = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Linear(32, 3))

        def forward(self, pixel_values):
            x = self.blocks(self.stem(pixel_values))
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(7)
    model = MobileNetV3().eval()
    for module in model.modules():  # running statistics that differ from the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mobilenet_v3.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, IMAGE, IMAGE),), str(path), input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def _wav2vec2_config(config_class: type, **extra: object) -> object:
    """A two-layer Wav2Vec2-family config: three convolutions (stride 80, 200 frames per second)."""
    return config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4),
                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_labels=3,
                        classifier_proj_size=16, vocab_size=12, **extra)


def wav2vec2(folder: Path, attention_mask: bool = False) -> Path:
    """Wav2Vec2 for sequence classification; with ``attention_mask`` its extractor returns one (as
    wav2vec2-large-lv60's and WavLM's do), so the model takes it as an input."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(8)
    extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if attention_mask else {}
    Wav2Vec2ForSequenceClassification(_wav2vec2_config(Wav2Vec2Config, **extra)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, return_attention_mask=attention_mask).save_pretrained(folder)
    return folder


def hubert(folder: Path) -> Path:
    import torch
    from transformers import HubertConfig, HubertForSequenceClassification, Wav2Vec2FeatureExtractor

    torch.manual_seed(9)
    HubertForSequenceClassification(_wav2vec2_config(HubertConfig)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE).save_pretrained(folder)
    return folder


def whisper(folder: Path) -> Path:
    """Whisper's encoder with a classification head, reading 1 s windows (100 frames) instead of
    30 s, so tests stay fast; the recipe is Whisper's own."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    torch.manual_seed(10)
    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                           max_source_positions=50, num_labels=3, classifier_proj_size=16, vocab_size=100)
    WhisperForAudioClassification(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(folder)
    return folder


def audio_spectrogram_transformer(folder: Path) -> Path:
    """AST reading 100 frames (1 s) of a 128-bin Kaldi filter bank, in 16x16 patches."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(12)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=16,
                       frequency_stride=10, time_stride=10, max_length=100, num_mel_bins=128, num_labels=3)
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(max_length=100, num_mel_bins=128).save_pretrained(folder)
    return folder


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "DistilBERT": distilbert, "RoBERTa": roberta, "XLM-R": xlm_roberta, "ELECTRA": electra, "MobileBERT": mobilebert,
    "DeBERTa-v2": deberta_v2, "ALBERT": albert,
    "ResNet": resnet, "ConvNeXt": convnext, "MobileNetV2": mobilenet_v2, "EfficientNet": efficientnet,
    "MobileNetV3 (ONNX)": mobilenet_v3_onnx, "Wav2Vec2": wav2vec2, "HuBERT": hubert, "Whisper encoder": whisper,
    "AST": audio_spectrogram_transformer,
}
TEXT_MODELS = ("DistilBERT", "RoBERTa", "XLM-R", "ELECTRA", "MobileBERT", "DeBERTa-v2", "ALBERT")
TASKS = {name: "text classification" if name in TEXT_MODELS else
         "audio classification" if name in ("Wav2Vec2", "HuBERT", "Whisper encoder", "AST") else "image classification"
         for name in BUILDERS}
