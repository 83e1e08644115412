"""Local files voxtrail trusts: small settings files read safely, and paths other users cannot touch.

Two jobs that every reader of a local file shares:

- :func:`read_small_file` reads a config file, key file or checkpoint: regular files only (a
  FIFO would block the command forever, a device such as ``/dev/zero`` never ends), bounded in
  size, every failure one :class:`LocalFileError` sentence instead of an ``OSError`` traceback.
- :func:`check_owner` and :func:`check_parents` refuse what another local user could have written
  or could swap, as ssh's ``StrictModes`` does for ``~/.ssh``: the file or directory must belong
  to the user running voxtrail (or root), and so must every directory above it, none of them
  writable by group or others. A directory with the sticky bit (``/tmp``) is allowed above: others
  may create entries there but cannot rename or delete ours.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Larger than any config, key or checkpoint file voxtrail writes by far; a bigger file is a mistake.
MAX_SMALL_FILE = 1 << 20


class LocalFileError(Exception):
    """A local file cannot be used; the message says which, why and (where it can) what to do."""


class MissingFile(LocalFileError):
    """There is no file at the path."""


class UntrustedPath(LocalFileError):
    """A file or directory another local user could have written, or could replace."""


def check_regular_file(path: str | os.PathLike, what: str) -> os.stat_result:
    """The ``stat`` of ``path`` if it is a regular file; LocalFileError saying what it is otherwise."""
    shown = os.fspath(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFile(f"{what} {shown} does not exist") from None
    except OSError as exc:  # a name too long, a loop of symbolic links, no permission on a directory
        raise LocalFileError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character: no file has such a name
        raise LocalFileError(f"{what} {shown!r} is not a usable path (it contains a NUL character)") from None
    if not stat.S_ISREG(st.st_mode):
        raise LocalFileError(_not_regular(what, shown, st.st_mode))
    return st


def read_small_file(path: str | os.PathLike, what: str, limit: int = MAX_SMALL_FILE) -> tuple[bytes, os.stat_result]:
    """The content of the regular file ``path`` and its ``fstat``; ``what`` names it in errors."""
    shown = os.fspath(path)
    check_regular_file(path, what)  # never open a FIFO or a device at all
    try:
        # O_NONBLOCK: should the path become a FIFO between the check and the open, the open
        # returns at once and fstat below refuses it, instead of waiting for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MissingFile(f"{what} {shown} does not exist") from None
    except PermissionError:
        raise LocalFileError(f"cannot read {what} {shown}: permission denied") from None
    except OSError as exc:
        raise LocalFileError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LocalFileError(_not_regular(what, shown, st.st_mode))
        if st.st_size > limit:
            raise LocalFileError(f"{what} {shown} is {st.st_size:,} bytes, more than a {what} can be "
                                 f"({limit:,}): is it the right file?")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise LocalFileError(f"{what} {shown} is more than {limit:,} bytes: is it the right file?")
    except OSError as exc:
        raise LocalFileError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


def exists(path: str | os.PathLike) -> bool:
    """False only when nothing is there: a path that cannot even be looked at (a name too long,
    a NUL character) counts as there, so that reading it reports why."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError):
        return True
    return True


def _not_regular(what: str, shown: str, mode: int) -> str:
    if stat.S_ISDIR(mode):
        return f"{what} {shown} is a directory, not a file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{what} {shown} is {kind}, not a regular file"


# --- who may have written it --------------------------------------------------------------------

def trusted_uid(uid: int) -> bool:
    return uid == os.geteuid() or uid == 0


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number when it has none."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def who(uid: int) -> str:
    return f"{user_name(uid)} (uid {uid})"


def check_owner(path: str | os.PathLike, st: os.stat_result, what: str, fix: str) -> None:
    """``st`` (of ``path``) must belong to this user or root and not be writable by group or others."""
    if os.name != "posix":
        return
    if not trusted_uid(st.st_uid):
        raise UntrustedPath(f"{what} {os.fspath(path)} belongs to {who(st.st_uid)}, not to "
                            f"{who(os.geteuid())} who runs voxtrail: {fix}")
    if st.st_mode & 0o022:
        raise UntrustedPath(f"{what} {os.fspath(path)} is writable by group or others "
                            f"(mode {stat.S_IMODE(st.st_mode):04o}): {fix}")


def check_parents(path: str | os.PathLike, what: str) -> None:
    """Every directory above ``path``, as given and after resolving symbolic links, must belong to
    this user or root and not be writable by group or others unless sticky; otherwise another
    user could rename ``path`` away and put their own in its place."""
    if os.name != "posix":
        return
    given = Path(os.path.abspath(path))
    directories: dict[str, None] = {}
    for start in (Path(os.path.realpath(given.parent)), Path(os.path.realpath(given)).parent):
        for directory in (start, *start.parents):
            directories.setdefault(str(directory))
    for directory in directories:
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            continue  # not made yet: whoever creates it (keys init, the Recorder) makes it private
        except OSError as exc:
            raise UntrustedPath(f"cannot check directory {directory} above {what} {given}: "
                                f"{exc.strerror or exc}") from None
        if not trusted_uid(st.st_uid):
            raise UntrustedPath(f"directory {directory} above {what} {given} belongs to {who(st.st_uid)}: "
                                f"that user could replace the {what}; keep it in a directory only you and root "
                                f"control")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UntrustedPath(f"directory {directory} above {what} {given} is writable by group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}): another user could replace the {what}; "
                                f"run 'chmod go-w {directory}' or keep it elsewhere")
