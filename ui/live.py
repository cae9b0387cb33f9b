"""The Interview page's live path: the browser's camera and microphone (WebRTC) into a Capture,
the live panel, the device check and the recorded answers with their feedback."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import streamlit as st

from pipeline import interview as iv
from pipeline.questions import Question
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.store import Store
from ui.capacity import admit_live, release_live
from ui.interview import InterviewState, go, show_stored_feedback

if TYPE_CHECKING:
    from streamlit_webrtc import WebRtcStreamerContext

    from sidecar.capture import Capture
    from sidecar.supervisor import Sidecar

CAPTURE_KEY = "capture"  # st.session_state key of this browser session's Capture


def live_capture(sidecar: Sidecar, settings: Settings) -> Capture:
    """This browser session's capture (made once), which the WebRTC callbacks feed."""
    from sidecar.capture import Capture

    capture: Capture = st.session_state.setdefault(
        CAPTURE_KEY, Capture(sidecar, settings.capture.analysed_fps, settings.capture.frame_max_width)
    )
    return capture


def start_media(state: InterviewState, capture: Capture, settings: Settings) -> WebRtcStreamerContext[Any, Any]:
    """The WebRTC widget (send only: camera and microphone to the server, into ``capture``), once
    this session holds a live slot on this server (refused: the busy message, and no camera)."""
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    if not admit_live(state):
        st.stop()
    media = webrtc_streamer(
        key="mockai-media",
        mode=WebRtcMode.SENDONLY,
        rtc_configuration={"iceServers": settings.capture.ice_servers},
        media_stream_constraints={"video": {"width": 640, "height": 480, "frameRate": {
            "ideal": settings.capture.camera_fps, "max": settings.capture.camera_fps}}, "audio": True},
        queued_video_frames_callback=capture.on_video_queued,
        queued_audio_frames_callback=capture.on_audio_queued,
        async_processing=True,
    )
    state.setdefault("media_started_at", time.time())
    return media


@st.fragment(run_every=1.0)
def live_panel(state: InterviewState, capture: Capture, sidecar: Sidecar) -> None:
    """Refreshed every second: capture counters; in the device check the preview and its advice,
    during an answer the face, pace, time and live transcript."""
    stats = capture.stats()
    p99 = stats["video_p99_ms"]
    st.caption(f"frames received: {stats['frames_seen']} · sampled: {stats['frames_sampled']} · "
               f"audio: {stats['audio_seconds']:.1f} s" + (f" · callback p99: {p99:.2f} ms" if p99 else ""))
    answer = state.get("answer")
    frame = sidecar.face_status(state["session_id"])
    if state["step"] == "device":
        if capture.preview is not None:  # SENDONLY has no local video: show the last sampled frame
            st.image(capture.preview, channels="BGR", width=320, caption="Camera preview")
        for level, msg in iv.device_advice(stats, frame, capture.audio_level, time.time() - state["media_started_at"]):
            {"ok": st.success, "warn": st.warning, "error": st.error}[level](msg)
        return
    if answer is None:
        return
    words = sidecar.partial_words(answer["answer_id"])
    spoken = max(0.0, time.time() - answer["started_ms"] / 1000)
    cols = st.columns(3)
    cols[0].metric("Face", "found" if frame and frame.face else "not found")
    cols[1].metric("Pace", f"{len(words) / spoken * 60:.0f} wpm" if spoken > 5 and words else "—")
    cols[2].metric("Time", f"{spoken:.0f} s")
    spoken_text = " ".join(str(w["word"]).strip() for w in words)
    st.markdown("**Live transcript:** " + (md(spoken_text) if spoken_text else "_listening…_"))


def device_step(state: InterviewState, capture: Capture, sidecar: Sidecar) -> None:
    """3. Camera and microphone checked (nothing stored); the interview starts once both work."""
    st.subheader("Device check")
    st.write("Press **START** above and allow camera and microphone. Nothing is stored during this check.")
    capture.aim(state["session_id"], "__preview__")
    live_panel(state, capture, sidecar)
    if st.button("Start the interview", type="primary", key="to_interview"):
        if capture.frames_seen > 0 and capture.audio_seconds > 0:
            capture.aim(state["session_id"], None)
            go(state, "interview")
        st.error("Camera and microphone are not both working yet: press START and allow them.")


def interview_step(state: InterviewState, questions: list[Question], media: WebRtcStreamerContext[Any, Any],
                   capture: Capture, sidecar: Sidecar, store: Store) -> None:
    """4. One question at a time: start, finish (scored, then its feedback) or discard an answer."""
    q = questions[state["index"]]
    st.subheader(f"Question {state['index'] + 1} of {len(questions)}")
    st.markdown(f"### {md(q.question)}")
    st.caption(f"Suggested length: about {q.seconds} s")
    if not (media.state.playing):
        st.warning("Camera and microphone are not connected: press START above.")
    answer = state.get("answer")
    if answer is None:
        if st.button("Start answer", type="primary", disabled=not media.state.playing, key="start_answer"):
            start = iv.answer_start(state["session_id"], state["index"], q, keep_audio=bool(state.get("keep_audio")))
            sidecar.start_answer(start)
            capture.aim(state["session_id"], start.answer_id)
            state["answer"] = {"answer_id": start.answer_id, "started_ms": start.started_ms}
            st.rerun()
        feedback = state.get("last_feedback")
        if feedback:
            show_stored_feedback(state, feedback, store)
        return
    live_panel(state, capture, sidecar)
    if st.button("Finish answer", type="primary", key="finish_answer"):
        capture.aim(state["session_id"], None)
        finished = time.perf_counter()
        capture.flush(1.0)  # the last sampled frames of this answer into the ring first
        sidecar.end_answer(answer["answer_id"], iv.now_ms(), capture=capture.stats())
        with st.spinner("Scoring your answer…"):
            done = sidecar.wait_result(answer["answer_id"], timeout=60)
            # The feedback reads the stored answer and its frame samples: wait for both writers.
            flushed = sidecar.flush_frames(state["session_id"], answer["answer_id"])
        result: dict[str, Any]
        if done is None:
            result = {"status": "incomplete", "grade": None, "metrics": None, "transcript": "",
                      "error": "The analysis did not finish in time; the answer is kept and will be scored."}
        else:
            result = dict(done)
            if done.get("held"):  # the journal refused it: the worker keeps it in memory and retries
                from ui.status import held_answer_note

                result["error"] = held_answer_note(result)
        result["question"] = q.question
        result["feedback_s"] = round(time.perf_counter() - finished, 3)
        state["results"].append(result)
        state["last_feedback"] = {"answer_id": answer["answer_id"], "question": q.question,
                                  "error": result.get("error"), "feedback_s": result["feedback_s"],
                                  "frames_stored": bool(flushed and flushed.stored)}
        state["answer"] = None
        state["index"] += 1
        if state["index"] >= len(questions):
            release_live()  # the last answer is in: this session's live slot is free for the next candidate
        go(state, "interview" if state["index"] < len(questions) else "summary")
    if st.button("Discard and retry this question", key="retry_answer"):
        capture.aim(state["session_id"], None)
        sidecar.end_answer(answer["answer_id"], iv.now_ms(), status="incomplete")
        state["answer"] = None
        st.rerun()
