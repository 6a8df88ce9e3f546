"""The plugin's link to the backend: the session (channels, newest-only answers, call logging),
probing a broker, the embedded local backend and its restart policy.
"""
