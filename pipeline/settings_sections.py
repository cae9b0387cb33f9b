"""The sections of ``Settings``: one frozen model per part of the product, each field with its
default, bounds and one-line meaning, and its flat public name as alias (see pipeline/settings.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_FILLERS = ("um", "uh", "erm", "er", "ah", "hmm", "like", "you know", "sort of", "kind of")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024  # every account password, MOCKAI_ADMIN_PASSWORD included


ASR_ENGINES = ("faster-whisper", "openai-whisper")


def default_asr_cache_dir() -> Path:
    """Where joined/converted ASR weights go unless asr_cache_dir says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mockai" / "asr"


class Section(BaseModel):
    # validate_by_name: code and tests build a section by attribute name (AsrSettings(model="base")),
    # the environment and profiles by flat alias (asr_model).
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True,
                              hide_input_in_errors=True)


def _empty_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class StorageSettings(Section):
    mongodb_uri: str | None = Field(None, alias="mongodb_uri",
                                    description="MongoDB URI; unset starts the embedded SecantusDB server")
    db_name: str = Field("mockai", alias="db_name", description="Database name inside MongoDB")
    data_dir: Path = Field(Path("data"), alias="data_dir", description="Folder for the embedded database and the journal")
    flush_seconds: float = Field(5.0, alias="flush_seconds", gt=0, description="Seconds between batched bulk writes")
    flush_max_docs: int = Field(2000, alias="flush_max_docs", ge=1,
                                description="A collection buffer this large flushes at once")
    journal_max_bytes: int = Field(512 * 1024 * 1024, alias="journal_max_bytes", ge=1024,
                                   description="Bound on the on-disk write journal")
    retry_max_seconds: float = Field(30.0, alias="retry_max_seconds", gt=0,
                                     description="Longest back-off between write retries")
    db_status_cache_seconds: float = Field(
        2.0, alias="db_status_cache_seconds", ge=0,
        description="A database ping result is reused this long before the next real ping")
    db_ping_timeout_seconds: float = Field(2.0, alias="db_ping_timeout_seconds", gt=0,
                                           description="A database ping waits at most this long")


class CaptureSettings(Section):
    frame_sample_every: int = Field(4, alias="frame_sample_every", ge=1, le=60,
                                    description="Uploaded files: analyse every Nth decoded video frame (4 = 7.5 fps from 30)")
    camera_fps: float = Field(15.0, alias="camera_fps", ge=1, le=60,
                              description="Frame rate asked of the browser's camera (its frameRate ideal and max)")
    analysed_fps: float = Field(7.5, alias="analysed_fps", gt=0, le=60,
                                description="Live video frames analysed per second of media time, whatever the camera sends")
    ring_slots: int = Field(32, alias="ring_slots", ge=2, description="Shared-memory frame ring size in frames")
    frame_max_width: int = Field(640, alias="frame_max_width", ge=64,
                                 description="Sampled frames are downscaled to at most this width")
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list, alias="ice_servers",
        description="WebRTC ICE servers (STUN/TURN) as JSON; empty works on localhost and LANs")


class EmotionSettings(Section):
    detector: str = Field(
        "mediapipe", alias="face_detector",
        description="Face detector: mediapipe (landmarks, iris gaze, head pose), opencv (Haar) or mtcnn (DeepFace)")
    detect_width: int = Field(320, alias="detect_width", ge=64,
                              description="Width of the downscaled frame faces are detected on")
    detect_every: int = Field(3, alias="detect_every", ge=1,
                              description="Haar/DeepFace: full detection every Nth sampled frame, tracked in between (mediapipe tracks by landmarks)")
    face_confidence_floor: float = Field(0.5, alias="face_confidence_floor", ge=0, le=1,
                                         description="Faces below this detector confidence are ignored")
    emotion_confidence_floor: float = Field(0.35, alias="emotion_confidence_floor", ge=0, le=1,
                                    description="Dominant emotion below this is shown as uncertain")
    smoothing_window: int = Field(5, alias="emotion_smoothing_window", ge=1,
                                  description="Samples in the moving average of emotion tracks")
    # Measured (mediapipe, mesh+iris models, when the 15 deg was chosen): 37 of the 39 photos with a frontal head (95 %) and every baseline.mp4 frame
    # (gaze ~4 deg) read as eye contact; of faces turned 30-35 deg by rotate_face_image, 10 % do
    eye_contact_yaw_deg: float = Field(
        15.0, alias="eye_contact_yaw_deg", ge=0, le=90,
        description="Gaze (head pose + iris) within this many degrees left/right of the camera counts as eye contact")
    eye_contact_pitch_deg: float = Field(
        20.0, alias="eye_contact_pitch_deg", ge=0, le=90,
        description="Gaze within this many degrees above/below the camera counts as eye contact")
    min_gaze_face_px: int = Field(
        60, alias="min_gaze_face_px", ge=0,
        description="Faces narrower than this (frame pixels) are too small to judge gaze; expression is uncertain")
    landmark_model: str = Field(
        "attention", alias="face_landmark_model", pattern="^(attention|mesh\\+iris)$",
        description="mediapipe landmarks: attention (one model gives the 468 landmarks and both irises) or "
                    "mesh+iris (face_landmark, then the iris model on each eye)")
    iris_alternate: bool = Field(
        True, alias="iris_alternate",
        description="mesh+iris only: tracked frames measure one eye's iris, in turn, and reuse the other's reading "
                    "from the frame before (half the iris model's cost); off measures both eyes every frame")
    blink_ear: float = Field(0.15, alias="blink_ear", ge=0, le=1,
                             description="Mean eye aspect ratio below this means the eyes are closed (no gaze judged)")
    smile_threshold: float = Field(0.35, alias="smile_threshold", ge=0, le=1,
                                   description="Mouth smile score (corner lift and width against a neutral mouth, 0-1) above this is a smile")
    enabled: bool = Field(True, alias="emotion_enabled", description="Show emotion at all (candidates may switch it off)")
    emotion_model: str = Field(
        "auto", alias="emotion_model", pattern="^(auto|fer|deepface)$",
        description="Emotion model: auto (DeepFace's if its weights are present, else FER tflite), fer or deepface")
    deepface_home: Path | None = Field(None, alias="deepface_home",
                                       description="Folder holding .deepface/weights; unset uses the home folder")
    threads: int = Field(1, alias="emotion_threads", ge=1, description="CPU threads for face detection and the emotion model")

    @field_validator("detector", mode="before")
    @classmethod
    def _detector_name(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def resolved_deepface_home(self) -> Path:
        """DeepFace keeps its weights in <home>/.deepface/weights; home defaults as DeepFace does."""
        return Path(self.deepface_home or os.environ.get("DEEPFACE_HOME") or Path.home())


class ReportSettings(Section):
    max_points: int = Field(
        2000, alias="report_max_points", ge=2,
        description="The report's timeline draws at most this many points per track (longer ones are averaged)")
    eye_contact_good: float = Field(
        0.6, alias="eye_contact_good", ge=0, le=1,
        description="Eye contact on less than this share of face frames gets the 'look at the camera' advice")
    framing_offset_hint: float = Field(
        0.2, alias="framing_offset_hint", ge=0, le=0.5,
        description="Median face centre this far off the picture's centre (share of its size) gets a framing hint")
    framing_small_face: float = Field(
        0.12, alias="framing_small_face", ge=0, le=1,
        description="Median face width below this share of the picture's width gets the 'far from the camera' hint")
    gaze_away_min_seconds: float = Field(
        2.0, alias="gaze_away_min_seconds", ge=0.5, le=30,
        description="Looking away while speaking for at least this long is named with its time in the advice")


class AsrSettings(Section):
    engine: str = Field("faster-whisper", alias="asr_engine", description="faster-whisper or openai-whisper")
    model: str = Field("tiny.en", alias="asr_model",
                       description="tiny.en (packaged), base (packaged), or a path to your own weights")
    threads: int = Field(2, alias="asr_threads", ge=1, description="CPU threads for speech recognition")
    # Each live part costs one Whisper encoder pass (a 30 s window, however short the part): 16 s parts
    # need about half the passes of 8 s ones (BENCHMARKS.md, Capacity). The live transcript updates
    # about this often.
    chunk_seconds: float = Field(16.0, alias="asr_chunk_seconds", gt=0,
                                 description="Audio transcribed in chunks of about this length while speaking")
    one_window_parts: bool = Field(
        True, alias="asr_one_window_parts",
        description="A live chunk is one Whisper pass; what its window leaves is heard with the next chunk")
    language: str | None = Field("en", alias="asr_language",
                                 description="Spoken language code; empty lets a multilingual model detect it")
    # Short on purpose: a prompt with fillers makes Whisper keep "um"/"uh"; long prompts make it loop
    # or copy the prompt (MODELS.md). No "like"/"you know": with them tiny.en starts parts with "Like,".
    initial_prompt: str | None = Field(
        "Um, uh, hmm, so, I mean, um.", alias="asr_initial_prompt",
        description="Short prompt with fillers so Whisper keeps um/uh (long prompts make it loop)")
    hotwords: tuple[str, ...] = Field((), alias="asr_hotwords",
                                      description="Terms to bias recognition toward (product names, jargon)")
    beam_size: int = Field(5, alias="asr_beam_size", ge=1, description="Beam width of the decoder; 1 is greedy and faster")
    cache_dir: Path | None = Field(None, alias="asr_cache_dir",
                                   description="Folder for joined/converted weights; unset uses ~/.cache/mockai/asr")
    compute_type: str = Field("int8", alias="asr_compute_type",
                              description="CTranslate2 compute type of the faster-whisper model (int8 is fastest on CPU)")
    vad_filter: bool = Field(True, alias="asr_vad_filter", description="Skip silence with the Silero VAD before decoding")
    # What Whisper invents after the last word ("I'll see you in the next video") is this unsure.
    drop_logprob_below: float = Field(-1.0, alias="asr_drop_logprob_below",
                                      description="A segment whose mean token log-probability is below this is dropped")
    drop_no_speech_above: float = Field(0.3, alias="asr_drop_no_speech_above", ge=0, le=1,
                                        description="A segment whose no-speech probability is above this is dropped")
    verify_weights: bool = Field(True, alias="asr_verify_weights",
                                 description="Check packaged weights against their published SHA-256 before loading")

    _empty_language = field_validator("language", "initial_prompt", mode="before")(_empty_is_none)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ASR_ENGINES:
            raise ValueError(f"unknown ASR engine {value!r}; choose one of {ASR_ENGINES}")
        return value

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_asr_cache_dir()

    def prompt(self, hotwords: tuple[str, ...] | None = None) -> str | None:
        """Filler prompt, plus the hint words for engines without a hotwords option."""
        words = self.hotwords if hotwords is None else hotwords
        parts = [p for p in (self.initial_prompt, ", ".join(words) if words else None) if p]
        return " ".join(parts) or None


class SpeechSettings(Section):
    filler_words: tuple[str, ...] = Field(DEFAULT_FILLERS, alias="filler_words",
                                          description="Words and phrases counted as fillers")
    pause_seconds: float = Field(1.0, alias="pause_seconds", gt=0,
                                 description="A silence longer than this between words is a pause")
    pace_window_seconds: float = Field(10.0, alias="pace_window_seconds", gt=0,
                                       description="Sliding window for speaking pace (s)")
    pace_low_wpm: float = Field(110.0, alias="pace_low_wpm", gt=0, description="Below this words per minute is slow")
    pace_high_wpm: float = Field(170.0, alias="pace_high_wpm", gt=0, description="Above this words per minute is fast")


class MediaSettings(Section):
    max_answer_seconds: float = Field(
        900.0, alias="max_answer_seconds", gt=0,
        description="Longest answer accepted (s): longer media is refused, from its header and while decoding")
    max_upload_mb: int = Field(
        500, alias="max_upload_mb", ge=1,
        description="Largest uploaded recording (MB); keep server.maxUploadSize in .streamlit/config.toml at least this")


class GradingSettings(Section):
    keypoint_match_threshold: float = Field(
        0.5, alias="keypoint_match_threshold", ge=0, le=1,
        description="Key-point model probability (older answers: span similarity) at or above which a key point is covered")
    keypoint_model_path: Path | None = Field(
        None, alias="keypoint_model_path",
        description="Key-point coverage model JSON (python -m pipeline.evaluate keypoints --fit-out); unset uses the shipped one")
    weight_similarity: float = Field(0.5, alias="grade_weight_similarity", ge=0,
                                     description="Weight of similarity to the reference in the grade")
    weight_coverage: float = Field(0.5, alias="grade_weight_coverage", ge=0,
                                   description="Weight of key-point coverage in the grade")
    similarity_floor: float = Field(
        0.5, alias="grade_similarity_floor", ge=0, le=1,
        description="Calibrated similarity that counts as 0 when combined with key-point coverage (an unrelated answer's)")
    similarity_ceiling: float = Field(
        0.9, alias="grade_similarity_ceiling", ge=0, le=1,
        description="Calibrated similarity that counts as 1 when combined with key-point coverage (a model answer's)")
    band_cutoffs: tuple[float, float, float] = Field(
        (0.4, 0.6, 0.8), alias="band_cutoffs", description="Grade cut-offs between weak/fair/good/strong bands")
    min_answer_words: int = Field(8, alias="min_answer_words", ge=0,
                                  description="Answers shorter than this are flagged too short")
    off_topic_similarity: float = Field(
        0.15, alias="off_topic_similarity", ge=0, le=1,
        description="Similarity to both the question and the reference below this flags off-topic")
    model: str | None = Field(
        None, alias="grading_model",
        description="Sentence model for grading: a folder or name; unset uses the packaged all-MiniLM-L6-v2")
    threads: int = Field(
        1, alias="grading_threads", ge=1,
        description="torch CPU threads for the grading encoder (process-wide; 2 ran 10x slower on a busy 2-core box)")
    calibration_path: Path | None = Field(
        None, alias="grading_calibration_path",
        description="Grade calibration JSON (python -m pipeline.evaluate grading --fit-out); unset uses the shipped one")
    star_sentence_pause_seconds: float = Field(
        1.5, alias="star_sentence_pause_seconds", gt=0, le=10,
        description="STAR structure: a silence this long ends a sentence even where the transcript has no full stop")


class SidecarSettings(Section):
    enabled: bool = Field(True, alias="sidecar_enabled",
                          description="Run the analysis engine in this server (off for coach-only servers)")
    emotion_worker_nice: int = Field(
        10, alias="emotion_worker_nice", ge=0, le=19,
        description="CPU niceness of the emotion worker (it takes whatever CPU is left; capture and speech come first)")
    gil_switch_ms: float = Field(
        1.0, alias="gil_switch_ms", gt=0, le=50,
        description="Python thread switch interval in the app process (ms): shorter = callbacks wait less")
    gc_freeze: bool = Field(
        True, alias="gc_freeze",
        description="Freeze the app's start-up objects out of garbage collection (shorter pauses in callbacks)")
    heartbeat_timeout_seconds: float = Field(
        5.0, alias="heartbeat_timeout_seconds", gt=0,
        description="A worker process silent this long (dead, stopped) is restarted")
    worker_stuck_seconds: float = Field(
        120.0, alias="worker_stuck_seconds", gt=0,
        description="A worker busy on one step this long (a hang, not a slow decode) is restarted")
    stale_answer_seconds: float = Field(
        20.0, alias="stale_answer_seconds", gt=0,
        description="An answer with no audio this long (tab closed, connection lost) is ended as incomplete")
    orphan_answer_seconds: float = Field(
        30.0, alias="orphan_answer_seconds", gt=0,
        description="An answer whose stored audio stopped this long ago and that no node stored (its node died) "
        "is finished by another node from that audio, as incomplete")
    worker_backlog_max: int = Field(
        5000, alias="worker_backlog_max", ge=1,
        description="Frame samples a worker keeps in memory while the journal refuses writes "
        "(oldest dropped past it; answers never)")
    worker_backlog_retry_seconds: float = Field(
        1.0, alias="worker_backlog_retry_seconds", gt=0,
        description="How often a worker retries the writes it holds in memory (journal or disk full)")
    speech_workers: int = Field(
        0, alias="speech_workers", ge=0, le=64,
        description="Speech worker processes (each answer stays on one); 0: automatic, the node's cores "
        "minus one (for the app and emotion worker), 1 to 8")


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


class CapacitySettings(Section):
    cores_per_live_session: float = Field(
        0.5, alias="cores_per_live_session", gt=0, le=64,
        description="CPU cores one live session costs (app process + both workers, real browser: measured "
        "0.25-0.29 for one candidate, with headroom; BENCHMARKS.md Capacity): the node's capacity is node_cores / this")
    node_cores: int = Field(
        default_factory=usable_cores, alias="node_cores", ge=1,
        description="CPU cores this node may use for live sessions (default: the CPUs this process may run on)")
    max_live_sessions: int = Field(
        0, alias="max_live_sessions", ge=0,
        description="Live sessions this node accepts at once; 0 = computed from node_cores and "
        "cores_per_live_session (at least 1)")
    live_session_typical_minutes: float = Field(
        12.0, alias="live_session_typical_minutes", gt=0, le=240,
        description="Typical length of a live interview whose questions are not known, for the wait a "
        "refused candidate is told")
    live_question_overhead_seconds: float = Field(
        60.0, alias="live_question_overhead_seconds", ge=0, le=3600,
        description="Seconds a live question takes beyond its suggested answer length (start, scoring, "
        "reading the feedback), for the wait a refused candidate is told")
    live_slot_timeout_seconds: float = Field(
        60.0, alias="live_slot_timeout_seconds", gt=0,
        description="A live slot not refreshed this long (tab closed without ending) is freed")
    live_slot_heartbeat_seconds: float = Field(
        5.0, alias="live_slot_heartbeat_seconds", gt=0,
        description="How often an open tab refreshes its live slot (must be well under the timeout)")
    health_port: int | None = Field(
        None, alias="health_port", ge=0, le=65535,
        description="Port of the load balancer's GET /health endpoint; unset = the Streamlit port + 1, 0 = off")
    health_address: str = Field(
        "", alias="health_address",
        description="Address the health endpoint binds to; empty = Streamlit's server.address, else 127.0.0.1")
    node_name: str = Field(
        "", alias="node_name", max_length=200,
        description="This node's name in the health endpoint; empty = hostname:port")

    _empty_port = field_validator("health_port", mode="before")(_empty_is_none)

    @model_validator(mode="after")
    def _heartbeat_under_timeout(self) -> CapacitySettings:
        if self.live_slot_heartbeat_seconds * 2 > self.live_slot_timeout_seconds:
            raise ValueError("live_slot_heartbeat_seconds must be at most half of live_slot_timeout_seconds, "
                             "or an open tab's slot could expire between two refreshes")
        return self


class AccessSettings(Section):
    login_hours: float = Field(12.0, alias="login_hours", gt=0,
                               description="A sign-in stays valid this many hours, then the user signs in again")
    login_backoff_after: int = Field(
        3, alias="login_backoff_after", ge=1,
        description="Wrong passwords for one username from one client before that client must wait")
    login_client_backoff_after: int = Field(
        10, alias="login_client_backoff_after", ge=1,
        description="Wrong passwords from one client, any usernames, before that client must wait")
    login_backoff_base_seconds: float = Field(
        1.0, alias="login_backoff_base_seconds", gt=0,
        description="A client's first wait once back-off starts; it doubles with every further failure")
    login_backoff_max_seconds: float = Field(900.0, alias="login_backoff_max_seconds", gt=0,
                                             description="Longest wait a failing client is given")
    login_failure_forget_minutes: float = Field(
        60.0, alias="login_failure_forget_minutes", gt=0,
        description="A client's failed sign-ins are forgotten this long after its last one")
    login_client_header: str = Field(
        "", alias="login_client_header",
        description="Header a trusted reverse proxy sets to the client address (e.g. X-Forwarded-For); "
        "empty: the connection address, or the browser session on loopback")
    admin_password: SecretStr | None = Field(
        None, alias="admin_password",
        description="With no admin account yet, creates user 'admin' with this password at start (8+ characters)")
    resume_token_hours: float = Field(
        12.0, alias="resume_token_hours", gt=0,
        description="A resume link (?resume=... in the Interview page's URL) is valid this many hours")
    resume_secret: SecretStr | None = Field(
        None, alias="resume_secret",
        description="Key that signs resume links (same on every app server); unset: a random one in "
        "data_dir/secrets, owner-only")

    @field_validator("admin_password")
    @classmethod
    def _admin_password_valid(cls, value: SecretStr | None) -> SecretStr | None:
        # Set but unusable must stop the server: ignoring it would leave the first-run form open to anyone.
        if value is not None and not PASSWORD_MIN <= len(value.get_secret_value()) <= PASSWORD_MAX:
            raise ValueError(f"it is set but must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long; "
                             "fix it or unset it, then start the server again")
        return value


class JobsSettings(Section):
    redis_url: str | None = Field(
        None, alias="redis_url",
        description="Redis URL of the background-job queue (redis://, rediss://, redis+socket://); unset starts "
        "an embedded redis-server on an owner-only socket under data_dir/redis")
    embedded_workers: int = Field(
        1, alias="embedded_workers", ge=0, le=16,
        description="Background-job worker processes this app starts beside itself (0 = only enqueue; "
        "python -m sidecar worker consumes)")
    worker_nice: int = Field(
        10, alias="job_worker_nice", ge=0, le=19,
        description="CPU niceness of a background-job worker (live interviews on the same machine come first)")
    max_attempts: int = Field(
        3, alias="job_max_attempts", ge=1, le=20,
        description="Tries a job gets (worker crash, server trouble) before it ends as failed with its reason")
    retry_backoff_seconds: float = Field(
        5.0, alias="job_retry_backoff_seconds", ge=0, le=3600,
        description="Wait before a job's 2nd try; doubled for each later one")
    heartbeat_seconds: float = Field(
        2.0, alias="job_heartbeat_seconds", gt=0, le=60,
        description="How often a running job writes its progress and heartbeat to MongoDB")
    stale_seconds: float = Field(
        20.0, alias="job_stale_seconds", gt=0, le=3600,
        description="A running job whose heartbeat is this old is taken as lost (worker died) and queued again")
    resend_seconds: float = Field(
        30.0, alias="job_resend_seconds", gt=0, le=3600,
        description="A waiting job found in neither Redis nor a worker this long after it was sent is sent again")
    max_queued_per_user: int = Field(
        50, alias="max_queued_jobs_per_user", ge=1, le=100000,
        description="Jobs one user may have waiting or running at once; more are refused with a message")
    max_batch_items: int = Field(
        500, alias="max_batch_items", ge=1, le=100000,
        description="Rows one batch manifest may have")

    _empty_url = field_validator("redis_url", mode="before")(_empty_is_none)

    @model_validator(mode="after")
    def _heartbeat_under_stale(self) -> JobsSettings:
        if self.heartbeat_seconds * 3 > self.stale_seconds:
            raise ValueError("job_stale_seconds must be at least 3 x job_heartbeat_seconds")
        return self
