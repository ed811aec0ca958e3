"""Remote engines: llama-server, OpenAI-compatible servers and Ollama behind the same
`Engine` protocol as the in-process model, so the completion pipeline never asks which.

`engine` holds the protocol's implementation, `wire` what each kind of server is sent and
sends back, `stream` the reading of one streamed reply, `connection` the HTTP client,
API key and error messages.
"""

from flashls.engine.remote.engine import RemoteEngine

__all__ = ["RemoteEngine"]
