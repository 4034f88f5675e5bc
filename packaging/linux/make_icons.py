"""Draw the PNG icons (48, 128, 256 px) to match icons/shelf.svg. Needs Pillow.

Run once when the icon changes: python packaging/linux/make_icons.py
"""

import os

from PIL import Image, ImageDraw

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "icons")


def draw(size: int) -> Image.Image:
    scale = 4  # draw large, shrink: smooth edges
    big = size * scale
    unit = big / 256
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)

    def box(x, y, w, h, radius, colour):
        pen.rounded_rectangle([x * unit, y * unit, (x + w) * unit, (y + h) * unit],
                              radius=radius * unit, fill=colour)

    box(8, 8, 240, 240, 48, "#2f6fd6")
    box(44, 60, 30, 108, 6, "#ffffff")
    box(84, 76, 30, 92, 6, "#ffd45c")
    box(124, 52, 30, 116, 6, "#ffffff")
    leaning = Image.new("RGBA", (int(46 * unit), int(80 * unit)), (0, 0, 0, 0))
    ImageDraw.Draw(leaning).rounded_rectangle([0, 0, 46 * unit - 1, 80 * unit - 1],
                                              radius=6 * unit, fill="#9fd0ff")
    leaning = leaning.rotate(12, expand=True, resample=Image.BICUBIC)
    image.alpha_composite(leaning, (int(160 * unit), int(80 * unit)))
    box(32, 168, 192, 18, 6, "#1b3f7a")
    box(52, 186, 14, 28, 0, "#1b3f7a")
    box(190, 186, 14, 28, 0, "#1b3f7a")
    return image.resize((size, size), Image.LANCZOS)


if __name__ == "__main__":
    for size in (48, 128, 256):
        path = os.path.join(HERE, "shelf-%d.png" % size)
        draw(size).save(path)
        print("wrote", path)
