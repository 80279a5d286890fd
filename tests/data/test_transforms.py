"""medrun/data/transforms.py: the cached resize, plain and aspect-keeping (MelaNet pads to a square first)."""
import numpy as np

from medrun.data.transforms import resize


def test_padded_resize_keeps_the_aspect_ratio():
    image = np.full((100, 200, 3), 200, dtype=np.uint8)  # a 1:2 image
    out = resize((256, 256), pad=True)(image=image)["image"]
    rows = np.flatnonzero(out[:, :, 0].max(1) > 0)
    assert out.shape == (256, 256, 3)
    assert rows.min() == 64 and rows.max() == 191  # 128 rows of content, centred between zero padding
    assert (out[:64] == 0).all() and (out[192:] == 0).all() and (out[64:192] == 200).all()
    plain = resize((256, 256))(image=image)["image"]
    assert (plain == 200).all()  # the plain resize stretches instead
