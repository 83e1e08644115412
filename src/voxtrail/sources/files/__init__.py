"""The file source: log files (plain, rotated, gzip-compressed) read exactly once.

- :mod:`.reader` cuts a file into chunks of complete lines;
- :mod:`.identity` recognises which stream a file is, across rotation;
- :mod:`.importer` drives parse -> transform -> store with checkpoints;
- :mod:`.follow` repeats imports as files change.
"""
