"""Speech in other languages than English, for the language-detection tests and benchmarks.

``es.m4a`` (committed) is the Spanish of speech-1's think-aloud, spoken by espeak-ng; ``python -m
sandbox.media.lang.generate`` regenerates it. espeak-ng is needed only for that and for
``bench.language``, never at test time.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

LANG_DIR = Path(__file__).resolve().parent
WORDS_PER_MINUTE = 150

# file name -> (Whisper language code, espeak-ng voice, what is said)
CLIPS = {
    "es.m4a": (
        "es",
        "es",
        "Vale, estoy en la página de pago. Veo mi carrito con dos productos y el precio total abajo. "
        "Voy a pulsar el botón azul para continuar.",
    ),
}


def speak(voice: str, text: str, out: Path) -> Path:
    """``text`` spoken by espeak-ng's ``voice`` into the WAV file ``out`` (22,050 Hz mono)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is needed to make speech: apt-get install espeak-ng")
    subprocess.run([exe, "-v", voice, "-s", str(WORDS_PER_MINUTE), "-w", str(out), text], check=True)
    with wave.open(str(out), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth()) != (1, 2):
            raise RuntimeError(f"unexpected espeak-ng output format in {out}")
    return out
