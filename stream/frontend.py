"""Incremental log-mel / MFCC front end.

The streaming invariant: the features of a recording fed in chunks of any size
(one sample to minutes) equal, bit for bit, the features of the whole recording
computed at once. It holds because every frame is computed by exactly the same
operations whatever the chunking:

* samples are appended to one preallocated buffer;
* each complete frame (``window_samples`` long, every ``hop_samples``) goes
  through the same compiled steps in a fixed order, one frame at a time:
  window, power spectrum (:mod:`voxquant.kernels.fft`, float64), magnitude or
  power, mel weighting, log (or PCEN, whose per-band smoother is state carried
  from frame to frame in the same order) and DCT (no BLAS, whose blocking can
  depend on the row count). A chunk's frames are one compiled call
  (:func:`_buffered_frames_to_features`).

Three configurations ship (:func:`get_frontend_config`):

``"mlperf"``
    The exact front end of the MLPerf Tiny keyword-spotting reference model
    (see ``shared/models/mlperf_tiny_kws/README.md``): periodic Hann 480/320,
    FFT 512, magnitude, TensorFlow's HTK mel matrix (40 bands, 20-4000 Hz),
    ``log(mel + 1e-6)``, TensorFlow's DCT-II, 10 coefficients, and, for clips,
    division by the clip's largest signed sample (``clip_peak_scaling``).
``"kws"``
    The project's own streaming front end for its own models: same 30 ms window
    and 20 ms hop (50 frames per second, one model step per hop), 40 log-mel
    bands from librosa's Slaney mel filters over 20-7600 Hz on the power
    spectrum, ``log(mel + 1e-6)``, and **no** per-clip scaling, so room tone is
    never blown up to full scale in a stream.
``"kws-pcen"``
    ``"kws"`` with per-channel energy normalization instead of the log
    (Wang et al., "Trainable frontend for robust and far-field keyword
    spotting", ICASSP 2017; the parameters of ``librosa.pcen``): each band is
    divided by a slow average of itself (time constant 0.4 s), which takes out
    stationary background and the recording level, then root-compressed. The
    average is state: in a stream it carries over from the audio before the
    word, for a clip it starts at the clip's first frame (:func:`compute_features`).
    A training option (``--set frontend=kws-pcen``); what it did for kws12 is in
    docs/training.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from voxquant.errors import AudioInputError, ConfigError
from voxquant.kernels.fft import rfft_power, rfft_tables

__all__ = [
    "FrontEndConfig",
    "StreamingFrontEnd",
    "compute_features",
    "get_frontend_config",
    "pcm_samples",
    "FRONTEND_CONFIGS",
]

NON_FINITE = "audio holds non-finite samples (NaN or inf)"

# full-scale divisors of the integer PCM types sound cards and WAV files give; int16 is
# kept as it is and scaled where it is used (no conversion copy on the usual path)
_PCM_FULL_SCALE = {np.dtype(np.int8): 128.0, np.dtype(np.int32): 2.0 ** 31}
_INT16 = np.dtype(np.int16)


def pcm_samples(audio: np.ndarray) -> np.ndarray:
    """``audio`` as 1-D samples the front end takes.

    int16 and float samples come back as they are (int16 is read as ``x / 32768``;
    big-endian integers are first put in the machine's byte order).
    The other integer PCM types of sound cards and WAV files become float32 at full
    scale: int8 (``x / 128``), uint8 (8-bit WAV, ``(x - 128) / 128``) and int32
    (``x / 2**31``; 24-bit audio arrives left-aligned in it). A one-channel block of
    shape ``(n, 1)``, as sounddevice's ``InputStream(channels=1)`` hands its callback,
    is mono too.

    Raises
    ------
    AudioInputError
        ``audio`` has more than one channel (mono only), is raw bytes (their sample
        type is unknown) or has another sample type (int64, bool, complex, ...), which
        has no full scale to read it by.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        if x.ndim == 2 and x.shape[1] == 1:
            return pcm_samples(x.reshape(-1))
        if isinstance(audio, (bytes, bytearray)):
            raise AudioInputError("audio is raw bytes of unknown sample type: read them "
                                  "with e.g. np.frombuffer(data, np.int16)")
        raise AudioInputError(f"audio must be 1-D mono, got shape {x.shape}")
    if x.dtype.kind == "f" or x.dtype is _INT16:  # the usual chunks, tested fast (0.3 us)
        return x
    if not x.dtype.isnative:  # big-endian samples (raw AIFF bytes)
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype == _INT16:
        return x
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - np.float32(128.0)) * np.float32(1.0 / 128.0)
    full_scale = _PCM_FULL_SCALE.get(x.dtype)
    if full_scale is None:
        raise AudioInputError(f"audio samples must be int16, float, int8, uint8 or int32 "
                              f"PCM, got {x.dtype}")
    return (x * (1.0 / full_scale)).astype(np.float32)


def all_finite(x: np.ndarray) -> bool:
    """True when no sample of ``x`` is NaN or inf (integer samples always are finite)."""
    return x.dtype.kind != "f" or bool(np.isfinite(x).all())


@dataclass(frozen=True)
class FrontEndConfig:
    """Parameters of a feature front end.

    Attributes
    ----------
    name : str
        Registry name (``"mlperf"``, ``"kws"``) or a user's own.
    sample_rate_hz : int
        Audio sample rate the front end expects.
    window_samples, hop_samples, fft_size : int
        STFT frame length, frame step and FFT length (frames are zero-padded
        to ``fft_size``). No padding at the start or end of a recording.
    n_mels : int
        Number of mel bands.
    fmin_hz, fmax_hz : float
        Mel filter bank range.
    mel_scale : str
        ``"tf-htk"`` (TensorFlow's ``linear_to_mel_weight_matrix``) or
        ``"slaney"`` (librosa's default filters, area-normalised).
    spectrum_power : float
        1 for magnitude, 2 for power spectrum.
    log_offset : float
        Added before the natural log.
    compression : str
        ``"log"``: ``log(mel + log_offset)``. ``"pcen"``: per-channel energy
        normalization of the mel energies ``E``,
        ``(E / (pcen_eps + M) ** pcen_gain + pcen_bias) ** pcen_power - pcen_bias ** pcen_power``
        where ``M`` follows ``E`` with a first-order smoother of time constant
        ``pcen_time_constant_s`` (coefficient as ``librosa.pcen``), started at the
        first frame's ``E`` (no DCT with PCEN).
    pcen_time_constant_s, pcen_gain, pcen_bias, pcen_power, pcen_eps : float
        PCEN parameters (ignored with ``compression="log"``).
    n_mfcc : int
        0 for mel-band features, else the number of DCT-II coefficients kept.
    clip_peak_scaling : bool
        For whole clips only: divide by the largest signed sample before the
        STFT (MLPerf training recipe). Never applied in streaming.
    clip_samples : int
        For clip-scaled front ends: clips are zero-padded or cut to this length.
    """

    name: str
    sample_rate_hz: int = 16000
    window_samples: int = 480
    hop_samples: int = 320
    fft_size: int = 512
    n_mels: int = 40
    fmin_hz: float = 20.0
    fmax_hz: float = 7600.0
    mel_scale: str = "slaney"
    spectrum_power: float = 2.0
    log_offset: float = 1e-6
    compression: str = "log"
    pcen_time_constant_s: float = 0.4
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5
    pcen_eps: float = 1e-12
    n_mfcc: int = 0
    clip_peak_scaling: bool = False
    clip_samples: int = 16000

    @property
    def n_features(self) -> int:
        """Features per frame."""
        return self.n_mfcc if self.n_mfcc else self.n_mels

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_samples / self.sample_rate_hz

    @property
    def window_ms(self) -> float:
        return 1000.0 * self.window_samples / self.sample_rate_hz

    @property
    def pcen_smoothing(self) -> float:
        """Per-frame coefficient of the PCEN smoother, as ``librosa.pcen`` derives it
        from the time constant: ``b`` in ``M[t] = (1 - b) M[t - 1] + b E[t]``."""
        frames = self.pcen_time_constant_s * self.sample_rate_hz / self.hop_samples
        return (np.sqrt(1.0 + 4.0 * frames**2) - 1.0) / (2.0 * frames**2)

    def frames_for(self, n_samples: int) -> int:
        """Number of complete frames in ``n_samples`` samples."""
        if n_samples < self.window_samples:
            return 0
        return (n_samples - self.window_samples) // self.hop_samples + 1

    def samples_for(self, n_frames: int) -> int:
        """Samples spanned by ``n_frames`` consecutive frames (inverse of :meth:`frames_for`)."""
        return (n_frames - 1) * self.hop_samples + self.window_samples

    def to_dict(self) -> dict:
        return asdict(self)


FRONTEND_CONFIGS: dict[str, FrontEndConfig] = {
    "mlperf": FrontEndConfig(
        name="mlperf",
        fmax_hz=4000.0,
        mel_scale="tf-htk",
        spectrum_power=1.0,
        n_mfcc=10,
        clip_peak_scaling=True,
    ),
    "kws": FrontEndConfig(name="kws"),
    "kws-pcen": FrontEndConfig(name="kws-pcen", compression="pcen"),
}


def get_frontend_config(name: str | FrontEndConfig | dict) -> FrontEndConfig:
    """Return a front-end configuration by name (or pass one through).

    A ``dict`` (as stored in a model card) is turned into a config.
    """
    if isinstance(name, FrontEndConfig):
        return _checked(name)
    if isinstance(name, dict):
        try:
            cfg = FrontEndConfig(**name)
        except TypeError as exc:
            raise ConfigError(f"invalid front-end config: {exc}") from None
        return _checked(cfg)
    try:
        return FRONTEND_CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(FRONTEND_CONFIGS))
        raise ConfigError(f"unknown front end {name!r}; known: {known}") from None


def _checked(cfg: FrontEndConfig) -> FrontEndConfig:
    """``cfg`` if its compression can be computed, else :class:`ConfigError`."""
    if cfg.compression not in ("log", "pcen"):
        raise ConfigError(f"front end {cfg.name!r}: unknown compression {cfg.compression!r} "
                          "(log, pcen)")
    if cfg.compression == "pcen":
        if cfg.n_mfcc:
            raise ConfigError(f"front end {cfg.name!r}: PCEN features have no DCT (n_mfcc=0)")
        if not (cfg.pcen_time_constant_s > 0 and cfg.pcen_eps > 0 and cfg.pcen_power > 0
                and cfg.pcen_bias > 0 and cfg.pcen_gain >= 0):
            raise ConfigError(f"front end {cfg.name!r}: PCEN needs a positive time constant, "
                              "eps, power and bias and a gain >= 0")
    return cfg


# --- constant tables, built once per config ---------------------------------------------------


def _hann_periodic(n: int) -> np.ndarray:
    """Periodic Hann window, as ``tf.signal.hann_window(n)`` (float32)."""
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(np.float32)


def _tf_mel_matrix(cfg: FrontEndConfig) -> np.ndarray:
    """TensorFlow's ``linear_to_mel_weight_matrix`` [n_bins, n_mels].

    Written by hand on purpose: TensorFlow interpolates the triangles linearly
    in mel, librosa (``htk=True, norm=None``) linearly in Hz; measured on the
    MLPerf parameters the two differ by up to 5.7e-3 per weight, which would
    break parity with the reference model's features.
    """
    n_bins = cfg.fft_size // 2 + 1

    def hz_to_mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float32) / 700.0)

    bin_mel = hz_to_mel(np.linspace(0.0, cfg.sample_rate_hz / 2, n_bins, dtype=np.float32))
    edges = np.linspace(
        hz_to_mel(cfg.fmin_hz), hz_to_mel(cfg.fmax_hz), cfg.n_mels + 2, dtype=np.float32
    )
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bin_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights[0, :] = 0.0  # HTK: the DC bin never contributes
    return weights


def _mel_matrix(cfg: FrontEndConfig) -> np.ndarray:
    if cfg.mel_scale == "tf-htk":
        return _tf_mel_matrix(cfg)
    if cfg.mel_scale in ("slaney", "htk"):
        return _librosa_mel(cfg.sample_rate_hz, cfg.fft_size, cfg.n_mels, cfg.fmin_hz,
                            cfg.fmax_hz, cfg.mel_scale == "htk").T  # float32 already
    raise ConfigError(f"unknown mel_scale {cfg.mel_scale!r}")


def _hz_to_mel(hz: float, htk: bool) -> float:
    """``librosa.hz_to_mel`` of one frequency (0.11), the same operations in the same order."""
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3
    if hz >= 1000.0:
        return 1000.0 / f_sp + np.log(hz / 1000.0) / (np.log(6.4) / 27.0)
    return hz / f_sp


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    """``librosa.mel_to_hz`` (0.11), the same operations in the same order."""
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = 1000.0 * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def _librosa_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float,
                 htk: bool) -> np.ndarray:
    """``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=, htk=)`` (float32
    [n_mels, 1 + n_fft // 2], Slaney area normalisation), bit for bit (a test compares).

    Written out because importing ``librosa.filters`` imports ``scipy.signal``: 1.3-1.7 s
    of a spotter's 3.5 s start (2-core EPYC), for 20 lines of arithmetic.
    """
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mels = np.linspace(_hz_to_mel(np.float64(fmin), htk), _hz_to_mel(np.float64(fmax), htk),
                       n_mels + 2)
    mel_f = _mel_to_hz(mels, htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def _dct_matrix(n_mels: int, n_out: int) -> np.ndarray:
    """TensorFlow's ``mfccs_from_log_mel_spectrograms`` DCT [n_mels, n_out]."""
    n = np.arange(n_mels)[:, None]
    k = np.arange(n_out)[None, :]
    return np.sqrt(2.0 / n_mels) * np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_mels))


def _sparse_bands(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangular filters as (first_bin, n_bins, flat weights) per band."""
    starts, lengths, flat = [], [], []
    for band in weights.T:
        nz = np.nonzero(band)[0]
        first = int(nz[0]) if nz.size else 0
        last = int(nz[-1]) + 1 if nz.size else 0
        starts.append(first)
        lengths.append(last - first)
        flat.append(band[first:last])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return (
        np.asarray(starts, dtype=np.int64),
        offsets,
        np.concatenate(flat).astype(np.float64) if flat else np.zeros(0),
    )


@lru_cache(maxsize=8)
def _fft_tables(n_fft: int) -> tuple[np.ndarray, ...]:
    """:func:`~voxquant.kernels.fft.rfft_tables`, built once per FFT size, read-only."""
    tables = rfft_tables(n_fft)
    for table in tables:
        table.setflags(write=False)
    return tables


@lru_cache(maxsize=16)
def _tables(cfg: FrontEndConfig) -> tuple[np.ndarray, ...]:
    """Window, sparse mel bands and DCT of a config, built once and shared read-only."""
    window = _hann_periodic(cfg.window_samples)
    band_first, band_offsets, band_weights = _sparse_bands(_mel_matrix(cfg))
    dct = _dct_matrix(cfg.n_mels, cfg.n_mfcc) if cfg.n_mfcc else np.zeros((cfg.n_mels, 0))
    for table in (window, band_first, band_offsets, band_weights, dct):
        table.setflags(write=False)
    return window, band_first, band_offsets, band_weights, dct


@njit(cache=True, nogil=True)
def _buffered_frames_to_features(buf, buf_bits, new_from, size, hop, window, bitrev,
                                 twiddle_re, twiddle_im, split_re, split_im, power_exp,
                                 band_first_bin, band_offsets, band_weights, log_offset, pcen,
                                 pcen_state, dct, scratch, out, energy,
                                 with_energy):  # pragma: no cover
    """Turn every complete frame of the samples ``buf[:size]`` into features (rows of
    ``out``), in one compiled call, then move the samples still needed to the front of
    ``buf``; returns ``(frames written, new size)``, or ``(-1, size)`` without touching
    anything when a sample of ``buf[new_from:size]`` (the ones just appended) is NaN or
    inf: the caller rejects the chunk and its stream goes on unchanged. That check is an
    integer max over the float bits (``buf_bits``: ``buf`` viewed as uint32, made once by
    the caller, since a ``view`` made in here leaked about 130 bytes a call by tracemalloc),
    vectorized, 0.3 us per 1600 samples, inside this call: ``np.isfinite(x).all()`` on a
    1600-sample chunk costs 2 us, a separate compiled call 0.9 us (2-core EPYC).

    Per frame, in a fixed order whatever the chunking (the streaming invariant): window
    (float32, and the raw frame's mean square into ``energy`` in float64 when
    ``with_energy``), power spectrum (:func:`~voxquant.kernels.fft.rfft_power`),
    ``|X| ** power_exp``, sparse mel weighting, ``log(mel + log_offset)`` or, when ``pcen``
    holds the PCEN constants (smoothing coefficient, gain, bias, power, eps,
    ``bias ** power``; empty for the log), PCEN with the per-band smoother ``pcen_state``
    (negative: not started, the frame's energies start it), optional DCT.
    ``scratch``: float64 ``[5, >= max(fft_size, n_mels)]`` (frame, FFT real and imaginary
    parts, power, log-mel). The caller appends the samples (numpy, so this kernel sees one
    array type whatever the chunk's dtype, layout or writability: a new type would be a
    numba compilation in the middle of a stream).
    """
    top = np.uint32(0)
    for i in range(np.uint64(new_from), np.uint64(size)):  # unsigned: vectorizes
        top = max(top, buf_bits[i] & np.uint32(0x7FFFFFFF))
    if top >= np.uint32(0x7F800000):  # exponent all ones: inf or NaN
        return -1, size
    w = window.shape[0]
    n_mels = band_first_bin.shape[0]
    n_out = out.shape[1]
    frame, re, im, power, mel = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    written = 0
    start = 0
    while start + w <= size:
        acc = 0.0
        for i in range(w):
            x = buf[start + i]
            acc += np.float64(x) * x
            frame[i] = x * window[i]
        if with_energy:
            energy[written] = acc / w
        rfft_power(frame, w, bitrev, twiddle_re, twiddle_im, split_re, split_im, re, im,
                   power)
        for j in range(n_mels):
            total = 0.0
            first = band_first_bin[j]
            for i in range(band_offsets[j + 1] - band_offsets[j]):
                p = power[first + i]
                mag = p if power_exp == 2.0 else np.sqrt(p) if power_exp == 1.0 else (
                    p ** (0.5 * power_exp))
                total += mag * band_weights[band_offsets[j] + i]
            mel[j] = total
        if pcen.shape[0] == 0:
            for j in range(n_mels):
                mel[j] = np.log(mel[j] + log_offset)
        else:
            smoothing, gain, bias, root, eps, bias_root = (pcen[0], pcen[1], pcen[2], pcen[3],
                                                          pcen[4], pcen[5])
            if pcen_state[0] < 0.0:
                for j in range(n_mels):
                    pcen_state[j] = mel[j]
            else:
                for j in range(n_mels):
                    pcen_state[j] = (1.0 - smoothing) * pcen_state[j] + smoothing * mel[j]
            for j in range(n_mels):
                ratio = mel[j] / (eps + pcen_state[j]) ** gain + bias
                # sqrt for the usual root 0.5: halves what PCEN adds to a 100 ms chunk
                # (2.7 instead of 5.5 us over the log, 2-core EPYC, measured)
                mel[j] = (np.sqrt(ratio) if root == 0.5 else ratio ** root) - bias_root
        if dct.shape[1] == 0:
            for j in range(n_out):
                out[written, j] = mel[j]
        else:
            for k in range(n_out):
                total = 0.0
                for j in range(n_mels):
                    total += mel[j] * dct[j, k]
                out[written, k] = total
        written += 1
        start += hop
    for i in range(size - start):
        buf[i] = buf[start + i]
    return written, size - start


class StreamingFrontEnd:
    """Incremental feature extractor over audio chunks of any size.

    Parameters
    ----------
    config : FrontEndConfig or str
        Front-end configuration (or its registry name).
    max_block_frames : int
        The sample buffer holds this many frames' worth of samples; a longer
        chunk is taken in pieces inside the same compiled call.

    Notes
    -----
    ``push_into`` writes into a caller's buffer and allocates nothing per chunk
    in steady state (one compiled call with preallocated scratch); ``push`` is
    the convenient form that returns a new array. ``fft_size`` must be a power
    of two.
    Clip peak scaling is never applied here: it needs the whole clip.
    """

    def __init__(self, config: FrontEndConfig | str = "kws", *, max_block_frames: int = 256):
        cfg = get_frontend_config(config)
        if cfg.window_samples > cfg.fft_size or cfg.hop_samples <= 0:
            raise ConfigError(f"front end {cfg.name!r}: need hop > 0 and window <= fft_size")
        self.config = cfg
        self.max_block_frames = int(max_block_frames)
        (self._window, self._band_first, self._band_offsets, self._band_weights,
         self._dct) = _tables(cfg)
        try:
            self._fft_tables = _fft_tables(cfg.fft_size)
        except ValueError as exc:
            raise ConfigError(f"front end {cfg.name!r}: {exc}") from None
        span = cfg.window_samples + (self.max_block_frames - 1) * cfg.hop_samples
        self._buf = np.zeros(span, np.float32)  # samples not yet consumed: self._buf[:size]
        self._buf_bits = self._buf.view(np.uint32)
        self._size = 0
        self._scratch = np.empty((5, max(cfg.fft_size, cfg.n_mels)), np.float64)
        self._no_energy = np.empty(0, np.float64)
        if cfg.compression == "pcen":
            self._pcen = np.array([cfg.pcen_smoothing, cfg.pcen_gain, cfg.pcen_bias,
                                   cfg.pcen_power, cfg.pcen_eps,
                                   cfg.pcen_bias**cfg.pcen_power], np.float64)
        else:
            self._pcen = np.zeros(0, np.float64)
        self._pcen_state = np.full(cfg.n_mels, -1.0)  # not started
        # the kernel's arguments between the sample buffer's size and the output, built once
        self._kernel_tables = (cfg.hop_samples, self._window, *self._fft_tables,
                               float(cfg.spectrum_power), self._band_first, self._band_offsets,
                               self._band_weights, float(cfg.log_offset), self._pcen,
                               self._pcen_state, self._dct, self._scratch)
        self.samples_seen = 0
        self.frames_emitted = 0

    @property
    def n_features(self) -> int:
        return self.config.n_features

    def reset(self) -> None:
        """Forget buffered samples (and PCEN's smoother); the next sample starts a new
        recording."""
        self._size = 0
        self._pcen_state[:] = -1.0
        self.samples_seen = 0
        self.frames_emitted = 0

    def frames_after(self, n_new_samples: int) -> int:
        """How many frames a push of ``n_new_samples`` more samples will emit."""
        cfg = self.config
        return cfg.frames_for(self.samples_seen + n_new_samples) - self.frames_emitted

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append samples; return the features of frames completed by them.

        Returns a float32 array [n_new_frames, n_features] (possibly empty).
        """
        chunk = pcm_samples(chunk)
        out = np.empty((self.frames_after(chunk.shape[0]), self.n_features), np.float32)
        n = self.push_into(chunk, out)
        assert n == out.shape[0]
        return out

    def push_into(
        self, chunk: np.ndarray, out: np.ndarray, energy_out: np.ndarray | None = None
    ) -> int:
        """Append samples and write the completed frames' features into ``out``.

        ``chunk`` is mono float or integer PCM (:func:`pcm_samples`). ``out`` must
        be writable with at least ``frames_after(len(chunk))`` rows. When ``energy_out``
        (float64, writable) is given, each frame's mean-square energy of the raw samples
        goes there too (for noise tracking and gating). Returns the number of
        rows written.

        Raises :class:`~voxquant.errors.AudioInputError` for a chunk that is not
        mono audio or holds NaN or inf; such a chunk is not consumed (the next
        chunk continues the stream as if it had never been pushed).
        """
        chunk = pcm_samples(chunk)
        needed = self.frames_after(chunk.shape[0])
        if out.shape[0] < needed or out.shape[1] != self.n_features:
            raise ConfigError(
                f"output buffer {out.shape} too small for {needed} frames x {self.n_features}"
            )
        if energy_out is not None and energy_out.shape[0] < needed:
            raise ConfigError(f"energy buffer of {energy_out.shape[0]} rows too small for "
                              f"{needed} frames")
        if not out.flags.writeable or (energy_out is not None
                                       and not energy_out.flags.writeable):
            raise ConfigError("output and energy buffers must be writable")
        energy = self._no_energy if energy_out is None else energy_out
        free = self._buf.shape[0] - self._size
        if chunk.shape[0] > free and not all_finite(chunk):  # taken in several passes
            raise AudioInputError(NON_FINITE)
        written = 0
        pos = 0
        while pos < chunk.shape[0]:  # one pass unless the chunk overflows the buffer
            take = min(self._buf.shape[0] - self._size, chunk.shape[0] - pos)
            dest = self._buf[self._size : self._size + take]
            if chunk.dtype == np.int16:
                np.multiply(chunk[pos : pos + take], np.float32(1.0 / 32768.0), out=dest)
                check_from = self._size + take  # int16 is always finite
            else:
                dest[:] = chunk[pos : pos + take]
                check_from = self._size
            pos += take
            n, size = _buffered_frames_to_features(
                self._buf, self._buf_bits, check_from, self._size + take, *self._kernel_tables,
                out[written:] if written else out, energy[written:] if written else energy,
                energy_out is not None)
            if n < 0:
                raise AudioInputError(NON_FINITE)
            self._size = size
            written += n
        self.samples_seen += chunk.shape[0]
        self.frames_emitted += written
        return written


def scale_clip(audio: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """Clip-level preparation of clip-scaled front ends (MLPerf recipe).

    Divides by the largest *signed* sample (``tf.reduce_max``, not max |x|),
    then zero-pads or cuts to ``clip_samples``. An all-zero or all-negative
    clip is left unscaled instead of producing NaN/inverted audio.
    """
    x = np.asarray(audio, dtype=np.float32)[: config.clip_samples]
    peak = np.float32(x.max()) if x.size else np.float32(0.0)
    if peak > 0:
        x = x / peak
    if x.shape[0] < config.clip_samples:
        x = np.concatenate([x, np.zeros(config.clip_samples - x.shape[0], np.float32)])
    return x


def compute_features(audio: np.ndarray, config: FrontEndConfig | str = "kws") -> np.ndarray:
    """Features of a whole recording (or clip) at once.

    Parameters
    ----------
    audio : np.ndarray
        Mono samples at ``config.sample_rate_hz``: float, or integer PCM read at its
        full scale (:func:`pcm_samples`; int16 is divided by 32768).
    config : FrontEndConfig or str
        Front end. Clip-scaled front ends (``"mlperf"``) first apply
        :func:`scale_clip`, so they always return the clip's fixed frame count.

    Returns
    -------
    np.ndarray
        float32 [n_frames, n_features]; identical to feeding the same samples
        to :class:`StreamingFrontEnd` in chunks of any size.
    """
    cfg = get_frontend_config(config)
    x = pcm_samples(audio)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    if cfg.clip_peak_scaling:
        x = scale_clip(x, cfg)
    return StreamingFrontEnd(cfg).push(np.asarray(x, dtype=np.float32))
