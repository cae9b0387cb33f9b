# MockAI app image: the same set-up script as `make run`, models baked in (they ship
# inside the pinned pip packages), non-root, healthcheck on Streamlit's health endpoint.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    # torch's CPU wheel (the build machines here read it from local disk instead).
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    VENV=/app/.venv \
    MOCKAI_DATA_DIR=/data

# redis-server: the embedded background-job broker (setup.sh would apt-install it, but runs as mockai).
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 mockai \
    && mkdir -p /app /data && chown mockai:mockai /app /data
WORKDIR /app

# Dependencies first so code edits do not reinstall them.
COPY --chown=mockai:mockai requirements.txt requirements-nodeps.txt requirements-test.txt constraints.txt ./
COPY --chown=mockai:mockai scripts/ ./scripts/
USER mockai
RUN bash scripts/setup.sh run

COPY --chown=mockai:mockai . .
EXPOSE 8501
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]
CMD ["/app/.venv/bin/python", "-m", "streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0"]
