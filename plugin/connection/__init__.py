"""The plugin's link to the backend: the session (channel, status, reconnects), the embedded
local backend and its restart policy.
"""
