"""The few exception types recassist raises; each message says what, where and how to fix it."""


class RecassistError(Exception):
    """Base class: catch this to handle any recassist failure."""


class ConfigError(RecassistError):
    """A setting is missing or wrong (names the setting and the source it came from)."""


class IngestError(RecassistError):
    """A catalog or event file cannot be read at all (bad rows are reported, not raised)."""


class PromptError(RecassistError):
    """A prompt template is missing, malformed, or rendered with wrong variables."""


class LLMError(RecassistError):
    """The language model backend failed, timed out or is unavailable."""


class NotFoundError(RecassistError):
    """A user, item or session does not exist."""


class StoreError(RecassistError):
    """The event/conversation database or the vector store is unreachable or inconsistent."""


class InputError(RecassistError, ValueError):
    """A request is invalid (bad user id, empty message, unknown field): the caller must fix it."""
