"""Small committed media files for the tests and the demo, and the script that regenerates them.

See README.md here for what each file is; ``manifest.json`` states the facts tests may rely on.
"""

from pathlib import Path

MEDIA_DIR = Path(__file__).resolve().parent
