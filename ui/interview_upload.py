"""The Interview page's upload path: one recorded answer per question, analysed and stored like a
live one; a refused or broken file is said plainly and the session goes on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from pipeline.questions import Question
from pipeline.safe_text import md
from pipeline.settings import Settings
from ui.interview import InterviewState, go

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

    from sidecar.supervisor import Sidecar

log = logging.getLogger(__name__)

UPLOAD_TYPES = ["mp4", "webm", "mov", "mkv", "m4a", "mp3", "wav", "flac", "ogg"]
AUDIO_SUFFIXES = {".m4a", ".mp3", ".wav", ".flac", ".ogg"}


def _release_upload(upload: UploadedFile) -> None:
    """Drop Streamlit's in-memory copy of the upload now instead of at the end of the session."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        # The in-memory manager (Streamlit's only one) has it; its Protocol does not declare it.
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)  # type: ignore[attr-defined]
    upload.close()


def upload_step(state: InterviewState, questions: list[Question], settings: Settings, sidecar: Sidecar) -> None:
    """The current question with a file uploader; "Analyse" scores the file as this question's answer."""
    from pipeline.media import MediaError, format_duration
    from pipeline.uploads import UploadTooLargeError, public_error, saved_upload
    from sidecar.analyze import AnalyzeRequest, analyze

    q = questions[state["index"]]
    st.subheader(f"Question {state['index'] + 1} of {len(questions)}")
    st.markdown(f"**{md(q.question)}**")
    # A fresh key after every attempt gives an empty widget (a file_uploader cannot be cleared from code).
    upload_key = f"upload_{state['index']}_{state.get('upload_try', 0)}"
    upload = st.file_uploader("Recorded answer (video with sound, or audio only)", key=upload_key,
                              type=UPLOAD_TYPES, max_upload_size=settings.media.max_upload_mb)
    st.caption(f"One answer per file: at most {format_duration(settings.media.max_answer_seconds)} long "
               f"and {settings.media.max_upload_mb} MB.")
    if state.get("upload_error"):
        st.error(state.pop("upload_error"))
    if upload is not None and st.button("Analyse", type="primary", key="analyse"):
        suffix = Path(upload.name).suffix.lower()
        report: dict[str, Any] | None = None
        try:
            with saved_upload(upload, upload.name, upload.size, settings) as path:
                bar = st.progress(0.0, text="Analysing the recording…")
                is_audio = suffix in AUDIO_SUFFIXES
                request = AnalyzeRequest(q.question, q.reference, tuple(q.key_points),
                                         video=None if is_audio else path, audio=path if is_audio else None,
                                         candidate=state["candidate"], role="upload")
                report = analyze(request, settings, store=True, sidecar=sidecar, session_id=state["session_id"],
                                 index=state["index"],
                                 progress=lambda kind, n: bar.progress(min(1.0, n / 200), text=f"{kind}: {n}"))
                bar.progress(1.0, text="Done")
        except Exception as exc:  # corrupt file, too long, too big, engine trouble: say it plainly, keep the session
            if not isinstance(exc, MediaError | UploadTooLargeError):
                log.exception("analysis of an uploaded answer failed")
            state["upload_error"] = public_error(exc)
        finally:
            _release_upload(upload)
            state["upload_try"] = state.get("upload_try", 0) + 1
        if report is None:
            st.rerun()
        state["results"].append({"status": "complete", "grade": report["grade"], "metrics": report["metrics"],
                                 "transcript": report["transcript"], "question": q.question})
        flushed = sidecar.flush_frames(state["session_id"], report["answer_id"])  # its frames in MongoDB first
        state["last_feedback"] = {"answer_id": report["answer_id"], "question": q.question,
                                  "frames_stored": bool(flushed and flushed.stored)}
        state["index"] += 1
        go(state, "upload" if state["index"] < len(questions) else "summary")
