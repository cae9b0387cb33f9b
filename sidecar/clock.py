"""One clock for every sample: epoch milliseconds on the capture clock.

Each media track is anchored once, at its first frame: its media time then maps to
the wall clock of that moment, and later frames advance by media time
(``frame.pts * frame.time_base``), never by arrival time, so network jitter moves
nothing. A jump in media time (a sender restart) re-anchors the track.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction


@dataclass
class TrackClock:
    anchor_epoch_ms: float | None = None
    anchor_media_s: float = 0.0
    last_media_s: float | None = None
    max_gap_s: float = 10.0  # media time jumping this far means the sender restarted
    reanchors: int = 0

    def stamp(self, pts: int | None, time_base: Fraction | None, now_s: float | None = None) -> int:
        """Epoch ms of a frame from its media time; anchors on the first call."""
        media_s = float(pts * time_base) if pts is not None and time_base is not None else None
        if media_s is None:
            # No media time: fall back to arrival time (and say so by re-anchoring).
            self.reanchors += 1
            return int((now_s if now_s is not None else time.time()) * 1000)
        if self.anchor_epoch_ms is None or (
            self.last_media_s is not None
            and (media_s < self.last_media_s or media_s - self.last_media_s > self.max_gap_s)
        ):
            if self.anchor_epoch_ms is not None:
                self.reanchors += 1
            self.anchor_epoch_ms = (now_s if now_s is not None else time.time()) * 1000.0
            self.anchor_media_s = media_s
        self.last_media_s = media_s
        return int(round(self.anchor_epoch_ms + (media_s - self.anchor_media_s) * 1000.0))
