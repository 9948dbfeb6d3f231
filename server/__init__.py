"""The doors: the HTTP server (API, OpenAI facade, UI mount, background jobs) and the command line.

The top layer: it imports the agent, the UI and retrieval; nothing imports it.
"""
