"""Frames in order: image files, folders, video files and webcams as frame sources, chunked for batching
(frames), and faces tracked across a video's frames so labels do not flicker (tracking)."""
