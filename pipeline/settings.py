"""One typed settings object for the whole product.

Every threshold the pipeline uses lives here with a default and a one-line meaning
(the field description), so the Research page can list and edit them. Values come
from environment variables prefixed ``MOCKAI_`` (``MONGODB_URI`` has no prefix).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_FILLERS = ("um", "uh", "erm", "er", "ah", "hmm", "like", "you know", "sort of", "kind of")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024  # every account password, MOCKAI_ADMIN_PASSWORD included


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value (MOCKAI_ADMIN_PASSWORD) never reaches a message or log.
    model_config = SettingsConfigDict(env_prefix="MOCKAI_", extra="ignore", frozen=True, hide_input_in_errors=True)

    # --- storage -------------------------------------------------------------------
    mongodb_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MONGODB_URI", "MOCKAI_MONGODB_URI"),
        description="MongoDB URI; unset starts the embedded SecantusDB server",
    )
    db_name: str = Field("mockai", description="Database name inside MongoDB")
    data_dir: Path = Field(Path("data"), description="Folder for the embedded database and the journal")
    flush_seconds: float = Field(5.0, gt=0, description="Seconds between batched bulk writes")
    flush_max_docs: int = Field(2000, ge=1, description="A collection buffer this large flushes at once")
    journal_max_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="Bound on the on-disk write journal")
    retry_max_seconds: float = Field(30.0, gt=0, description="Longest back-off between write retries")
    db_status_cache_seconds: float = Field(
        2.0, ge=0, description="A database ping result is reused this long before the next real ping"
    )
    db_ping_timeout_seconds: float = Field(2.0, gt=0, description="A database ping waits at most this long")

    # --- capture -------------------------------------------------------------------
    frame_sample_every: int = Field(4, ge=1, le=60, description="Keep every Nth video frame (4 = 7.5 fps from 30)")
    ring_slots: int = Field(32, ge=2, description="Shared-memory frame ring size in frames")
    frame_max_width: int = Field(640, ge=64, description="Sampled frames are downscaled to at most this width")
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="WebRTC ICE servers (STUN/TURN) as JSON; empty works on localhost and LANs",
    )

    # --- emotion -------------------------------------------------------------------
    face_detector: str = Field("opencv", description="Face detector: opencv (Haar) or mtcnn (DeepFace backends)")
    detect_width: int = Field(320, ge=64, description="Width of the downscaled frame faces are detected on")
    detect_every: int = Field(3, ge=1, description="Run full detection every Nth sampled frame; track in between")
    face_confidence_floor: float = Field(0.5, ge=0, le=1, description="Faces below this detector confidence are ignored")
    emotion_confidence_floor: float = Field(0.35, ge=0, le=1, description="Dominant emotion below this is shown as uncertain")
    emotion_smoothing_window: int = Field(5, ge=1, description="Samples in the moving average of emotion tracks")
    report_max_points: int = Field(
        2000, ge=2, description="The report's timeline draws at most this many points per track (longer ones are averaged)"
    )
    gaze_center_tolerance: float = Field(0.2, ge=0, le=1, description="Face centre within this fraction of frame centre counts as eye contact")
    emotion_enabled: bool = Field(True, description="Show emotion at all (candidates may switch it off)")
    emotion_model: str = Field(
        "auto", description="Emotion model: auto (DeepFace's if its weights are present, else FER tflite), fer or deepface"
    )
    deepface_home: Path | None = Field(
        None,
        validation_alias=AliasChoices("MOCKAI_DEEPFACE_HOME", "DEEPFACE_HOME"),
        description="Folder holding .deepface/weights; unset uses the home folder",
    )
    emotion_threads: int = Field(1, ge=1, description="CPU threads for face detection and the emotion model")

    # --- speech --------------------------------------------------------------------
    asr_engine: str = Field("faster-whisper", description="faster-whisper or openai-whisper")
    asr_model: str = Field("tiny.en", description="tiny.en (packaged), base (packaged), or a path to your own weights")
    asr_threads: int = Field(2, ge=1, description="CPU threads for speech recognition")
    asr_chunk_seconds: float = Field(8.0, gt=0, description="Audio transcribed in chunks of about this length while speaking")
    asr_language: str = Field("en", description="Spoken language code; empty lets a multilingual model detect it")
    asr_initial_prompt: str = Field(
        "Um, uh, hmm, so, I mean, um.",
        description="Short prompt with fillers so Whisper keeps um/uh (long prompts make it loop)",
    )
    asr_hotwords: tuple[str, ...] = Field((), description="Terms to bias recognition toward (product names, jargon)")
    asr_beam_size: int = Field(5, ge=1, description="Beam width of the decoder; 1 is greedy and faster")
    asr_cache_dir: Path | None = Field(None, description="Folder for joined/converted weights; unset uses ~/.cache/mockai/asr")
    filler_words: tuple[str, ...] = Field(DEFAULT_FILLERS, description="Words and phrases counted as fillers")
    pause_seconds: float = Field(1.0, gt=0, description="A silence longer than this between words is a pause")
    pace_window_seconds: float = Field(10.0, gt=0, description="Sliding window for speaking pace (s)")
    pace_low_wpm: float = Field(110.0, gt=0, description="Below this words per minute is slow")
    pace_high_wpm: float = Field(170.0, gt=0, description="Above this words per minute is fast")
    max_answer_seconds: float = Field(
        900.0, gt=0, description="Longest answer accepted (s): longer media is refused, from its header and while decoding"
    )
    max_upload_mb: int = Field(
        500, ge=1, description="Largest uploaded recording (MB); keep server.maxUploadSize in .streamlit/config.toml at least this"
    )

    # --- grading -------------------------------------------------------------------
    keypoint_match_threshold: float = Field(0.5, ge=0, le=1, description="Span-to-key-point similarity that counts as covered")
    grade_weight_similarity: float = Field(0.5, ge=0, description="Weight of similarity to the reference in the grade")
    grade_weight_coverage: float = Field(0.5, ge=0, description="Weight of key-point coverage in the grade")
    band_cutoffs: tuple[float, float, float] = Field(
        (0.4, 0.6, 0.8), description="Grade cut-offs between weak/fair/good/strong bands"
    )
    min_answer_words: int = Field(8, ge=0, description="Answers shorter than this are flagged too short")
    off_topic_similarity: float = Field(0.15, ge=0, le=1, description="Similarity to both the question and the reference below this flags off-topic")
    grading_model: str | None = Field(
        None, description="Sentence model for grading: a folder or name; unset uses the packaged all-MiniLM-L6-v2"
    )
    grading_threads: int = Field(
        1, ge=1, description="torch CPU threads for the grading encoder (process-wide; 2 ran 10x slower on a busy 2-core box)"
    )
    grading_calibration_path: Path | None = Field(
        None, description="Grade calibration JSON (python -m pipeline.evaluate grading --fit-out); unset uses the shipped one"
    )

    # --- sidecar -------------------------------------------------------------------
    sidecar_enabled: bool = Field(True, description="Run the analysis engine in this server (off for coach-only servers)")
    emotion_worker_nice: int = Field(
        10, ge=0, le=19,
        description="CPU niceness of the emotion worker (it takes whatever CPU is left; capture and speech come first)",
    )
    gil_switch_ms: float = Field(
        1.0, gt=0, le=50, description="Python thread switch interval in the app process (ms): shorter = callbacks wait less"
    )
    gc_freeze: bool = Field(
        True, description="Freeze the app's start-up objects out of garbage collection (shorter pauses in callbacks)"
    )
    heartbeat_timeout_seconds: float = Field(
        5.0, gt=0, description="A worker process silent this long (dead, stopped) is restarted"
    )
    worker_stuck_seconds: float = Field(
        120.0, gt=0, description="A worker busy on one step this long (a hang, not a slow decode) is restarted"
    )
    stale_answer_seconds: float = Field(
        20.0, gt=0, description="An answer with no audio this long (tab closed, connection lost) is ended as incomplete"
    )
    worker_backlog_max: int = Field(
        5000, ge=1,
        description="Frame samples a worker keeps in memory while the journal refuses writes (oldest dropped past it; answers never)",
    )
    worker_backlog_retry_seconds: float = Field(
        1.0, gt=0, description="How often a worker retries the writes it holds in memory (journal or disk full)"
    )

    # --- access --------------------------------------------------------------------
    login_hours: float = Field(12.0, gt=0, description="A sign-in stays valid this many hours, then the user signs in again")
    login_backoff_after: int = Field(
        3, ge=1, description="Wrong passwords for one username from one client before that client must wait"
    )
    login_client_backoff_after: int = Field(
        10, ge=1, description="Wrong passwords from one client, any usernames, before that client must wait"
    )
    login_backoff_base_seconds: float = Field(
        1.0, gt=0, description="A client's first wait once back-off starts; it doubles with every further failure"
    )
    login_backoff_max_seconds: float = Field(900.0, gt=0, description="Longest wait a failing client is given")
    login_failure_forget_minutes: float = Field(
        60.0, gt=0, description="A client's failed sign-ins are forgotten this long after its last one"
    )
    login_client_header: str = Field(
        "", description="Header a trusted reverse proxy sets to the client address (e.g. X-Forwarded-For); "
        "empty: the connection address, or the browser session on loopback"
    )
    admin_password: SecretStr | None = Field(
        None, description="With no admin account yet, creates user 'admin' with this password at start (8+ characters)"
    )
    resume_token_hours: float = Field(
        12.0, gt=0, description="A resume link (?resume=... in the Interview page's URL) is valid this many hours"
    )
    resume_secret: SecretStr | None = Field(
        None, description="Key that signs resume links (same on every app server); unset: a random one in "
        "data_dir/secrets, owner-only"
    )

    @field_validator("admin_password")
    @classmethod
    def _admin_password_valid(cls, value: SecretStr | None) -> SecretStr | None:
        # Set but unusable must stop the server: ignoring it would leave the first-run form open to anyone.
        if value is not None and not PASSWORD_MIN <= len(value.get_secret_value()) <= PASSWORD_MAX:
            raise ValueError(f"it is set but must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long; "
                             "fix it or unset it, then start the server again")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_problem() -> str | None:
    """Why the settings from the environment are refused, in plain words (None: they are fine)."""
    try:
        get_settings()
    except ValidationError as exc:
        return settings_error_text(exc)
    return None


def settings_error_text(exc: ValidationError) -> str:
    """One line per refused setting, named as its environment variable, without its value."""
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err.get("loc") else "settings"
        env = "MONGODB_URI" if name == "mongodb_uri" else f"MOCKAI_{name.upper()}"
        msg = str(err.get("msg", "not valid")).removeprefix("Value error, ")
        lines.append(f"{env}: {msg}")
    return "The server refuses to start: " + "; ".join(lines) + "."


def settings_table(settings: Settings) -> list[dict[str, str]]:
    """Every setting with its current value, default and one-line meaning (for the Research page)."""
    rows = []
    for name, info in Settings.model_fields.items():
        rows.append(
            {
                "setting": name,
                "value": repr(getattr(settings, name)) if name != "mongodb_uri" else ("set" if settings.mongodb_uri else "embedded"),
                "default": repr(info.get_default(call_default_factory=True)),
                "meaning": info.description or "",
            }
        )
    return rows
