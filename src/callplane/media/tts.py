"""Text to speech for ``<Say>``: a provider interface, the espeak-ng provider and a caching wrapper.

A provider turns ``(text, voice, language)`` into 8 kHz s16le mono PCM. RCML values: ``voice`` is ``man`` or
``woman`` (anything else is spoken as ``man``; the RCML layer reports 13511), ``language`` is a tag such as
``en``, ``en-US``, ``es``, ``fr-FR`` or ``pt-BR`` (unknown tags fall back to English, as Restcomm does).

:class:`EspeakProvider` runs espeak-ng as a subprocess (no shell; the text goes in on stdin, so a text that
starts with ``-`` is never read as an option) and resamples its 22.05 kHz WAV in the worker pool.
:class:`CachingTts` puts any provider behind the PCM cache and single-flight of
:class:`~callplane.media.workers.MediaWorkers`, keyed by (provider, text, voice, language).
"""

from __future__ import annotations

import shutil
from typing import Protocol

from callplane.media import player
from callplane.media.player import PlaybackError
from callplane.media.workers import MediaWorkers, content_key

__all__ = [
    "DEFAULT_MAX_CHARS",
    "KEY_MEMO",
    "CachingTts",
    "EspeakProvider",
    "TtsError",
    "TtsProvider",
    "TtsTextTooLongError",
    "TtsUnavailableError",
    "espeak_missing",
    "espeak_voice",
    "make_default_tts",
]

#: Twilio and Restcomm cap ``<Say>`` text at 4096 characters.
DEFAULT_MAX_CHARS = 4096


class TtsError(PlaybackError):
    """Synthesis failed (Restcomm notification 12400, prompt error)."""


class TtsTextTooLongError(TtsError):
    """The text is longer than the provider accepts."""


class TtsUnavailableError(TtsError):
    """The TTS engine is not installed on this node: every ``<Say>`` fails until it is."""


def espeak_missing(binary: str = "espeak-ng") -> str | None:
    """Why espeak-ng cannot run here (a sentence that says how to fix it), or None when it can.

    A file-system look-up: call it at start-up or on a failure path, not per prompt on the event loop.
    """
    if shutil.which(binary) is not None:
        return None
    return (
        f"text-to-speech is unavailable: {binary} is not installed or not on PATH "
        "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
    )


class TtsProvider(Protocol):
    """Something that speaks. ``name`` identifies the engine (and its settings) in cache keys."""

    @property
    def name(self) -> str: ...

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        """PCM, 8 kHz mono s16le; empty for text with nothing to say."""
        ...


# espeak-ng 1.51 voice names (``espeak-ng --voices``) that a language tag may name directly.
_ESPEAK_VOICES = frozenset(
    "af am an ar as az ba be bg bn bpy bs ca cmn cs cv cy da de el en-029 en-gb en-gb-scotland en-gb-x-gbclan "
    "en-gb-x-gbcwmd en-gb-x-rp en-us en-us-nyc eo es es-419 et eu fa fi fr-be fr-ch fr-fr ga gd gn grc gu hak "
    "haw he hi hr ht hu hy hyw ia id io is it ja jbo ka kk kl kn ko kok ku ky la lb lfn lt ltg lv mi mk ml mr "
    "ms mt my nb nci ne nl nog om or pa pap pl pt pt-br py qu quc ro ru sd shn si sk sl smj sq sr sv sw ta te "
    "th tk tn tr tt ug uk ur uz vi yue".split()
)
# Tags whose espeak voice has another name, and bare languages whose default is a regional voice.
_ALIASES = {
    "en": "en-us",
    "en-au": "en-gb",
    "en-ca": "en-us",
    "en-ie": "en-gb",
    "en-in": "en-gb",
    "en-nz": "en-gb",
    "en-za": "en-gb",
    "en-uk": "en-gb",
    "es-es": "es",
    "es-mx": "es-419",
    "es-us": "es-419",
    "es-ar": "es-419",
    "es-co": "es-419",
    "es-cl": "es-419",
    "fr": "fr-fr",
    "fr-ca": "fr-fr",
    "pt-pt": "pt",
    "zh": "cmn",
    "zh-cn": "cmn",
    "zh-tw": "cmn",
    "zh-hk": "yue",
    "no": "nb",
    "nn": "nb",
    "iw": "he",
    "in": "id",
}
_VARIANTS = {"man": "m3", "woman": "f3"}
_FALLBACK = "en-us"


def espeak_voice(voice: str, language: str) -> str:
    """The espeak-ng ``-v`` argument for an RCML voice and language: ``en-US``/``woman`` -> ``en-us+f3``.

    Lookup order: the whole tag, an alias for it, its primary language, an alias for that, then English.
    """
    tag = language.strip().lower().replace("_", "-")
    primary = tag.split("-", 1)[0]
    name = _FALLBACK
    for candidate in (tag, primary):
        if candidate in _ALIASES:
            name = _ALIASES[candidate]
            break
        if candidate in _ESPEAK_VOICES:
            name = candidate
            break
    variant = _VARIANTS.get(voice.strip().lower(), _VARIANTS["man"])
    return f"{name}+{variant}"


def _clean(text: str, max_chars: int) -> str:
    # NUL and other C0 controls mean nothing to a speaker; newlines and tabs become plain spaces.
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(cleaned) > max_chars:
        raise TtsTextTooLongError(f"text is {len(cleaned)} characters, over the {max_chars} character limit")
    return cleaned


class EspeakProvider:
    """espeak-ng as a subprocess; PCM resampled to 8 kHz in the worker pool.

    ``spawns`` counts the espeak-ng processes started (tests check that cache hits start none).
    """

    def __init__(
        self,
        workers: MediaWorkers,
        *,
        binary: str = "espeak-ng",
        speed_wpm: int = 160,
        max_chars: int = DEFAULT_MAX_CHARS,
        timeout: float = 30.0,
    ) -> None:
        self._workers = workers
        self._binary = binary
        self._speed = speed_wpm
        self.max_chars = max_chars
        self._timeout = timeout
        self.spawns = 0

    @property
    def name(self) -> str:
        return f"espeak-ng/{self._speed}"

    def argv(self, voice: str, language: str) -> list[str]:
        """The command line: text is read from stdin as UTF-8 (``-b 1``), never from argv."""
        return [
            self._binary,
            "--stdout",
            "--stdin",
            "-b",
            "1",
            "-s",
            str(self._speed),
            "-v",
            espeak_voice(voice, language),
        ]

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        cleaned = _clean(text, self.max_chars)
        if not cleaned:
            return b""
        self.spawns += 1
        try:
            wav = await self._workers.run_command(
                self.argv(voice, language), stdin=cleaned.encode("utf-8") + b"\n", timeout=self._timeout
            )
        except PlaybackError as exc:
            missing = espeak_missing(self._binary)
            if missing is not None:
                raise TtsUnavailableError(missing) from None
            raise TtsError(f"espeak-ng failed: {exc}") from None
        try:
            return await self._workers.run(player.decode_audio, wav)
        except PlaybackError as exc:
            raise TtsError(f"espeak-ng output is not usable audio: {exc}") from None


#: Prompts whose cache key :class:`CachingTts` remembers (the table is emptied when full).
KEY_MEMO = 4096


class CachingTts:
    """Any provider behind the node's PCM cache; concurrent requests for one prompt synthesize it once.

    A prompt already in memory is had without a task or a thread (:meth:`cached`); the SHA-256 key of each
    (text, voice, language) is computed once and remembered."""

    def __init__(self, provider: TtsProvider, workers: MediaWorkers) -> None:
        self.provider = provider
        self._workers = workers
        self._keys: dict[tuple[str, str, str], str] = {}

    @property
    def name(self) -> str:
        return self.provider.name

    def cache_key(self, text: str, voice: str, language: str) -> str:
        asked = (text, voice, language)
        key = self._keys.get(asked)
        if key is None:
            key = content_key("tts", self.provider.name, voice.strip().lower(), language.strip().lower(), text)
            if len(self._keys) >= KEY_MEMO:
                self._keys.clear()
            self._keys[asked] = key
        return key

    def cached(self, text: str, voice: str, language: str) -> bytes | None:
        """The prompt's PCM if the node holds it in memory, else ``None`` (then await :meth:`synthesize`)."""
        return self._workers.peek(self.cache_key(text, voice, language))

    async def synthesize(self, text: str, voice: str, language: str) -> bytes:
        key = self.cache_key(text, voice, language)
        return await self._workers.cached(key, lambda: self.provider.synthesize(text, voice, language))


def make_default_tts(workers: MediaWorkers) -> CachingTts:
    """The node's default TTS: espeak-ng, cached."""
    return CachingTts(EspeakProvider(workers), workers)
