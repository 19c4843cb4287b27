"""Fitted transforms are saved with the class they load back into; older files keep loading."""

from __future__ import annotations

import json

from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.kinds.text_lstm.transform import TextTransform
from pipelines.preprocess.transforms import load_transform, save_transform


def test_a_transform_is_saved_with_its_class_and_loads_back_equal(tmp_path):
    image = ImageTransform(8, ["a", "b"], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    save_transform(image, tmp_path / "t.json")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["class"] == "pipelines.kinds.image_cnn.transform:ImageTransform"
    assert load_transform(tmp_path / "t.json") == image


def test_a_transform_saved_before_classes_were_named_still_loads(tmp_path):
    # What preprocess wrote until transforms named their class: a "kind" instead.
    (tmp_path / "t.json").write_text(
        json.dumps(
            {
                "kind": "text",
                "vocabulary": ["<pad>", "<oov>", "film"],
                "class_names": ["neg", "pos"],
                "max_len": 4,
            }
        )
    )
    text = load_transform(tmp_path / "t.json")
    assert isinstance(text, TextTransform) and text.encode(["a film"]).tolist() == [[1, 2, 0, 0]]
