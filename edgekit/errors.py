"""The one exception type for user-facing errors.

A message names the file, field or line and says what to do; the CLI prints it as one line
and exits with `exit_code` (2 for bad input, by convention).
"""


class EdgekitError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
