"""Image preprocessing on the device equals the Hugging Face image processor of the model folder.

The processors are transformers' own (PIL-based) ones, configured as the common checkpoints
ship them; the photograph is a real one (matplotlib's sample of Grace Hopper, 512 x 600) in
both orientations. A processor setting edgeft cannot reproduce is refused at export.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeft.data.encode import ImageEncoder
from edgeft.errors import EdgeftError


def _photographs(tmp_path: Path) -> list[Path]:
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    source = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    landscape = tmp_path / "landscape.png"
    with Image.open(source) as image:
        image.rotate(90, expand=True).crop((0, 0, 600, 333)).save(landscape)
    small = tmp_path / "small.png"  # smaller than the crop: the processor pads
    with Image.open(source) as image:
        image.resize((40, 50)).save(small)
    return [source, landscape, small]


def _processors():
    from transformers import (BitImageProcessor, ConvNextImageProcessor, EfficientNetImageProcessor,
                              MobileNetV2ImageProcessor, ViTImageProcessor)

    return {
        "ViT (google/vit-base-patch16-224)": ViTImageProcessor(size={"height": 224, "width": 224},
                                                               image_mean=[0.5] * 3, image_std=[0.5] * 3),
        "ResNet (microsoft/resnet-50: ConvNeXt's, crop_pct 0.875)": ConvNextImageProcessor(
            size={"shortest_edge": 224}, crop_pct=0.875, resample=3),
        "ConvNeXt at 384 (resized square)": ConvNextImageProcessor(size={"shortest_edge": 384}),
        "MobileNetV2 (google/mobilenet_v2_1.0_224)": MobileNetV2ImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
            image_std=[0.5] * 3),
        "BiT": BitImageProcessor(),
        "EfficientNet (google/efficientnet-b0)": EfficientNetImageProcessor(
            size={"height": 224, "width": 224}, resample=0, rescale_factor=1 / 127.5, rescale_offset=True,
            include_top=False),
        "EfficientNet, include_top and a centre crop": EfficientNetImageProcessor(
            size={"height": 256, "width": 256}, do_center_crop=True, crop_size={"height": 224, "width": 224}),
    }


@pytest.mark.parametrize("name", list(_processors()))
def test_the_device_sees_the_pixels_the_processor_gives(name, tmp_path):
    from edgeft.exporting.hf_source import image_settings

    processor = _processors()[name]
    settings = image_settings(processor, SimpleNamespace(num_channels=3), tmp_path)
    encoder = ImageEncoder({"preprocessing": {"kind": "image", **settings}})
    from PIL import Image

    for photo in _photographs(tmp_path):
        with Image.open(photo) as image:
            expected = processor(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0]
        got = encoder.load(photo)
        assert got.shape == expected.shape == (3, settings["height"], settings["width"])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{name}, {photo.name}")


def test_what_the_device_cannot_reproduce_is_an_export_error(tmp_path):
    from transformers import ConvNextImageProcessor, ViTImageProcessor

    from edgeft.exporting.hf_source import image_settings

    config = SimpleNamespace(num_channels=3)
    with pytest.raises(EdgeftError, match="does not resize"):
        image_settings(ViTImageProcessor(do_resize=False), config, tmp_path)
    with pytest.raises(EdgeftError, match="aspect ratio without a crop"):
        image_settings(ViTImageProcessor(size={"shortest_edge": 224}), config, tmp_path)
    with pytest.raises(EdgeftError, match="resizes to"):
        image_settings(ConvNextImageProcessor(size={"longest_edge": 224}), config, tmp_path)


def test_older_artifacts_keep_their_plain_resize(tmp_path):
    """A manifest written before crops were recorded resizes straight to the model's size, as it did."""
    from PIL import Image

    photo = _photographs(tmp_path)[0]
    old = {"kind": "image", "height": 16, "width": 24, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3,
           "rescale_factor": 1 / 255}
    with Image.open(photo) as image:
        expected = (np.asarray(image.convert("RGB").resize((24, 16), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(ImageEncoder({"preprocessing": old}).load(photo), expected.transpose(2, 0, 1),
                               atol=1e-6)
