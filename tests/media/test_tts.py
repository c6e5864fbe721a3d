"""TTS with the real espeak-ng: voices, languages, safety of the text, and the cache."""

from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from callplane.media import tts
from callplane.media.player import pcm_seconds
from callplane.media.sources import SAMPLE_RATE
from callplane.media.tts import (
    CachingTts,
    EspeakProvider,
    TtsError,
    TtsTextTooLongError,
    TtsUnavailableError,
    espeak_voice,
)
from callplane.media.workers import MediaWorkers
from tests.media.test_player import rms, samples


def median_f0(pcm: bytes) -> float:
    """Median fundamental frequency of the voiced 64 ms windows (autocorrelation, 60-400 Hz)."""
    x = samples(pcm)
    win, lo, hi = 512, SAMPLE_RATE // 400, SAMPLE_RATE // 60
    f0: list[float] = []
    for i in range(0, len(x) - win, win // 2):
        seg = x[i : i + win] - x[i : i + win].mean()
        if np.sqrt(np.mean(seg**2)) < 1000:
            continue
        ac = np.correlate(seg, seg, "full")[win - 1 :]
        f0.append(SAMPLE_RATE / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


@pytest.mark.parametrize(
    ("voice", "language", "expected"),
    [
        ("man", "en", "en-us+m3"),
        ("woman", "en-US", "en-us+f3"),
        ("woman", "en-GB", "en-gb+f3"),
        ("man", "en-AU", "en-gb+m3"),
        ("man", "es", "es+m3"),
        ("man", "es-MX", "es-419+m3"),
        ("WOMAN", "fr-FR", "fr-fr+f3"),
        ("man", "fr", "fr-fr+m3"),
        ("man", "fr-CA", "fr-fr+m3"),
        ("man", "pt-BR", "pt-br+m3"),
        ("man", "pt_PT", "pt+m3"),
        ("man", "de-DE", "de+m3"),
        ("man", "it", "it+m3"),
        ("man", "zh-CN", "cmn+m3"),
        ("man", "ja-JP", "ja+m3"),
        ("alice", "en", "en-us+m3"),  # unknown voice: man (Restcomm reports 13511 and speaks as man)
        ("man", "xx-YY", "en-us+m3"),  # unknown language: English
        ("man", "", "en-us+m3"),
    ],
)
def test_rcml_voice_and_language_map_to_espeak(voice: str, language: str, expected: str) -> None:
    assert espeak_voice(voice, language) == expected


def test_every_mapped_voice_exists_in_the_installed_espeak() -> None:
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
    installed = {line.split()[1] for line in listing.splitlines()[1:]}
    assert tts._ESPEAK_VOICES <= installed
    assert set(tts._ALIASES.values()) <= installed


async def test_hello_world_is_audible_and_plausibly_long(workers: MediaWorkers) -> None:
    pcm = await EspeakProvider(workers).synthesize("hello world", "man", "en")
    assert len(pcm) % 2 == 0
    assert 0.5 <= pcm_seconds(pcm) <= 3.0
    assert rms(pcm) > 500


async def test_man_and_woman_voices_differ_in_pitch(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers)
    text = "hello world, this is a test of the voice"
    man = await provider.synthesize(text, "man", "en-US")
    woman = await provider.synthesize(text, "woman", "en-US")
    assert man != woman
    assert median_f0(woman) > 1.4 * median_f0(man)


async def test_languages_change_the_speech(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers)
    english = await provider.synthesize("uno dos tres", "man", "en")
    spanish = await provider.synthesize("uno dos tres", "man", "es")
    assert english != spanish and rms(spanish) > 500
    accented = await provider.synthesize("¿Dónde está la estación? Señor Muñoz", "woman", "es-ES")  # UTF-8 on stdin
    assert rms(accented) > 500 and 1.0 <= pcm_seconds(accented) <= 5.0


async def test_text_that_looks_like_options_is_spoken_not_obeyed(tmp_path: Path, workers: MediaWorkers) -> None:
    target = tmp_path / "pwned.wav"
    provider = EspeakProvider(workers)
    for text in (f"-w {target} hello", "--version", "--stdout"):
        pcm = await provider.synthesize(text, "man", "en")
        assert rms(pcm) > 500 and pcm_seconds(pcm) > 0.3
    assert not target.exists()


async def test_empty_text_says_nothing_without_spawning(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers)
    assert await provider.synthesize(" \n\t\x00 ", "man", "en") == b""
    assert provider.spawns == 0


async def test_length_limit(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers, max_chars=20)
    with pytest.raises(TtsTextTooLongError) as info:
        await provider.synthesize("x" * 21, "man", "en")
    assert info.value.code == 12400 and provider.spawns == 0


async def test_missing_espeak_says_tts_is_unavailable_and_how_to_fix_it(workers: MediaWorkers) -> None:
    with pytest.raises(TtsUnavailableError) as info:
        await EspeakProvider(workers, binary="/nonexistent/espeak-ng").synthesize("hi", "man", "en")
    assert str(info.value) == (
        "text-to-speech is unavailable: /nonexistent/espeak-ng is not installed or not on PATH "
        "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
    )
    assert isinstance(info.value, TtsError) and info.value.code == 12400  # the <Say> notification
    assert tts.espeak_missing("/nonexistent/espeak-ng") == str(info.value)
    assert tts.espeak_missing() is None  # the real one is installed here


async def test_cache_hits_spawn_nothing(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    workers = MediaWorkers(tmp_path, executor=pool)
    provider = EspeakProvider(workers)
    say = CachingTts(provider, workers)
    first = await say.synthesize("welcome to callplane", "woman", "en-US")
    again = await say.synthesize("welcome to callplane", "woman", "en-US")
    assert again == first and provider.spawns == 1
    other = await say.synthesize("welcome to callplane", "man", "en-US")  # the voice is part of the key
    assert other != first and provider.spawns == 2

    # A restarted node: same cache directory, new workers and provider, served from disk.
    workers2 = MediaWorkers(tmp_path, executor=pool)
    provider2 = EspeakProvider(workers2)
    assert await CachingTts(provider2, workers2).synthesize("welcome to callplane", "woman", "en-US") == first
    assert provider2.spawns == 0 and workers2.stats.disk_hits == 1


async def test_a_prompt_in_memory_is_had_without_awaiting(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers)
    say = CachingTts(provider, workers)
    assert say.cached("press one", "man", "en") is None  # never spoken: await synthesize
    pcm = await say.synthesize("press one", "man", "en")
    assert say.cached("press one", "man", "en") is pcm and provider.spawns == 1
    assert say.cached("press one", "woman", "en") is None and say.cached("press two", "man", "en") is None
    assert say.cache_key("press one", "man", "en") == say.cache_key("press one", " MAN", "EN ")  # one prompt


async def test_concurrent_identical_prompts_spawn_once(workers: MediaWorkers) -> None:
    provider = EspeakProvider(workers)
    say = CachingTts(provider, workers)
    results = await asyncio.gather(*(say.synthesize("please hold", "man", "en") for _ in range(6)))
    assert len(set(results)) == 1 and provider.spawns == 1


async def test_default_tts_is_cached_espeak(workers: MediaWorkers) -> None:
    say = tts.make_default_tts(workers)
    assert isinstance(say.provider, EspeakProvider) and say.name.startswith("espeak-ng")
    assert rms(await say.synthesize("one", "man", "en")) > 500
