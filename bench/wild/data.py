"""Real inputs for the corpus, made only from what installed packages ship.

- Text: words from irq's bundled English sentences and random digit/letter strings, rendered with
  the DejaVu fonts that matplotlib ships, in several styles, colours and sizes, on plain or
  photo backgrounds (OCR recognisers, detectors and the text-orientation classifier).
- Photos: the scikit-image / scikit-learn / matplotlib photos of ``irq.zoo.photos``, split by photo
  into a calibration group and an evaluation group.
- Faces: scikit-image's ``lfw_subset`` (200 25x25 grey faces from Labeled Faces in the Wild).
- Speech: the recorded voice prompts of Debian's alsa-utils and espeak-ng's synthetic speech, with
  silence and noise between them, at 16 kHz.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from irq.zoo import photos

CAL, EVAL = "calibration", "evaluation"


def _group(split: str) -> tuple[str, ...]:
    return photos.CALIBRATION_PHOTOS if split == CAL else photos.EVAL_PHOTOS


# -- text -------------------------------------------------------------------------------------
@functools.cache
def fonts() -> tuple[Path, ...]:
    """The DejaVu TrueType fonts matplotlib installs (sans, serif, mono; plain and bold)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
             "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf")
    return tuple(folder / n for n in names if (folder / n).exists())


@functools.cache
def _words() -> tuple[str, ...]:
    text = (Path(photos.__file__).parent / "data" / "sentences.txt").read_text()
    return tuple(w.strip(".,;:!?\"'()") for w in text.split() if len(w.strip(".,;:!?\"'()")) > 1)


def random_text(rng: np.random.Generator, max_chars: int = 14) -> str:
    """A word, a pair of words, a number or a code, at most ``max_chars`` long."""
    words = _words()
    kind = rng.integers(0, 4)
    if kind == 0:
        text = str(words[rng.integers(len(words))])
    elif kind == 1:
        text = f"{words[rng.integers(len(words))]} {words[rng.integers(len(words))]}"
    elif kind == 2:
        text = str(rng.integers(0, 10 ** int(rng.integers(2, 9))))
    else:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
        text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(4, 8))))
    return text[:max_chars]


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Foreground and background colours with a clear luminance difference."""
    dark = tuple(int(v) for v in rng.integers(0, 90, 3))
    light = tuple(int(v) for v in rng.integers(170, 256, 3))
    return (dark, light) if rng.random() < 0.8 else (light, dark)


def render_line(text: str, rng: np.random.Generator, height: int = 48) -> np.ndarray:
    """One line of text as an RGB uint8 image about ``height`` pixels high, tightly cropped."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(fonts()[rng.integers(len(fonts()))]), int(height * rng.uniform(0.55, 0.8)))
    fg, bg = _colours(rng)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = int(rng.integers(3, 12)), int(rng.integers(2, 8))
    img = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), bg)
    ImageDraw.Draw(img).text((pad_x - left, pad_y - top), text, font=font, fill=fg)
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, rng.uniform(0, 6), arr.shape)  # sensor-like noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def text_lines(n: int, seed: int, height: int = 48) -> list[tuple[np.ndarray, str]]:
    """``n`` rendered lines and their texts."""
    rng = np.random.default_rng(seed)
    return [(render_line(t, rng, height), t) for t in (random_text(rng) for _ in range(n))]


def fit_line(image: np.ndarray, height: int, width: int, grey: bool = False) -> np.ndarray:
    """Resize a line image to ``height`` keeping its aspect (at most ``width``), pad right with its edge colour.

    HWC float32 in 0..255 (one channel when ``grey``).
    """
    from PIL import Image

    img = Image.fromarray(image).convert("L" if grey else "RGB")
    w = min(width, max(1, round(img.width * height / img.height)))
    arr = np.asarray(img.resize((w, height), Image.Resampling.BILINEAR), np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    edge = np.median(arr[:, -1:, :], axis=(0, 1))
    out = np.empty((height, width, arr.shape[2]), np.float32)
    out[:] = edge
    out[:, :w] = arr
    return out


def text_scene(rng: np.random.Generator, size: tuple[int, int], background: np.ndarray, lines: int) -> np.ndarray:
    """A photo background (cropped and resized to ``size`` = (H, W)) with ``lines`` text lines pasted on it."""
    from PIL import Image

    h, w = size
    scene = np.asarray(Image.fromarray(background).resize((w, h), Image.Resampling.BILINEAR)).copy()
    for _ in range(lines):
        line = render_line(random_text(rng), rng, int(rng.integers(max(16, h // 14), max(24, h // 6))))
        lh, lw = line.shape[:2]
        if lw >= w or lh >= h:
            line = line[:, : w - 2]
            lh, lw = line.shape[:2]
        top, left = int(rng.integers(0, h - lh)), int(rng.integers(0, w - lw))
        scene[top:top + lh, left:left + lw] = line
    return scene


def text_scenes(n: int, size: tuple[int, int], split: str, seed: int) -> np.ndarray:
    """``n`` scenes (N, H, W, 3) uint8 on photos of ``split``'s group, 2-6 lines each."""
    rng = np.random.default_rng(seed)
    backgrounds = photos.crops(_group(split), n, 512, seed)
    return np.stack([text_scene(rng, size, backgrounds[i], int(rng.integers(2, 7))) for i in range(n)])


# -- photos and faces ---------------------------------------------------------------------------
def photo_crops(n: int, size: int, split: str, seed: int = 0) -> np.ndarray:
    """``n`` crops (N, size, size, 3) uint8 of ``split``'s photo group."""
    return photos.crops(_group(split), n, size, seed)


def faces(n: int, size: int, split: str) -> np.ndarray:
    """Grey LFW faces (N, size, size) float32 in 0..255; the first 100 calibrate, the rest evaluate."""
    import skimage.data
    from PIL import Image

    all_faces = skimage.data.lfw_subset()  # (200, 25, 25), values in [0, 1]
    chosen = all_faces[:100] if split == CAL else all_faces[100:]
    chosen = chosen[np.arange(n) % len(chosen)]
    return np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((size, size),
                                                                                   Image.Resampling.BICUBIC),
                                np.float32) for f in chosen])


# -- speech ---------------------------------------------------------------------------------------
RATE = 16000
_ALSA = Path("/usr/share/sounds/alsa")
_SENTENCES = ("The quick brown fox jumps over the lazy dog.", "Please call me back after lunch.",
              "Quantization keeps the model small and fast.", "It will rain in the north tomorrow.",
              "Turn left at the second traffic light.", "Seven hundred and twenty four.")


def _read_wav(path: Path) -> np.ndarray:
    from scipy.io import wavfile

    rate, audio = wavfile.read(path)
    audio = audio.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if np.issubdtype(np.asarray(wavfile.read(path)[1]).dtype, np.integer):
        audio /= 32768.0
    if rate != RATE:
        from scipy.signal import resample_poly

        g = np.gcd(rate, RATE)
        audio = resample_poly(audio, RATE // g, rate // g).astype(np.float32)
    return audio


def speech_clips() -> list[np.ndarray]:
    """Recorded prompts (alsa-utils) and synthetic sentences (espeak-ng), 16 kHz float32 in [-1, 1].

    Returns what is installed; raises RuntimeError when neither is.
    """
    clips = [_read_wav(p) for p in sorted(_ALSA.glob("*.wav")) if p.stem != "Noise"] if _ALSA.exists() else []
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            for i, sentence in enumerate(_SENTENCES):
                wav = Path(tmp) / f"s{i}.wav"
                subprocess.run([espeak, "-w", str(wav), "-s", str(140 + 15 * i), sentence], check=True,
                               capture_output=True)
                clips.append(_read_wav(wav))
    if not clips:
        raise RuntimeError("no speech installed: apt-get install alsa-utils espeak-ng")
    return clips


def speech_stream(split: str, seconds: float, seed: int) -> np.ndarray:
    """Speech clips with silence and background noise between them, ``seconds`` long.

    Calibration uses the even-numbered clips, evaluation the odd ones.
    """
    clips = speech_clips()
    clips = clips[0::2] if split == CAL else clips[1::2]
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < seconds * RATE:
        gap = rng.normal(0, rng.uniform(0.001, 0.01), int(rng.uniform(0.2, 1.2) * RATE)).astype(np.float32)
        clip = clips[int(rng.integers(len(clips)))] * np.float32(rng.uniform(0.3, 1.0))
        parts += [gap, clip + rng.normal(0, 0.003, clip.shape).astype(np.float32)]
        total += len(gap) + len(clip)
    return np.clip(np.concatenate(parts)[: int(seconds * RATE)], -1, 1).astype(np.float32)
