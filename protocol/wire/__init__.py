"""The wire: MDP/0.2 frames, the payload codec, validation, CurveZMQ, image keys and the MDP client.

Everything the broker and the workers need to talk, and nothing else. Imports
only :mod:`protocol.runtime` besides itself (see ``protocol/README.md``).
"""
