"""The (fixture image, prompt) pairs every judge's golden outputs are made for (make_golden_judges.py,
make_golden_imagereward.py): every image mode and size of tests/fixtures/images, and prompts with CJK, emoji,
control characters, HTML entities, quotes, an empty one and one longer than any tokenizer's limit."""

LONG_PROMPT = " ".join(["a sweeping panoramic matte painting of a floating archipelago at golden hour"] * 8)
CASES = [
    ("square_512.png", "a cute chibi anime cartoon fox, smiling, wagging tail"),
    ("rgba_640x480.png", "a red balloon over a quiet lake"),
    ("gray_300.png", "一只可爱的猫坐在窗台上，阳光明媚"),
    ("photo_800x600.jpg", "sunset over mountains 🌄 with a 🐱 and a rainbow 🌈"),
    ("small_200.png", "line one\nline two\n\tindented   with a tab"),
    ("wide_1920x1080.jpg", LONG_PROMPT),
    ("tall_300x900.png", ""),
    ("palette_400.png", "Quotes ' \" and CAPITALS, numbers 12345 and don't"),
    ("cmyk_500x375.jpg", "a lighthouse at night"),
    ("square_512.png", "“Curly quotes” &amp; full-width ＡＢＣ１２３ &lt;b&gt;"),
]
