"""The Batch page's widgets: submit a manifest (uploads, or an admin's server folder), the job queue with
cancel and retry, and re-analysis of stored answers whose audio is kept."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import jobs
from pipeline.auth import session_access_filter
from pipeline.job_manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_SUFFIXES,
    Manifest,
    ManifestRow,
    QuestionChoice,
    outcome,
    parse_manifest,
    scan_folder,
    shipped_sets,
    specs_for,
)
from pipeline.queries import find_visible_session
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.uploads import MB, UploadTooLargeError
from ui.jobs import QUEUE_UNAVAILABLE, JobClient, stage_text
from ui.session import error_text

REFRESH_SECONDS = 2  # how often the queue redraws while a job is waiting or running
FREE_TEXT = "(type a question)"
UPLOAD, FOLDER = "Upload a manifest and its recordings", "A folder on the server"
MESSAGE_KEY = "batch_message"


def is_admin(user: dict[str, Any]) -> bool:
    return user.get("role") == "admin"


def visible_owner(user: dict[str, Any]) -> str | None:
    """Whose jobs ``user`` sees: an admin all (None), a coach their own."""
    return None if is_admin(user) else str(user["username"])


def import_root(settings: Settings) -> Path:
    return (Path(settings.storage.data_dir) / "import").resolve()


def server_path(settings: Settings, typed: str) -> Path | None:
    """``typed`` (relative to <data_dir>/import, or absolute) when it lies inside that folder; else None."""
    root = import_root(settings)
    try:
        path = (root / typed.strip()).resolve()
    except (OSError, RuntimeError):
        return None
    return path if path.is_relative_to(root) else None


def show_problems(manifest: Manifest) -> None:
    st.error(f"Nothing was submitted: {len(manifest.problems)} problem(s) to fix first.", icon=":material/error:")
    st.markdown("\n".join(f"- {md(p)}" for p in manifest.problems))


def show_rows(rows: list[ManifestRow]) -> None:
    st.dataframe([{"line": r.line, "file": r.file, "candidate": r.candidate, "question": r.question,
                   "media": r.media_kind, "key points": len(r.key_points)} for r in rows],
                 hide_index=True, width="stretch")


def _submit_rows(db: Any, client: JobClient, manifest: Manifest, owner: str, settings: Settings,
                 open_file: Any) -> list[str]:
    """Queue every row (``open_file(row)`` gives its stream); one line per row saying what happened.
    QueueFullError (nothing submitted) when the owner's queue has no room for all of them."""
    jobs.check_queue_room(db, owner, settings.jobs.max_queued_per_user, adding=len(manifest.rows))
    lines = []
    for row, spec in zip(manifest.rows, specs_for(manifest.rows, owner, manifest.batch_id), strict=True):
        try:
            with open_file(row) as stream:
                submitted = client.submit(db, spec, stream, row.file, row.size)
        except (UploadTooLargeError, jobs.QueueFullError) as exc:
            lines.append(f"{row.file}: not submitted ({exc})")
            continue
        except OSError:
            lines.append(f"{row.file}: not submitted (the file could not be read)")
            continue
        lines.append(f"{row.file}: {outcome(submitted)}")
    return lines


def submit_section(db: Any, user: dict[str, Any], client: JobClient | None, settings: Settings) -> None:
    st.write("One analysis job per recording. A CSV manifest names each recording (column `file`) and its "
             "question: `question_set` + `question` (its number or exact text), or `question` as free text; "
             "optional `candidate`, `reference`, `key_points` (separated by ;) and `media` (video or audio).")
    if client is None:
        st.error(QUEUE_UNAVAILABLE, icon=":material/cloud_off:")
        return
    if st.session_state.get(MESSAGE_KEY):
        st.success("\n".join(f"- {md(line)}" for line in st.session_state.pop(MESSAGE_KEY)))
    mode = st.radio("Recordings from", [UPLOAD, FOLDER], key="batch_mode", horizontal=True) \
        if is_admin(user) else UPLOAD
    owner = str(user["username"])
    mb, items = settings.media.max_upload_mb, settings.jobs.max_batch_items
    if mode == UPLOAD:
        manifest_file = st.file_uploader("Manifest (CSV)", type=["csv"], key="batch_manifest",
                                         max_upload_size=MAX_MANIFEST_BYTES // MB)
        uploads = st.file_uploader("Recordings named in it", type=[s.lstrip(".") for s in MEDIA_SUFFIXES],
                                   accept_multiple_files=True, key="batch_files", max_upload_size=mb) or []
        if manifest_file is None:
            return
        by_name = {f.name: f for f in uploads}
        manifest = parse_manifest(manifest_file.getvalue(), owner, uploads={n: f.size for n, f in by_name.items()},
                                  max_upload_mb=mb, max_batch_items=items)
        twice = sorted({f.name for f in uploads if sum(g.name == f.name for g in uploads) > 1})
        manifest.problems.extend(f"two uploaded recordings are named {n!r}: rename one" for n in twice)

        def opener(row: ManifestRow) -> Any:
            return contextlib.nullcontext(by_name[row.file])  # store_input seeks to its start
    else:
        found, opener = _server_manifest(owner, settings)
        if found is None:
            return
        manifest = found
    if manifest.problems:
        show_problems(manifest)
        return
    show_rows(manifest.rows)
    if st.button(f"Submit {len(manifest.rows)} recording(s)", type="primary", key="batch_submit"):
        try:
            st.session_state[MESSAGE_KEY] = _submit_rows(db, client, manifest, owner, settings, opener)
        except jobs.QueueFullError as exc:
            st.error(f"Nothing was submitted: {md(exc)} (this batch has {len(manifest.rows)})")
            return
        except PyMongoError as exc:
            st.error(f"Could not submit the batch: {error_text(exc)}")
            return
        st.rerun()


def _server_manifest(owner: str, settings: Settings) -> tuple[Manifest | None, Any]:
    """Admin: a manifest file, or a folder of recordings with one question, under <data_dir>/import."""
    root = import_root(settings)
    mb, items = settings.media.max_upload_mb, settings.jobs.max_batch_items
    typed = st.text_input(f"Manifest or folder, relative to {md(root)}", key="batch_path", max_chars=500)
    if not typed.strip():
        return None, None
    path = server_path(settings, typed)
    if path is None:
        st.error(f"Only files under {md(root)} can be imported; {md(typed)} is outside it.")
        return None, None
    if path.is_file():
        try:
            content = path.read_bytes()
        except OSError:
            st.error(f"{md(typed)} cannot be read.")
            return None, None
        manifest = parse_manifest(content, owner, folder=path.parent, max_upload_mb=mb, max_batch_items=items)
    elif path.is_dir():
        choice = _question_choice()
        if choice is None:
            return None, None
        manifest = scan_folder(path, owner, choice, max_upload_mb=mb, max_batch_items=items)
    else:
        st.error(f"There is no file or folder {md(typed)} under {md(root)}.")
        return None, None

    def opener(row: ManifestRow) -> Any:
        assert row.path is not None
        return row.path.open("rb")
    return manifest, opener


def _question_choice() -> QuestionChoice | None:
    sets = shipped_sets()
    set_id = st.selectbox("Question for every recording", [FREE_TEXT, *sets], key="batch_folder_set",
                          format_func=lambda s: s if s == FREE_TEXT else f"{sets[s].title} ({s})")
    if set_id == FREE_TEXT:
        question = st.text_area("Question", key="batch_folder_question", max_chars=2000)
        reference = st.text_area("Reference answer (optional)", key="batch_folder_reference", max_chars=10000)
        return QuestionChoice(question=question, reference=reference) if question.strip() else None
    qset = sets[set_id]
    number = st.number_input("Question number", 1, len(qset.questions), 1, key="batch_folder_number")
    st.caption(md(qset.questions[int(number) - 1].question))
    return QuestionChoice(question_set=set_id, number=int(number))


# --------------------------------------------------------------------------- the queue


def job_rows(listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for j in listed:
        spec, result = j.get("spec") or {}, j.get("result") or {}
        done = j.get("status") == jobs.DONE
        out.append({
            "file": spec.get("filename") or "", "candidate": spec.get("candidate"), "status": j.get("status"),
            "stage": stage_text(j), "progress": float(j.get("progress") or 0.0),
            "grade": result.get("grade") if done else None, "band": result.get("band") if done else None,
            "report": f"report?session={result.get('session_id') or j.get('session_id')}" if done else None,
            "tries": f"{j.get('attempts', 0)}/{j.get('max_attempts', 1)}", "worker": j.get("worker") or "",
            "error": j.get("error") or "", "question": spec.get("question"),
        })
    return out


def _job_label(j: dict[str, Any]) -> str:
    spec = j.get("spec") or {}
    return " · ".join(str(p) for p in (spec.get("filename") or j["_id"][:8], spec.get("candidate"), j.get("status")))


def _act(db: Any, user: dict[str, Any], client: JobClient | None, action: str) -> None:
    """Cancel or retry the picked job (a button's callback: runs before the queue is drawn again)."""
    job_id = str(st.session_state.get("batch_job") or "")
    job = jobs.get(db, job_id) if job_id else None
    owner = visible_owner(user)
    if job is None or (owner is not None and job.get("owner") != owner):
        st.session_state["batch_action"] = ("error", "That job is not there any more, or it is not yours.")
        return
    name = (job.get("spec") or {}).get("filename") or job_id
    if action == "cancel":
        status = jobs.cancel(db, job_id)
        text = "cancelled" if status == jobs.CANCELLED else "stops at its next heartbeat" \
            if status == jobs.RUNNING else f"was already {status}"
        st.session_state["batch_action"] = ("info", f"{name}: {text}.")
        return
    if not jobs.retry(db, job_id):
        st.session_state["batch_action"] = ("error", f"{name} cannot be retried now (it is {job.get('status')}).")
        return
    sent = client is not None and client.send(db, job_id)
    st.session_state["batch_action"] = ("info", f"{name}: queued again." if sent else
                                        f"{name}: queued again; the queue is unreachable now, so a worker sends it "
                                        "once it is back.")


def queue_section(db: Any, user: dict[str, Any], client: JobClient | None, settings: Settings) -> None:
    owner = visible_owner(user)
    query: dict[str, Any] = {"status": {"$in": list(jobs.ACTIVE)}}
    if owner is not None:
        query["owner"] = owner
    active = db[jobs.COLLECTION].count_documents(query, limit=1) > 0

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def body() -> None:
        try:
            _queue(db, user, client, settings, owner, active)
        except PyMongoError as exc:
            st.error(f"Could not read the jobs: {error_text(exc)}")

    body()


def _queue(db: Any, user: dict[str, Any], client: JobClient | None, settings: Settings, owner: str | None,
           was_active: bool) -> None:
    counts = jobs.counts(db, owner=owner)
    if was_active and not any(counts[s] for s in jobs.ACTIVE):
        st.rerun()  # everything ended: redraw the page once, without the timer
    st.caption("Your jobs." if owner is not None else "Every user's jobs.")
    for col, state in zip(st.columns(len(jobs.STATES)), jobs.STATES, strict=True):
        col.metric(state.capitalize(), counts[state])
    if client is None:
        st.warning(QUEUE_UNAVAILABLE, icon=":material/cloud_off:")
    _workers(db, client, settings, owner)
    listed = jobs.list_jobs(db, owner=owner)
    if not listed:
        st.info("No jobs yet. Submit a batch above, or upload an answer on the Interview page.")
        return
    st.dataframe(job_rows(listed), hide_index=True, width="stretch", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        "grade": st.column_config.ProgressColumn("grade", min_value=0.0, max_value=1.0, format="percent"),
        "report": st.column_config.LinkColumn("report", display_text="open report"),
    })
    if len(listed) == 200:
        st.caption("The latest 200 jobs are shown.")
    if note := st.session_state.pop("batch_action", None):
        (st.error if note[0] == "error" else st.info)(md(note[1]))
    by_id = {str(j["_id"]): j for j in listed}
    picked = st.selectbox("Job", list(by_id), format_func=lambda i: _job_label(by_id[i]), key="batch_job",
                          index=None, placeholder="pick a job to cancel or retry")
    status = by_id[picked]["status"] if picked in by_id else None
    cols = st.columns(2)
    cols[0].button("Cancel", key="batch_cancel", disabled=status not in jobs.ACTIVE, on_click=_act,
                   args=(db, user, client, "cancel"), icon=":material/cancel:")
    cols[1].button("Retry", key="batch_retry", disabled=status not in (jobs.FAILED, jobs.CANCELLED), on_click=_act,
                   args=(db, user, client, "retry"), icon=":material/replay:")


def _workers(db: Any, client: JobClient | None, settings: Settings, owner: str | None) -> None:
    with st.expander("Workers", icon=":material/memory:"):
        seen = jobs.list_workers(db, fresh_seconds=settings.jobs.stale_seconds)
        tally = jobs.per_worker(db, owner=owner)
        names = sorted({*(str(w["_id"]) for w in seen), *tally})
        if not names:
            st.caption("No worker has reported yet (python -m sidecar worker, or this app's own).")
        else:
            info = {str(w["_id"]): w for w in seen}
            st.dataframe([{"worker": n, "state": info.get(n, {}).get("state", "?"),
                           "alive": bool(info.get(n, {}).get("alive")), "job": info.get(n, {}).get("job_id") or "",
                           **{s: tally.get(n, {}).get(s, 0) for s in (jobs.RUNNING, jobs.DONE, jobs.FAILED)}}
                          for n in names], hide_index=True, width="stretch")
        mine = client.workers() if client is not None else []
        st.caption(f"This app started {len(mine)} worker process(es)" + (": " + ", ".join(
            f"{md(w['name'])} ({'running' if w.get('alive') else 'stopped'}, {w.get('restarts', 0)} restarts)"
            for w in mine) if mine else "."))


# --------------------------------------------------------------------------- re-analysis


def reanalyse_section(db: Any, user: dict[str, Any], client: JobClient | None, settings: Settings) -> None:
    from sidecar.reanalyse import models_fingerprint, reanalysable

    st.write("Run speech recognition, speech metrics, grading and STAR again with the current models and "
             "settings on the answers of a session whose audio is kept. Expression and gaze stay as stored.")
    sid = st.text_input("Session id", key="batch_reanalyse_session", max_chars=64).strip()
    if not sid:
        return
    session = find_visible_session(db, sid, session_access_filter(user, db))
    if session is None:
        st.warning(f"There is no session {md(sid)} that you can see.")
        return
    answers = sorted(reanalysable(db, session_id=sid), key=lambda a: int(a.get("index") or 0))
    if not answers:
        st.info("No answer of this session has its audio kept, so none can be re-analysed.")
        return
    st.dataframe([{"answer": int(a.get("index") or 0) + 1, "question": a.get("question")} for a in answers],
                 hide_index=True, width="stretch")
    if client is None:
        st.error(QUEUE_UNAVAILABLE, icon=":material/cloud_off:")
        return
    if not st.button(f"Re-analyse {len(answers)} answer(s)", key="batch_reanalyse", type="primary"):
        return
    owner = str(user["username"])
    try:
        jobs.check_queue_room(db, owner, settings.jobs.max_queued_per_user, adding=len(answers))
    except jobs.QueueFullError as exc:
        st.error(md(exc))
        return
    fingerprint = models_fingerprint(settings)
    queued = 0
    for a in answers:
        index = int(a.get("index") or 0)
        spec = jobs.JobSpec(owner=owner, question=str(a.get("question") or ""), reference=str(a.get("reference") or ""),
                            key_points=tuple(str(k) for k in a.get("key_points") or ()), kind="reanalyse",
                            candidate=str(session.get("candidate") or "batch"), source="reanalyse", session_id=sid,
                            index=index, answer_id=str(a["_id"]), filename=f"answer {index + 1} (re-analysis)")
        submitted = jobs.submit(db, spec, None, settings.jobs.max_attempts, content_sha256=fingerprint)
        if submitted.needs_sending:
            client.send(db, str(submitted.job["_id"]))
        queued += submitted.created
    st.success(f"{queued} re-analysis job(s) queued; {len(answers) - queued} already queued or done with these "
               "models. Follow them in the queue.")
