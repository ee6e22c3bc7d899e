"""The command line's exit codes, shared by every command (backfill, demo, ui, ...).

0: every session ended settled (done, skipped, no video); 1: the work ran but something failed or was
left undone, and is recorded; 2: usage or configuration error, reported as one line naming the setting.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
