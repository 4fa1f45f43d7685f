"""Per-face tracking across video frames, so labels do not flicker.

Each frame's faces are matched to the previous frame's tracks by box IoU (greedy, highest IoU
first); a matched face's age and P(female) become an exponential moving average of the track's
history. Unmatched faces start new tracks. A track the detector misses stays on screen for
`hold` frames (Haar drops single frames of a steady face) and is forgotten after `max_missed`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agegender.inference.predictions import Box, FacePrediction


def box_iou(a: Box, b: Box) -> float:
    inter_w = min(a.x2, b.x2) - max(a.x1, b.x1)
    inter_h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a.width * a.height + b.width * b.height - inter)


@dataclass(frozen=True)
class Track:
    track_id: int
    face: FacePrediction  # smoothed values, latest box
    missed: int = 0  # consecutive frames without a match


class FaceTracker:
    """Stateful smoother for one video stream; create one per stream."""

    def __init__(self, *, iou_threshold: float = 0.3, smoothing: float = 0.3, max_missed: int = 5, hold: int = 2):
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.iou_threshold = iou_threshold
        self.smoothing = smoothing  # weight of the newest frame; 1 disables smoothing
        self.max_missed = max_missed  # frames a lost track is remembered, to re-attach its history
        self.hold = min(hold, max_missed)  # frames a lost track is still reported (detectors miss single frames)
        self._tracks: list[Track] = []
        self._next_id = 0

    def update(self, faces: tuple[FacePrediction, ...] | list[FacePrediction]) -> list[Track]:
        """Smoothed tracks for this frame's faces, in the order of `faces`, followed by tracks the
        detector lost at most `hold` frames ago (with their last box; `missed` says how long ago).
        """
        pairs = sorted(
            ((box_iou(t.face.box, f.box), ti, fi) for ti, t in enumerate(self._tracks) for fi, f in enumerate(faces)
             if t.face.box is not None and f.box is not None),
            reverse=True,
        )  # fmt: skip
        track_for_face: dict[int, int] = {}
        used_tracks: set[int] = set()
        for iou, ti, fi in pairs:
            if iou < self.iou_threshold:
                break
            if ti not in used_tracks and fi not in track_for_face:
                track_for_face[fi] = ti
                used_tracks.add(ti)
        current = [self._follow(faces[fi], track_for_face.get(fi)) for fi in range(len(faces))]
        unmatched = [
            replace(t, missed=t.missed + 1)
            for ti, t in enumerate(self._tracks)
            if ti not in used_tracks and t.missed + 1 <= self.max_missed
        ]
        self._tracks = current + unmatched
        return current + [t for t in unmatched if t.missed <= self.hold]

    def _follow(self, face: FacePrediction, track_index: int | None) -> Track:
        if track_index is None:
            self._next_id += 1
            return Track(self._next_id, face)
        previous = self._tracks[track_index]
        a = self.smoothing
        smoothed = replace(
            face,
            age=a * face.age + (1 - a) * previous.face.age,
            p_female=a * face.p_female + (1 - a) * previous.face.p_female,
        )
        return Track(previous.track_id, smoothed)
