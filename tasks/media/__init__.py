"""What runs on a session's video: ffmpeg probing and extraction, Whisper, the outputs' check."""
