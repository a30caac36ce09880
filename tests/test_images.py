"""One image reader for every entry point: bit depth, EXIF orientation, truncation, pixel cap."""

import io

import numpy as np
import pytest
from PIL import Image

from socioseg.images import PIXEL_LIMIT_ENV, ImageError, read_image
from socioseg.socioreasoner import InputError, load_image
from tests.conftest import noise_image


def test_16_bit_grayscale_is_scaled_by_1_over_257_not_clipped_to_white(tmp_path):
    values = np.array([[0, 128, 129, 257 * 100, 65535, 40000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"  # what Pillow reads it as
    image = read_image(tmp_path / "deep.png")
    assert image.mode == "RGB"
    expected = [0, 0, 1, 100, 255, round(40000 / 257)]  # 128/257 = 0.498, 129/257 = 0.502
    assert np.asarray(image)[0, :, 0].tolist() == expected
    assert (np.asarray(image)[..., 0] == np.asarray(image)[..., 2]).all()


def test_float_and_32_bit_images_are_refused_with_a_reason(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ImageError, match=r"float\.tif: 32-bit float pixels have no standard"):
        read_image(tmp_path / "float.tif")


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)  # top-left red, stored 4 wide and 2 high
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.png", exif=exif)
    shown = np.asarray(read_image(tmp_path / "rotated.png"))
    assert shown.shape == (4, 2, 3)
    np.testing.assert_array_equal(shown, np.rot90(pixels, k=-1))  # numpy's own clockwise turn


def test_truncated_file_is_refused_naming_it(tmp_path):
    buffer = io.BytesIO()
    noise_image(200, 200).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.png is not a readable image \(.*truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png", str(tmp_path / "cut.png"))


def test_pixel_cap_is_checked_before_decoding_and_is_configurable(tmp_path, monkeypatch):
    noise_image(100, 60).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png: 100 x 60 pixels is over the limit of 5,999"):
        read_image(tmp_path / "big.png", max_pixels=5999)
    assert read_image(tmp_path / "big.png", max_pixels=6000).size == (100, 60)
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "1000")
    with pytest.raises(ImageError, match="--max-image-pixels") as caught:
        read_image(tmp_path / "big.png")
    assert caught.value.kind == "too-large"
    with pytest.raises(ImageError, match="over the limit"):  # PIL images too
        read_image(noise_image(100, 60))


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    # Pillow refuses images over twice its MAX_IMAGE_PIXELS as bombs, whatever our cap says;
    # lowering its limit makes a small file play the bomb.
    noise_image(100, 100).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"bomb\.png: refused as a decompression bomb") as caught:
        read_image(tmp_path / "bomb.png", max_pixels=10**9)
    assert caught.value.kind == "too-large"


def test_folder_and_missing_file_say_so(tmp_path):
    with pytest.raises(ImageError, match="is a folder, not an image file"):
        read_image(tmp_path, "--sat")
    with pytest.raises(ImageError, match=r"--sat: file not found at .*nope\.png"):
        read_image(tmp_path / "nope.png", "--sat")


def test_dataset_samples_are_read_the_same_way(tmp_path):
    from socioseg.data.dataset import load_sample_dir

    sample_dir = tmp_path / "s1"
    sample_dir.mkdir()
    Image.fromarray(np.full((8, 8), 257 * 200, np.uint16)).save(sample_dir / "sat.png")
    noise_image(8, 8).save(sample_dir / "map.png")
    mask = np.zeros((8, 8), np.uint16)
    mask[2, 3] = 1  # 1 of 65535: still foreground (the mask rule is "value > 0")
    Image.fromarray(mask).save(sample_dir / "mask.png")
    (sample_dir / "question.json").write_text('{"problem": "Park"}')
    sample = load_sample_dir(sample_dir)
    assert np.asarray(sample.sat).max() == 200 and np.asarray(sample.sat).min() == 200
    assert sample.mask.sum() == 1 and sample.mask[2, 3]
