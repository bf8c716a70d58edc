"""One shape for objects that hold native handles or file descriptors: close() on leaving `with`, and when the
object is collected (a handle is never left to the process's end)."""

from __future__ import annotations


class Closing:
    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules a close() needs may be gone
            pass
