"""One typed settings object for the whole product, in sections.

``Settings`` holds one frozen sub-model per part of the product (``storage``, ``capture``,
``emotion``, ``report``, ``asr``, ``speech``, ``media``, ``grading``, ``sidecar``, ``access``,
``capacity``, ``jobs``); each analyzer takes its section as its options, so every default is written once.
Every setting also has a flat public name (its field alias, e.g. ``asr_model``): that name
is its environment variable with the ``MOCKAI_`` prefix (``MOCKAI_ASR_MODEL``; ``MONGODB_URI``
has none), its key in saved threshold profiles and session snapshots, and its row on the
Research page. ``Settings(asr_model="base")`` and ``settings.with_values({...})`` take flat names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.settings_sections import (
    DEFAULT_FILLERS,
    PASSWORD_MAX,
    PASSWORD_MIN,
    AccessSettings,
    AsrSettings,
    CapacitySettings,
    CaptureSettings,
    EmotionSettings,
    GradingSettings,
    JobsSettings,
    MediaSettings,
    ReportSettings,
    Section,
    SidecarSettings,
    SpeechSettings,
    StorageSettings,
)

__all__ = [
    "DEFAULT_FILLERS", "PASSWORD_MAX", "PASSWORD_MIN", "AccessSettings", "AsrSettings", "CapacitySettings", "CaptureSettings",
    "EmotionSettings", "GradingSettings", "JobsSettings", "MediaSettings", "ReportSettings", "Settings", "SidecarSettings",
    "SpeechSettings", "StorageSettings", "get_settings", "setting_field", "settings_error_text",
    "settings_problem", "settings_table", "SECTIONS", "FLAT_FIELDS", "default_settings", "env_names",
]

ENV_PREFIX = "MOCKAI_"
# Environment names read before MOCKAI_<NAME> (the first one set wins), for names users already set.
EXTRA_ENV: dict[str, tuple[str, ...]] = {"mongodb_uri": ("MONGODB_URI",), "deepface_home": ("DEEPFACE_HOME",)}
# Server URIs may carry passwords: never in snapshots, profiles or the Research page.
SECRET_URIS = ("mongodb_uri", "redis_url")
_ENV_FIRST = {"mongodb_uri"}  # MONGODB_URI outranks MOCKAI_MONGODB_URI; MOCKAI_DEEPFACE_HOME outranks DEEPFACE_HOME




SECTIONS: dict[str, type[Section]] = {
    "storage": StorageSettings, "capture": CaptureSettings, "emotion": EmotionSettings, "report": ReportSettings,
    "asr": AsrSettings, "speech": SpeechSettings, "media": MediaSettings, "grading": GradingSettings,
    "sidecar": SidecarSettings, "access": AccessSettings, "capacity": CapacitySettings,
    "jobs": JobsSettings,
}


def _flat_fields() -> dict[str, tuple[str, str, FieldInfo]]:
    out: dict[str, tuple[str, str, FieldInfo]] = {}
    for section, model in SECTIONS.items():
        for attr, info in model.model_fields.items():
            flat = info.alias or attr
            assert flat not in out, f"setting name {flat} is used twice"
            out[flat] = (section, attr, info)
    return out


# Flat public name -> (section, attribute, field); in declaration order (the Research page's order).
FLAT_FIELDS = _flat_fields()


def _is_complex(annotation: Any) -> bool:
    """Values the environment gives as JSON (lists, tuples, mappings), as pydantic-settings does."""
    origins = {get_origin(annotation), *(get_origin(a) for a in get_args(annotation))}
    return bool(origins & {list, tuple, dict}) or annotation in (list, tuple, dict)


def env_names(flat: str) -> tuple[str, ...]:
    """The environment variables a setting is read from, in priority order."""
    own = ENV_PREFIX + flat.upper()
    extra = EXTRA_ENV.get(flat, ())
    return (*extra, own) if flat in _ENV_FIRST else (own, *extra)


# Settings(MONGODB_URI=...) works as the variable does.
_ENV_TO_FLAT = {env: flat for flat in FLAT_FIELDS for env in env_names(flat)}


class _FlatEnvSource(PydanticBaseSettingsSource):
    """Reads MOCKAI_<FLAT NAME> (case-insensitive) for every setting of every section."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every section's fields itself

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        found: dict[str, Any] = {}
        for flat, (_, _, info) in FLAT_FIELDS.items():
            for env in env_names(flat):
                if env in environ:
                    raw = environ[env]
                    try:
                        found[flat] = json.loads(raw) if _is_complex(info.annotation) else raw
                    except json.JSONDecodeError:
                        found[flat] = raw  # validation then names the setting and says what it wants
                    break
        return found


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value (MOCKAI_ADMIN_PASSWORD) never reaches a message or log.
    model_config = SettingsConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    storage: StorageSettings = Field(default_factory=StorageSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    emotion: EmotionSettings = Field(default_factory=EmotionSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    grading: GradingSettings = Field(default_factory=GradingSettings)
    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _FlatEnvSource(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: Any) -> Any:
        """Flat names (asr_model=..., from the environment or keyword arguments) go to their section."""
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS:
                section = dict(value) if isinstance(value, BaseModel | Mapping) else value
                merged = out.setdefault(key, {})
                if isinstance(section, dict) and isinstance(merged, dict):
                    merged.update(section)
                else:
                    out[key] = section
            elif key in FLAT_FIELDS or str(key).upper() in _ENV_TO_FLAT:
                section_name, attr, _ = FLAT_FIELDS[key if key in FLAT_FIELDS else _ENV_TO_FLAT[str(key).upper()]]
                target = out.setdefault(section_name, {})
                if isinstance(target, dict):
                    target[attr] = value
            else:
                out[key] = value  # refused by extra="forbid", naming the key
        return out

    def value(self, flat: str) -> Any:
        """The value of the setting with this flat name (``settings.value("asr_model")``)."""
        section, attr, _ = FLAT_FIELDS[flat]
        return getattr(getattr(self, section), attr)

    def with_values(self, updates: Mapping[str, Any]) -> Settings:
        """A copy with these flat-named values replaced, validated by the fields' own rules."""
        grouped: dict[str, dict[str, Any]] = {}
        for flat, value in updates.items():
            if flat not in FLAT_FIELDS:
                raise KeyError(f"{flat!r} is not a setting")
            section, attr, _ = FLAT_FIELDS[flat]
            grouped.setdefault(section, {})[attr] = value
        changed = {
            section: SECTIONS[section].model_validate({**dict(getattr(self, section)), **values})
            for section, values in grouped.items()
        }
        return self.model_copy(update=changed)

    def snapshot(self) -> dict[str, Any]:
        """Every setting by flat name as JSON values (secrets masked, no MongoDB URI): what a session
        stores as the settings it was recorded with."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            out.update(getattr(self, section).model_dump(mode="json", by_alias=True))
        for secret in SECRET_URIS:
            out.pop(secret, None)
        return out



def setting_field(flat: str) -> FieldInfo:
    """The pydantic field (type, bounds, default, description) of a flat-named setting."""
    return FLAT_FIELDS[flat][2]


def default_settings() -> Settings:
    """Every setting at its default, whatever the environment says (option dataclasses' defaults)."""
    return Settings.model_construct()  # the default factories; no environment source runs


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


def _flat_name(loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] in SECTIONS:
        model = SECTIONS[str(loc[0])]
        info = model.model_fields.get(str(loc[1]))
        return (info.alias or str(loc[1])) if info is not None else str(loc[1])
    return str(loc[0]) if loc else "settings"


def settings_error_text(exc: ValidationError) -> str:
    """One line per refused setting, named as its environment variable, without its value."""
    lines = []
    for err in exc.errors():
        flat = _flat_name(tuple(err.get("loc", ())))
        env = env_names(flat)[0] if flat in FLAT_FIELDS else ENV_PREFIX + flat.upper()
        msg = str(err.get("msg", "not valid")).removeprefix("Value error, ")
        lines.append(f"{env}: {msg}")
    return "The server refuses to start: " + "; ".join(lines) + "."


def settings_table(settings: Settings) -> list[dict[str, str]]:
    """Every setting with its current value, default and one-line meaning (for the Research page)."""
    rows = []
    for flat, (_, _, info) in FLAT_FIELDS.items():
        value = settings.value(flat)
        rows.append(
            {
                "setting": flat,
                "value": repr(value) if flat not in SECRET_URIS else ("set" if value else "embedded"),
                "default": repr(info.get_default(call_default_factory=True)),
                "meaning": info.description or "",
            }
        )
    return rows
